// Delivery's DSNs: failures (an expiry included) and delay warnings, built by core/mail/bounce.ts
// under the untrusted-mail policy (dsn-policy.ts): a forged sender gets headers only, and at most
// one notification per sender per `delivery.untrustedDsn.interval` (all DSNs of one message count
// as one; a delay warning never takes the place of a failure).
import { buffer } from 'node:stream/consumers'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import { delayDsn, failureDsn, type DsnEnv, type DsnGate } from '../mail/bounce.js'
import { newQueueId } from '../queue/id.js'
import type { DelayCandidate, Job, MessageMeta, NewMessage, Queue } from '../queue/types.js'
import type { AttemptResult } from './attempt.js'
import { fromUntrustedClient, UntrustedDsnLimiter } from './dsn-policy.js'

export class DeliveryDsns {
  /** Who got a DSN for untrusted mail lately (delivery.untrustedDsn). */
  private readonly untrusted = new UntrustedDsnLimiter()

  constructor(
    /** The config in force (hot reload replaces it). */
    private readonly config: () => RelayConfig,
    private readonly queue: Queue,
    private readonly log: Logger,
  ) {}

  /**
   * The DSN (RFC 3464) an attempt's results ask for, to queue with them: its bounced recipients, and
   * those `succeeded` (delivered or relayed) that asked for NOTIFY=SUCCESS.
   */
  async failure(job: Job, bounced: AttemptResult[], succeeded: (AttemptResult & { action: 'delivered' | 'relayed' })[] = []): Promise<NewMessage | undefined> {
    const m = job.message
    const args = new Map(job.recipients.map((r) => [r.rowId, r.args]))
    const recipient = (b: AttemptResult) => ({ address: b.address, response: b.response, status: b.status, remoteHost: b.remoteHost, remote: b.remote, args: args.get(b.rowId) })
    const success = succeeded.map((s) => ({ ...recipient(s), action: s.action }))
    const opts = fromUntrustedClient(m.meta) ? { allow: this.gate(m, bounced.length ? 'failed' : 'delivered'), succeeded: success } : { readBody: () => buffer(this.queue.openBody(m)), succeeded: success }
    const dsn = await failureDsn(this.env(), m, bounced.map(recipient), opts)
    if (dsn) this.log.info({ queueId: dsn.id, dsnFor: m.id, to: m.sender, ...(bounced.length ? {} : { success: true }) }, bounced.length ? 'bounce queued' : 'success DSN queued')
    return dsn
  }

  /** The delay warning for a message that waited `delivery.delayWarning`, if one goes. */
  delay(c: DelayCandidate): Promise<NewMessage | undefined> {
    return delayDsn(this.env(), c, fromUntrustedClient(c.message.meta) ? { allow: this.gate(c.message, 'delayed') } : {})
  }

  private env(): DsnEnv {
    const config = this.config()
    return { reportingMta: config.hostname, lifetime: config.delivery.maxQueueLifetime, newId: newQueueId, log: this.log }
  }

  /** Untrusted mail's sender may be forged: one DSN per sender per interval. */
  private gate(m: { id: string; sender: string; meta: MessageMeta }, action: 'failed' | 'delayed' | 'delivered'): DsnGate {
    return () => {
      const { interval, maxSenders } = this.config().delivery.untrustedDsn
      if (this.untrusted.allow(m.sender, m.id, action === 'failed', interval, maxSenders)) return true
      this.log.info({ dsnFor: m.id, to: m.sender, action }, 'DSN dropped: this sender of untrusted mail got one within delivery.untrustedDsn.interval')
      return false
    }
  }
}
