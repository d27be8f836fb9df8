// The one builder of the delivered / deferred / bounced event, for delivery's attempts and the
// operator's bounce alike, so every observer (log, metrics, webhooks, plugins) sees the same fields.
import type { BounceCategory, DeliveryEvent } from './types.js'

/** What happened to one recipient, as the attempt (or the operator) decided it. */
export interface RecipientOutcome {
  recipient: string
  domain: string
  response: string
  /** Attempts so far, this one included. */
  attempts: number
  remoteHost?: string
  nextAttemptAt?: number
  category?: BounceCategory
  tls?: DeliveryEvent['tls']
  route?: DeliveryEvent['route']
  routeName?: string
  byOperator?: true
}

/**
 * The event for one recipient of message `m`: `startedAt` is when the attempt began (durationMs;
 * `now` for a decision that took no attempt), and queuedMs counts from the message's arrival.
 */
export function deliveryEvent(m: { id: string; messageId?: string; sender: string; receivedAt: number }, r: RecipientOutcome, startedAt: number, now: number): DeliveryEvent {
  return {
    queueId: m.id,
    messageId: m.messageId,
    sender: m.sender,
    recipient: r.recipient,
    domain: r.domain,
    remoteHost: r.remoteHost,
    response: r.response,
    attempts: r.attempts,
    durationMs: now - startedAt,
    queuedMs: now - m.receivedAt,
    nextAttemptAt: r.nextAttemptAt,
    category: r.category,
    tls: r.tls,
    route: r.route,
    routeName: r.routeName,
    ...(r.byOperator ? { byOperator: true as const } : {}),
  }
}
