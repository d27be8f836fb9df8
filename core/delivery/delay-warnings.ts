// Delay warnings (RFC 3464 Action: delayed): a periodic look (an indexed query) for messages that
// have waited `delivery.delayWarning`; each is warned once, to its sender, for the recipients still
// deferred whose NOTIFY asks for DELAY. A message with no such recipient is marked all the same.
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import { wantsDsn } from '../mail/bounce.js'
import type { Queue } from '../queue/types.js'
import type { DeliveryDsns } from './dsn.js'

/** Messages looked at per check. */
const DELAY_BATCH = 100

export class DelayWarnings {
  private timer: NodeJS.Timeout | undefined
  /** The timer's period (0: off), from the delayWarning it was set for. */
  private period = 0
  private check: Promise<void> | undefined
  private stopped = true

  constructor(
    /** The config in force (hot reload replaces it). */
    private readonly config: () => RelayConfig,
    private readonly queue: Queue,
    private readonly dsns: DeliveryDsns,
    private readonly log: Logger,
    /** A warning was queued: delivery has work. */
    private readonly onQueued: () => void,
  ) {}

  start(): void {
    this.stopped = false
    this.follow()
  }

  /** The config changed: the check period follows `delivery.delayWarning` (0 turns it off). */
  follow(): void {
    if (this.stopped) return
    const warning = this.config().delivery.delayWarning
    const period = warning > 0 ? Math.min(Math.max(warning / 2, 500), 60_000) : 0
    if (period === this.period) return
    clearInterval(this.timer)
    this.timer = undefined
    this.period = period
    if (!period) return
    this.timer = setInterval(() => {
      if (!this.check) this.check = this.run().finally(() => (this.check = undefined))
    }, period)
    this.timer.unref()
  }

  /** No further checks; returns the one in progress, if any. */
  stop(): Promise<void> | undefined {
    this.stopped = true
    clearInterval(this.timer)
    this.timer = undefined
    this.period = 0
    return this.check
  }

  private async run(): Promise<void> {
    try {
      const now = Date.now()
      const candidates = await this.queue.delayCandidates(now - this.config().delivery.delayWarning, DELAY_BATCH)
      for (const c of candidates) {
        if (this.stopped) return
        const dsn = await this.dsns.delay(c)
        if (!(await this.queue.markDelayNotified(c.message.id, dsn, c.recipients.map((r) => r.rowId))) || !dsn) continue
        const recipients = c.recipients.filter((r) => wantsDsn(r.args, 'DELAY')).map((r) => r.address)
        this.log.info({ queueId: dsn.id, dsnFor: c.message.id, to: c.message.sender, recipients }, 'delay warning queued')
        this.onQueued()
      }
    } catch (err) {
      if (!this.stopped) this.log.error({ err }, 'delay warning check failed')
    }
  }
}
