// callAhead.maxConcurrent for the whole relay. Under config `workers` every SMTP worker probes, so
// the places are counted by the plugin's instance in the primary (ctx.processes); in one process
// the same code counts locally. A place is held until its probe ends, at most the probe's whole
// `timeout` and 5 s more: the places of a worker that died (or of a reloaded generation) come back.
import type { SetupContext } from '../../core/index.js'

export interface ProbePlaces {
  /** A place for one probe, or null: `max` probes are running in the relay. */
  take(): Promise<string | null>
  give(place: string): void
}

export function probePlaces(processes: SetupContext<unknown>['processes'], max: number, timeoutMs: number): ProbePlaces {
  const held = new Map<string, number>() // place → held until
  const generation = Math.random().toString(36).slice(2, 8)
  let next = 0
  processes.handle('probe-place', (op: 'take' | 'give', place?: string) => {
    const now = Date.now()
    if (op === 'give') return void held.delete(place!)
    for (const [p, until] of held) if (until <= now) held.delete(p)
    if (held.size >= max) return null
    const taken = `${generation}:${++next}`
    held.set(taken, now + timeoutMs + 5000)
    return taken
  })
  return {
    // The primary going away (a restart): no probe, the client tries again (450).
    take: () => processes.call<string | null>('probe-place', 'take').catch(() => null),
    give: (place) => void processes.call('probe-place', 'give', place).catch(() => undefined),
  }
}
