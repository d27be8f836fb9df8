// DSN policy for mail from untrusted clients (no AUTH, not in smtp.trustedNetworks). Its envelope
// sender is whatever the client claimed, so a DSN to it may go to a forged address (backscatter):
// such a DSN never returns the body (headers only, whatever RET says), and at most one goes to a
// sender address per `delivery.untrustedDsn.interval`. The memory of who got one is per node, in
// memory: a restart forgets it, and a cluster of N nodes sends at most N per interval.
import type { MessageMeta } from '../queue/types.js'

/**
 * Whether a queued message came from an untrusted client. `meta.trusted` says so on messages queued
 * since it exists; older ones count as untrusted when they came from a client (clientAddress) that
 * did not authenticate (no user). Messages the relay made itself (DSNs) carry neither: trusted.
 */
export function fromUntrustedClient(meta: MessageMeta | undefined): boolean {
  if (!meta) return false
  if (meta.trusted !== undefined) return !meta.trusted
  return meta.clientAddress !== undefined && meta.user === undefined
}

/**
 * Remembers, per sender address, when the last DSN for untrusted mail went, and which messages got
 * one; bounded in size. The allowance is one notification per sender per interval, where all DSNs of
 * one message are one notification (its failures in several domains, its failure after its delay
 * warning), and a failure outranks a delay warning: the warning never uses it up for a failure.
 */
export class UntrustedDsnLimiter {
  /** Lower-cased sender → when its last DSN went (epoch ms) and whether it was a failure; oldest first. */
  private readonly sent = new Map<string, { at: number; failed: boolean }>()
  /** Messages (queue ids) a DSN went for; oldest first. */
  private readonly told = new Map<string, number>()

  /**
   * Whether a DSN (`failed`: a failure, else a delay warning) for message `queueId` may go to
   * `sender` now (then it is remembered). With `intervalMs` 0 every DSN may go. Beyond `maxSenders`
   * the oldest entries are forgotten (their senders may get one again early).
   */
  allow(sender: string, queueId: string, failed: boolean, intervalMs: number, maxSenders: number, now = Date.now()): boolean {
    if (intervalMs <= 0) return true
    const key = sender.toLowerCase()
    // Entries are in the order they were written and all live `intervalMs`: expired ones are at the front.
    for (const [k, e] of this.sent) {
      if (now - e.at < intervalMs) break
      this.sent.delete(k)
    }
    const last = this.sent.get(key)
    // The sender heard of this message already: the rest of its story goes too, bounded by its recipients.
    const known = this.told.has(queueId)
    if (!known && last && (last.failed || !failed)) return false
    this.sent.delete(key)
    this.sent.set(key, { at: now, failed: failed || Boolean(last?.failed) })
    this.told.delete(queueId)
    this.told.set(queueId, now)
    while (this.sent.size > maxSenders) this.sent.delete(this.sent.keys().next().value!)
    while (this.told.size > maxSenders) this.told.delete(this.told.keys().next().value!)
    return true
  }
}
