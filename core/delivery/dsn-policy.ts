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

/** Remembers, per sender address, when the last DSN for untrusted mail went; bounded in size. */
export class UntrustedDsnLimiter {
  /** Lower-cased sender → when its last DSN went (epoch ms); oldest first (Map insertion order). */
  private readonly sent = new Map<string, number>()

  /**
   * Whether a DSN may go to `sender` now (then it is remembered). With `intervalMs` 0 every DSN may
   * go. Beyond `maxSenders` the oldest entries are forgotten (their senders may get one again early).
   */
  allow(sender: string, intervalMs: number, maxSenders: number, now = Date.now()): boolean {
    if (intervalMs <= 0) return true
    const key = sender.toLowerCase()
    // Entries are in the order they were written and all live `intervalMs`: expired ones are at the front.
    for (const [k, at] of this.sent) {
      if (now - at < intervalMs) break
      this.sent.delete(k)
    }
    const last = this.sent.get(key)
    if (last !== undefined && now - last < intervalMs) return false
    this.sent.delete(key)
    this.sent.set(key, now)
    while (this.sent.size > maxSenders) this.sent.delete(this.sent.keys().next().value!)
    return true
  }
}
