// What the queue's `stats` operation means: reputation figures from its hourly counters, per
// sending domain and per destination domain, over the last hour or day, with the rates the large
// mailbox providers judge bulk senders by, and warnings when a sending domain passes them. Pure
// arithmetic; `relay stats`, the admin API and the reputation plugin's monitor all read it.
import type { RelayConfig } from '../config/schema.js'
import type { QueueOperations, StatsRow } from '../hooks/operator.js'

export type Period = 'hour' | 'day'
export const PERIODS: Readonly<Record<Period, number>> = Object.freeze({ hour: 3_600_000, day: 86_400_000 })
const HOUR = 3_600_000

export interface Thresholds {
  bounceRateWarning: number
  complaintRateWarning: number
  minVolume: number
}

/** The reputation plugin's defaults: 5% bounces, 0.3% complaints, judged from 20 messages. */
export const DEFAULT_THRESHOLDS: Readonly<Thresholds> = Object.freeze({ bounceRateWarning: 0.05, complaintRateWarning: 0.003, minVolume: 20 })

export interface Counts {
  delivered: number
  deferred: number
  bounced: number
  /** Bounces by failure category (bad-mailbox, policy, …). */
  bouncedBy: Record<string, number>
  complaints: number
  /** bounced / (delivered + bounced); null when nothing was sent. */
  bounceRate: number | null
  /** complaints / delivered; null when nothing was delivered. */
  complaintRate: number | null
}

export interface Warning {
  senderDomain: string
  kind: 'bounce-rate' | 'complaint-rate'
  rate: number
  threshold: number
  /** Messages (recipients) sent in the period: delivered + bounced. */
  volume: number
}

export interface DomainFigures extends Counts {
  /** '' for complaints that could not be matched to a sender. */
  domain: string
  warnings: Warning[]
}

export interface Figures {
  period: Period
  /** Start of the window: the counters are hourly, so the window is rounded out to whole hours. */
  since: number
  until: number
  totals: Counts
  /** Most volume first. */
  senders: DomainFigures[]
  destinations: DomainFigures[]
  warnings: Warning[]
  thresholds: Thresholds
}

/** One hour of the chart series. */
export interface HourPoint {
  hour: number
  delivered: number
  deferred: number
  bounced: number
  complaints: number
}

/** The earliest counter hour a window of `period` ending at `now` touches. */
export function windowStart(period: Period, now: number): number {
  return Math.floor((now - PERIODS[period]) / HOUR) * HOUR
}

export function computeFigures(rows: StatsRow[], o: { period: Period; now: number; thresholds: Thresholds }): Figures {
  const since = windowStart(o.period, o.now)
  const inWindow = rows.filter((r) => r.hour >= since && r.hour <= o.now)
  const senders = new Map<string, Counts>()
  const destinations = new Map<string, Counts>()
  const totals = emptyCounts()
  for (const r of inWindow) {
    for (const c of [at(senders, r.senderDomain), at(destinations, r.destDomain), totals]) add(c, r)
  }
  // Warnings are about sending domains only ('' is complaints that matched no sender).
  const list = (m: Map<string, Counts>, judged: boolean): DomainFigures[] =>
    [...m]
      .map(([domain, counts]) => {
        const c = finish(counts)
        return { domain, ...c, warnings: judged && domain ? warningsFor(domain, c, o.thresholds) : [] }
      })
      .sort(byVolume)
  const senderFigures = list(senders, true)
  return {
    period: o.period,
    since,
    until: o.now,
    totals: finish(totals),
    senders: senderFigures,
    destinations: list(destinations, false),
    warnings: senderFigures.flatMap((s) => s.warnings),
    thresholds: o.thresholds,
  }
}

/** The sending domain's warnings: judged only with at least `minVolume` messages sent. */
export function warningsFor(senderDomain: string, c: Counts, t: Thresholds): Warning[] {
  const volume = c.delivered + c.bounced
  if (volume < t.minVolume) return []
  const out: Warning[] = []
  if (c.bounceRate !== null && c.bounceRate > t.bounceRateWarning) out.push({ senderDomain, kind: 'bounce-rate', rate: c.bounceRate, threshold: t.bounceRateWarning, volume })
  if (c.complaintRate !== null && c.complaintRate > t.complaintRateWarning) {
    out.push({ senderDomain, kind: 'complaint-rate', rate: c.complaintRate, threshold: t.complaintRateWarning, volume })
  }
  return out
}

/** Per-hour totals for the last `hours` hours (oldest first, empty hours included), for charts. */
export function hourlySeries(rows: StatsRow[], now: number, hours = 24): HourPoint[] {
  const last = Math.floor(now / HOUR) * HOUR
  const first = last - (hours - 1) * HOUR
  const points: HourPoint[] = []
  for (let h = first; h <= last; h += HOUR) points.push({ hour: h, delivered: 0, deferred: 0, bounced: 0, complaints: 0 })
  for (const r of rows) {
    if (r.hour < first || r.hour > last) continue
    const p = points[Math.floor((r.hour - first) / HOUR)]!
    if (r.outcome === 'complaint') p.complaints += r.count
    else p[r.outcome] += r.count
  }
  return points
}

function emptyCounts(): Counts {
  return { delivered: 0, deferred: 0, bounced: 0, bouncedBy: {}, complaints: 0, bounceRate: null, complaintRate: null }
}

function at(m: Map<string, Counts>, key: string): Counts {
  let c = m.get(key)
  if (!c) m.set(key, (c = emptyCounts()))
  return c
}

function add(c: Counts, r: StatsRow): void {
  switch (r.outcome) {
    case 'delivered':
      c.delivered += r.count
      break
    case 'deferred':
      c.deferred += r.count
      break
    case 'bounced':
      c.bounced += r.count
      c.bouncedBy[r.category || 'other'] = (c.bouncedBy[r.category || 'other'] ?? 0) + r.count
      break
    case 'complaint':
      c.complaints += r.count
      break
  }
}

function finish(c: Counts): Counts {
  const sent = c.delivered + c.bounced
  return { ...c, bounceRate: sent ? c.bounced / sent : null, complaintRate: c.delivered ? c.complaints / c.delivered : null }
}

function byVolume(a: DomainFigures, b: DomainFigures): number {
  return b.delivered + b.bounced + b.deferred + b.complaints - (a.delivered + a.bounced + a.deferred + a.complaints) || a.domain.localeCompare(b.domain)
}

export interface StatsResponse {
  period: Period
  figures: Figures
  /** Delivered, deferred, bounced and complaints per hour over the last 24 hours, oldest first. */
  series: HourPoint[]
}

/** Figures and series from one read of the counters (the day's window holds the 24 hours of the series). */
export async function statsResponse(queue: Pick<QueueOperations, 'stats'>, thresholds: Thresholds, period: Period, now = Date.now()): Promise<StatsResponse> {
  return statsFromRows(await queue.stats(windowStart('day', now)), thresholds, period, now)
}

export function statsFromRows(rows: StatsRow[], thresholds: Thresholds, period: Period, now = Date.now()): StatsResponse {
  return { period, figures: computeFigures(rows, { period, now, thresholds }), series: hourlySeries(rows, now, 24) }
}

/** The warning thresholds of a config (`stats`). */
export function configuredThresholds(config: Pick<RelayConfig, 'stats'>): Thresholds {
  const { bounceRateWarning, complaintRateWarning, minVolume } = config.stats
  return { bounceRateWarning, complaintRateWarning, minVolume }
}
