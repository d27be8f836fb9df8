// Event-loop delay figures (every process: the primary and, with config `workers`, each SMTP worker).
import type { IntervalHistogram } from 'node:perf_hooks'

export interface LoopDelay {
  p50: number
  p99: number
  max: number
}

/** A histogram of monitorEventLoopDelay({ resolution: 10 }) in ms above the 10 ms sampling interval. */
export function loopDelayFigures(h: IntervalHistogram): LoopDelay {
  const ms = (ns: number) => Math.max(0, Math.round((ns - 10e6) / 1e4) / 100)
  return { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max) }
}

/** The worse of two (by p99): a relay is as slow as its slowest loop. */
export function worstDelay(a: LoopDelay, b?: LoopDelay): LoopDelay {
  return b && b.p99 > a.p99 ? b : a
}
