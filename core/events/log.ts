// Delivery events as JSON lines: one pino line per accepted (written by the SMTP side), delivered,
// deferred, bounced and suppressed event, `{ event: '<name>', ... }` with msg 'delivery event', for log pipelines.
// Envelope data, remote hosts, responses, timings and TLS only: no message content, no credentials.
import type { Logger } from 'pino'
import type { HookBus } from '../hooks/bus.js'
import type { DeliveryEvent, SessionInfo } from '../hooks/types.js'

const MSG = 'delivery event'

/** Who sent it: enough to find the session in the log, nothing a client could use to log in. */
function client(session: SessionInfo) {
  return {
    session: session.id,
    client: session.remoteAddress,
    clientHostname: session.clientHostname,
    helo: session.helo,
    listener: session.listener.role,
    user: session.user,
    tls: session.tls ?? false,
  }
}

function delivery(e: DeliveryEvent) {
  return {
    queueId: e.queueId,
    messageId: e.messageId,
    sender: e.sender,
    recipient: e.recipient,
    domain: e.domain,
    remoteHost: e.remoteHost,
    response: e.response,
    attempts: e.attempts,
    category: e.category,
    tls: e.tls,
    durationMs: e.durationMs,
    queuedMs: e.queuedMs,
    nextAttemptAt: e.nextAttemptAt,
  }
}

/**
 * The fields of the 'accepted' line, which core/smtp/accept.ts writes itself when it answers 250
 * (one line per message, with the time the acceptance took).
 */
export function acceptedFields(m: { messageId?: string; sender: string; size: number }, recipients: string[], session: SessionInfo) {
  return { messageId: m.messageId, sender: m.sender, recipients, size: m.size, ...client(session) }
}

/** Subscribes the event log to the bus; its observers stay across plugin reloads. */
export function logDeliveryEvents(bus: HookBus, log: Logger): void {
  const child = (event: string) => log.child({ event })
  const delivered = child('delivered')
  const deferred = child('deferred')
  const bounced = child('bounced')
  const suppressed = child('suppressed')
  bus.observe('delivered', (e) => delivered.info(delivery(e), MSG))
  // A failure is a warning, as it always was in this log.
  bus.observe('deferred', (e) => deferred.warn(delivery(e), MSG))
  bus.observe('bounced', (e) => bounced.warn(delivery(e), MSG))
  bus.observe('suppressed', (e) => suppressed.info({ recipient: e.recipient, reason: e.reason, source: e.source, ...client(e.session) }, MSG))
}
