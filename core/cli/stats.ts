// `relay stats [--period hour|day] [--json]`: reputation figures per sending and destination domain,
// through the running relay's admin API (GET /api/stats), else read from the queue itself.
// Exit codes: 0 ok, 1 failed, 2 bad config or option.
import fs from 'node:fs'
import path from 'node:path'
import { loadConfig } from '../config/load.js'
import { openQueue } from '../queue/open.js'
import { Spool } from '../queue/spool.js'
import { configuredThresholds, statsFromRows, statsResponse, type DomainFigures, type Figures, type Period, type StatsResponse } from '../queue/figures.js'
import { AdminFailed, AdminUnreachable, adminCall, findAdmin } from './admin-client.js'
import { table } from './queue.js'

export async function stats(opts: { config?: string; period?: string; json?: boolean }): Promise<void> {
  const period = opts.period ?? 'day'
  if (period !== 'hour' && period !== 'day') {
    process.stderr.write(`relay: --period: expected 'hour' or 'day' (got '${period}')\n`)
    process.exitCode = 2
    return
  }
  const config = await loadConfig(opts.config)
  let response: StatsResponse | undefined
  const target = findAdmin(config)
  if (target) {
    try {
      response = await adminCall<StatsResponse>(target, 'GET', `/api/stats?period=${period}`)
    } catch (err) {
      if (!(err instanceof AdminUnreachable)) return fail(err)
      process.stderr.write(`relay: ${err.message}; reading the queue instead\n`)
    }
  }
  if (!response && config.queue.driver === 'sqlite' && !fs.existsSync(path.join(config.dataDir, 'queue.sqlite'))) {
    // Nothing sent from here yet (and no queue is created by looking).
    response = statsFromRows([], configuredThresholds(config), period)
  }
  if (!response) {
    const queue = await openQueue(config, { spool: new Spool(config.dataDir) })
    try {
      response = await statsResponse(queue, configuredThresholds(config), period)
    } catch (err) {
      return fail(err)
    } finally {
      await queue.close()
    }
  }
  if (opts.json) {
    process.stdout.write(JSON.stringify(response, null, 2) + '\n')
    return
  }
  process.stdout.write(render(response.figures))
}

function fail(err: unknown): void {
  process.stderr.write(`relay: ${err instanceof AdminFailed ? err.message : ((err as Error).stack ?? String(err))}\n`)
  process.exitCode = 1
}

const pct = (r: number | null) => (r === null ? '-' : `${(Math.round(r * 1000) / 10).toFixed(1)}%`)
const since = (f: Figures) => new Date(f.since).toISOString().replace(/:00\.000Z$/, 'Z').replace('T', ' ')

/** Text tables: sending domains (warnings marked `!`), destination domains, the warnings spelled out. */
export function render(f: Figures): string {
  const label: Record<Period, string> = { hour: 'last hour', day: 'last day' }
  let s = `Reputation, ${label[f.period]} (since ${since(f)}; warn above bounce rate ${pct(f.thresholds.bounceRateWarning)}, complaint rate ${pct(f.thresholds.complaintRateWarning)}, from ${f.thresholds.minVolume} messages)\n\n`
  const section = (title: string, rows: DomainFigures[], marked: boolean) => {
    s += `${title}\n`
    if (!rows.length) {
      s += '  (nothing sent)\n\n'
      return
    }
    const head = ['  DOMAIN', 'DELIVERED', 'DEFERRED', 'BOUNCED', 'BOUNCE RATE', 'COMPLAINTS', 'COMPLAINT RATE', 'BOUNCES BY CATEGORY']
    const body = rows.map((r) => [
      `${marked && r.warnings.length ? '!' : ' '} ${r.domain || '(no sender domain)'}`,
      String(r.delivered),
      String(r.deferred),
      String(r.bounced),
      pct(r.bounceRate),
      String(r.complaints),
      pct(r.complaintRate),
      Object.entries(r.bouncedBy).map(([c, n]) => `${c} ${n}`).join(', ') || '-',
    ])
    s += table([head, ...body]).replace(/^/gm, ' ') + '\n'
  }
  section('Sending domains', f.senders, true)
  section('Destination domains', f.destinations, false)
  if (!f.warnings.length) s += 'No warnings.\n'
  for (const w of f.warnings) {
    s += `! ${w.senderDomain}: ${w.kind === 'bounce-rate' ? 'bounce' : 'complaint'} rate ${pct(w.rate)} is above ${pct(w.threshold)} (${w.volume} messages)\n`
  }
  return s
}
