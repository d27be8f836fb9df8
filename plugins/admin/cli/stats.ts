// `relay stats [--period hour|day] [--json]`: reputation figures per sending and destination domain,
// through the running relay's admin API (GET /api/stats), else read from the queue itself.
// Exit codes: 0 ok, 1 failed, 2 bad config or option.
import { statsFromRows, statsResponse, type CommandEnv, type DomainFigures, type Figures, type Period, type RelayConfig, type StatsResponse } from '../../../core/index.js'
import { AdminUnreachable, adminCall, findAdmin } from './client.js'
import { fail, json, out, table, time } from './output.js'

export async function stats(env: CommandEnv, opts: { config?: string; period?: string; json?: boolean }): Promise<void> {
  const period = opts.period ?? 'day'
  if (period !== 'hour' && period !== 'day') {
    process.stderr.write(`relay: --period: expected 'hour' or 'day' (got '${period}')\n`)
    process.exitCode = 2
    return
  }
  const config = (await env.loadConfig(opts.config)) as RelayConfig
  // The warning thresholds are config `stats` (what the running relay judges by, too).
  const thresholds = config.stats
  let response: StatsResponse | undefined
  const target = findAdmin(config.dataDir, env.runningRelay)
  if (target) {
    try {
      response = await adminCall<StatsResponse>(target, 'GET', `/api/stats?period=${period}`)
    } catch (err) {
      if (!(err instanceof AdminUnreachable)) return fail(err)
      process.stderr.write(`relay: ${err.message}; reading the queue instead\n`)
    }
  }
  if (!response) {
    let opened: Awaited<ReturnType<CommandEnv['openQueue']>> | undefined
    try {
      opened = await env.openQueue(opts.config, { create: false })
    } catch (err) {
      if ((err as { kind?: string }).kind !== 'not-found') throw err
      // Nothing sent from here yet (and no queue is created by looking).
      response = statsFromRows([], thresholds, period)
    }
    if (opened) {
      try {
        response = await statsResponse(opened.queue, thresholds, period)
      } catch (err) {
        return fail(err)
      } finally {
        await opened.close()
      }
    }
  }
  if (opts.json) {
    json(response)
    return
  }
  out(render(response!.figures))
}

const pct = (r: number | null) => (r === null ? '-' : `${(Math.round(r * 1000) / 10).toFixed(1)}%`)
const since = (f: Figures) => time(f.since)

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
    s += table([head, ...body]).replace(/^(?=.)/gm, ' ') + '\n'
  }
  section('Sending domains', f.senders, true)
  section('Destination domains', f.destinations, false)
  if (!f.warnings.length) s += 'No warnings.\n'
  for (const w of f.warnings) {
    s += `! ${w.senderDomain}: ${w.kind === 'bounce-rate' ? 'bounce' : 'complaint'} rate ${pct(w.rate)} is above ${pct(w.threshold)} (${w.volume} messages)\n`
  }
  return s
}
