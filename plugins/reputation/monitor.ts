// Checks the reputation figures of the last day every few minutes (and once shortly after start)
// and logs a warning per sending domain over a limit: at most one per domain and kind per hour,
// so the log says it without repeating it every check.
import type { Logger } from 'pino'
import { computeFigures, windowStart, type QueueOperations, type Thresholds, type Warning } from '../../core/index.js'

const CHECK_EVERY = 5 * 60_000
const FIRST_CHECK_AFTER = 5_000
const REPEAT_AFTER = 60 * 60_000

export interface MonitorTiming {
  every: number
  firstAfter: number
}

export class ReputationMonitor {
  private interval: NodeJS.Timeout | undefined
  private first: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined

  /** What was logged when (`${kind} ${domain}` → epoch ms): a warning repeats at most hourly. */
  private readonly warned = new Map<string, number>()

  /** `thresholds` is read at each check: config `stats` may change at a reload. */
  constructor(
    private readonly queue: Pick<QueueOperations, 'stats'>,
    private readonly thresholds: () => Thresholds,
    private readonly log: Logger,
    private readonly timing: MonitorTiming = { every: CHECK_EVERY, firstAfter: FIRST_CHECK_AFTER },
  ) {}

  /** Warnings remembered now (domain and kind), each for an hour. */
  get remembered(): number {
    return this.warned.size
  }

  start(): void {
    // Neither timer keeps the process alive: a stop must not wait for the next check.
    this.first = setTimeout(() => void this.check(), this.timing.firstAfter)
    this.first.unref()
    this.interval = setInterval(() => void this.check(), this.timing.every)
    this.interval.unref()
  }

  /** Stops the timers and waits for a check that is running (the queue closes next). */
  async stop(): Promise<void> {
    clearTimeout(this.first)
    clearInterval(this.interval)
    await this.running
  }

  /** One check; resolves with the warnings logged now (those within their quiet hour are left out). */
  check(now = Date.now()): Promise<Warning[]> {
    const run = this.run(now)
    this.running = run.then(
      () => undefined,
      () => undefined,
    )
    return run
  }

  private async run(now: number): Promise<Warning[]> {
    let warnings: Warning[]
    try {
      const rows = await this.queue.stats(windowStart('day', now))
      warnings = computeFigures(rows, { period: 'day', now, thresholds: this.thresholds() }).warnings
    } catch (err) {
      this.log.error({ err }, 'reputation check failed')
      return []
    }
    // Only the last hour's warnings matter: older ones go (sending domains are what senders write).
    for (const [key, at] of this.warned) if (now - at >= REPEAT_AFTER) this.warned.delete(key)
    const logged: Warning[] = []
    for (const w of warnings) {
      const key = `${w.kind} ${w.senderDomain}`
      const last = this.warned.get(key)
      if (last !== undefined && now - last < REPEAT_AFTER) continue
      this.warned.set(key, now)
      logged.push(w)
      const rate = w.kind === 'bounce-rate' ? { bounceRate: round(w.rate) } : { complaintRate: round(w.rate) }
      this.log.warn(
        { event: 'reputation-warning', senderDomain: w.senderDomain, ...rate, threshold: w.threshold, volume: w.volume, period: 'day' },
        `${w.senderDomain}: ${w.kind === 'bounce-rate' ? 'bounce' : 'complaint'} rate ${percent(w.rate)} over the last day is above ${percent(w.threshold)}`,
      )
    }
    return logged
  }
}

const round = (n: number) => Math.round(n * 10_000) / 10_000
const percent = (n: number) => `${Math.round(n * 1000) / 10}%`
