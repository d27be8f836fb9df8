// Reputation figures from hourly counters: windows, rates, per-domain sums, warnings, the chart series.
import { describe, expect, it } from 'vitest'
import { parseConfig } from '../../core/config/load.js'
import { DEFAULT_THRESHOLDS, computeFigures, configuredThresholds, hourlySeries, statsFromRows } from '../../core/queue/figures.js'
import type { StatsRow } from '../../core/queue/types.js'

const H = 3_600_000
const now = Date.UTC(2026, 10, 28, 12, 30)
const thisHour = Date.UTC(2026, 10, 28, 12)
const thresholds = { bounceRateWarning: 0.05, complaintRateWarning: 0.003, minVolume: 20 }
const row = (hour: number, senderDomain: string, destDomain: string, outcome: StatsRow['outcome'], count: number, category: StatsRow['category'] = ''): StatsRow => ({
  hour,
  senderDomain,
  destDomain,
  outcome,
  category,
  count,
})

describe('computeFigures', () => {
  const rows: StatsRow[] = [
    row(thisHour, 'a.test', 'gmail.example', 'delivered', 90),
    row(thisHour, 'a.test', 'gmail.example', 'bounced', 6, 'bad-mailbox'),
    row(thisHour, 'a.test', 'yahoo.example', 'bounced', 4, 'policy'),
    row(thisHour, 'a.test', 'yahoo.example', 'deferred', 7, 'throttled'),
    row(thisHour - H, 'b.test', 'gmail.example', 'delivered', 300),
    row(thisHour - H, 'b.test', 'gmail.example', 'complaint', 2),
    row(thisHour - 5 * H, 'c.test', 'gmail.example', 'bounced', 19, 'bad-mailbox'), // a high rate, below minVolume
    row(thisHour - 30 * H, 'a.test', 'gmail.example', 'delivered', 1000), // outside the day
    row(thisHour, '', 'gmail.example', 'complaint', 1), // not matched to a sender
  ]

  it('sums per sending and destination domain over the day, with rates and categories', () => {
    const f = computeFigures(rows, { period: 'day', now, thresholds })
    const a = f.senders.find((s) => s.domain === 'a.test')!
    expect(a).toMatchObject({ delivered: 90, deferred: 7, bounced: 10, bouncedBy: { 'bad-mailbox': 6, policy: 4 }, complaints: 0, bounceRate: 0.1, complaintRate: 0 })
    const b = f.senders.find((s) => s.domain === 'b.test')!
    expect(b.complaintRate).toBeCloseTo(2 / 300)
    expect(f.senders.find((s) => s.domain === '')!.complaints).toBe(1)
    const gmail = f.destinations.find((d) => d.domain === 'gmail.example')!
    expect(gmail).toMatchObject({ delivered: 390, bounced: 25, complaints: 3 })
    expect(f.totals).toMatchObject({ delivered: 390, deferred: 7, bounced: 29, complaints: 3 })
    expect(f.senders.map((s) => s.domain)).toEqual(['b.test', 'a.test', 'c.test', ''])
  })

  it('warns for a sending domain over a rate with enough volume, not below minVolume, not for destinations', () => {
    const f = computeFigures(rows, { period: 'day', now, thresholds })
    expect(f.warnings).toEqual([
      { senderDomain: 'b.test', kind: 'complaint-rate', rate: 2 / 300, threshold: 0.003, volume: 300 },
      { senderDomain: 'a.test', kind: 'bounce-rate', rate: 0.1, threshold: 0.05, volume: 100 },
    ])
    expect(f.senders.find((s) => s.domain === 'c.test')!.warnings).toEqual([])
    expect(f.destinations.every((d) => d.warnings.length === 0)).toBe(true)
    // At exactly the threshold there is no warning ("passes" means above).
    const edge = computeFigures([row(thisHour, 'e.test', 'x', 'delivered', 95), row(thisHour, 'e.test', 'x', 'bounced', 5)], { period: 'day', now, thresholds })
    expect(edge.warnings).toEqual([])
  })

  it('the hour window takes the current and the previous hour bucket only', () => {
    const f = computeFigures(rows, { period: 'hour', now, thresholds })
    expect(f.since).toBe(thisHour - H)
    expect(f.senders.map((s) => s.domain).sort()).toEqual(['', 'a.test', 'b.test'])
  })

  it('no rows: empty lists, null rates', () => {
    const f = computeFigures([], { period: 'day', now, thresholds })
    expect(f).toMatchObject({ senders: [], destinations: [], warnings: [], totals: { delivered: 0, bounceRate: null, complaintRate: null } })
  })
})

describe('hourlySeries', () => {
  it('24 points, oldest first, empty hours as zeros', () => {
    const s = hourlySeries(
      [row(thisHour, 'a', 'x', 'delivered', 3), row(thisHour, 'b', 'y', 'delivered', 2), row(thisHour - 2 * H, 'a', 'x', 'bounced', 1, 'policy'), row(thisHour - 24 * H, 'a', 'x', 'delivered', 50)],
      now,
    )
    expect(s).toHaveLength(24)
    expect(s[23]).toEqual({ hour: thisHour, delivered: 5, deferred: 0, bounced: 0, complaints: 0 })
    expect(s[21]).toEqual({ hour: thisHour - 2 * H, delivered: 0, deferred: 0, bounced: 1, complaints: 0 })
    expect(s[0]!.hour).toBe(thisHour - 23 * H)
    expect(s.reduce((n, p) => n + p.delivered, 0)).toBe(5)
  })
})

describe('statsFromRows', () => {
  it('figures and the 24-hour series from the same rows', () => {
    const rows = [row(thisHour, 'a.test', 'b.test', 'delivered', 3)]
    const r = statsFromRows(rows, DEFAULT_THRESHOLDS, 'hour', now)
    expect(r.period).toBe('hour')
    expect(r.figures.totals.delivered).toBe(3)
    expect(r.figures.thresholds).toEqual(DEFAULT_THRESHOLDS)
    expect(r.series).toHaveLength(24)
    expect(r.series[23]).toMatchObject({ hour: thisHour, delivered: 3 })
  })
})

describe('configuredThresholds', () => {
  it('reads config stats; its defaults are DEFAULT_THRESHOLDS', () => {
    expect(configuredThresholds(parseConfig({}, process.cwd()))).toEqual(DEFAULT_THRESHOLDS)
    expect(configuredThresholds(parseConfig({ stats: { minVolume: 5, bounceRateWarning: 0.1 } }, process.cwd()))).toEqual({
      bounceRateWarning: 0.1,
      complaintRateWarning: DEFAULT_THRESHOLDS.complaintRateWarning,
      minVolume: 5,
    })
  })
})
