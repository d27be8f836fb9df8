// callAhead.maxConcurrent for the whole relay. Under config `workers` every SMTP worker probes, so
// the places are counted by the plugin's instance in the primary (ctx.processes); in one process
// the same code counts locally. A place is held until its probe ends, at most the probe's whole
// `timeout` and 5 s more: the places of a worker that died (or of a reloaded generation) come back.
import type { SetupContext } from '../../core/index.js'

export interface ProbePlaces {
  /**
   * A place for one probe of `client`'s; 'relay': `max` probes are running in the relay; 'client':
   * `perClient` of them are this client's (one client cannot take every place while a next hop is slow).
   */
  take(client: string): Promise<string | 'relay' | 'client'>
  give(place: string): void
}

export function probePlaces(processes: SetupContext<unknown>['processes'], max: number, perClient: number, timeoutMs: number): ProbePlaces {
  const held = new Map<string, { until: number; client: string }>() // place → held until, by whom
  const generation = Math.random().toString(36).slice(2, 8)
  let next = 0
  processes.handle('probe-place', (op: 'take' | 'give', arg: string) => {
    const now = Date.now()
    if (op === 'give') return void held.delete(arg)
    let mine = 0
    for (const [p, h] of held) {
      if (h.until <= now) held.delete(p)
      else if (h.client === arg) mine++
    }
    if (held.size >= max) return 'relay'
    if (mine >= perClient) return 'client'
    const taken = `${generation}:${++next}`
    held.set(taken, { until: now + timeoutMs + 5000, client: arg })
    return taken
  })
  return {
    // The primary going away (a restart): no probe, the client tries again (450).
    take: (client) => processes.call<string>('probe-place', 'take', client).catch(() => 'relay' as const),
    give: (place) => void processes.call('probe-place', 'give', place).catch(() => undefined),
  }
}
