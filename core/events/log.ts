// The audit log: one pino line per event, `{ event: '<name>', ... }` with `msg` saying what happened
// ('accepted', 'delivered', 'deferred', 'bounced', 'suppressed', 'refused'), for log pipelines and
// fail2ban (docs/logging.md lists the fields). Envelope data, remote hosts, replies, timings and TLS
// only: no message content, no credentials. Times are ISO 8601; durations are named `...Ms`.
import type { Logger } from 'pino'
import type { HookBus } from '../hooks/bus.js'
import type { DeliveryEvent, SessionInfo } from '../hooks/types.js'

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

const REPLY = /^([245])\d\d(?=[ -]|$)/
const STATUS = /^(?:\d{3}[ -])?([245]\.\d{1,3}\.\d{1,3})(?=\s|$)/

/**
 * The reply code and enhanced status code of a response such as `250 2.0.0 Ok`, `250 Ok` (dsn
 * 2.0.0, as Postfix reports it) or `4.4.1 Host ... unreachable` (a local decision: no code).
 */
export function replyCodes(response: string): { code?: number; dsn?: string } {
  const code = REPLY.exec(response)
  const status = STATUS.exec(response)?.[1]
  // An enhanced code of another class than the reply's (`250 5.0.0`) is ignored.
  const dsn = status && (!code || status[0] === code[1]) ? status : code ? `${code[1]}.0.0` : undefined
  return { code: code ? Number(response.slice(0, 3)) : undefined, dsn }
}

const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString())

function delivery(e: DeliveryEvent) {
  return {
    queueId: e.queueId,
    messageId: e.messageId,
    sender: e.sender,
    recipient: e.recipient,
    domain: e.domain,
    ...replyCodes(e.response),
    /** How (mx, smtp: a smarthost, lmtp) and the host that answered, `name[ip]:port` (or the LMTP socket). */
    route: e.route,
    routeName: e.routeName,
    remoteHost: e.remoteHost,
    response: e.response,
    attempts: e.attempts,
    category: e.category,
    tls: e.tls,
    durationMs: e.durationMs,
    queuedMs: e.queuedMs,
    nextAttemptAt: iso(e.nextAttemptAt),
    byOperator: e.byOperator,
  }
}

/**
 * The fields of the 'accepted' line, which core/smtp/accept.ts writes itself when it answers 250
 * (one line per message, with the time the acceptance took as `durationMs`).
 */
export function acceptedFields(m: { messageId?: string; sender: string; size: number }, recipients: string[], session: SessionInfo) {
  return { messageId: m.messageId, sender: m.sender, recipients, size: m.size, ...client(session) }
}

/** One refused SMTP command, as SmtpListeners.refuse knows it. */
export interface Refusal {
  session: SessionInfo
  /** The SMTP command refused (a refusal at the `helo` hook comes at the first MAIL; `command`: another, named in `detail.command`). */
  stage: 'connect' | 'helo' | 'auth' | 'mail' | 'rcpt' | 'data' | 'command'
  /** The hook stage that decided, or 'protocol' for the core's own checks. */
  hook: string
  code: number
  status?: string
  text: string
  /** The config plugin whose verdict it was. */
  plugin?: string
  /** The core rule (`core:closed-relay`, `core:bad-recipient-syntax`, ...) when no plugin refused. */
  rule?: string
  sender?: string
  recipient?: string
  recipients?: string[]
  /** ESMTP, ESMTPS, ESMTPSA, ... as in the Received header. */
  proto?: string
  /** Anything else the refusal knows (AUTH: user name tried and method; hop count; ...). */
  detail?: Record<string, unknown>
}

/** The one audit line for a refusal (`msg: 'refused'`), warn level: abuse handling and fail2ban read these. */
export function logRefusal(log: Logger, r: Refusal): void {
  const { session, status, text, detail, ...rest } = r
  log.warn({ event: 'rejected', ...rest, dsn: status || undefined, text, ...client(session), ...detail }, 'refused')
}

/** Subscribes the event log to the bus; its observers stay across plugin reloads. */
export function logDeliveryEvents(bus: HookBus, log: Logger): void {
  const child = (event: string) => log.child({ event })
  const delivered = child('delivered')
  const deferred = child('deferred')
  const bounced = child('bounced')
  const suppressed = child('suppressed')
  bus.observe('delivered', (e) => delivered.info(delivery(e), 'delivered'))
  // A failure is a warning, as it always was in this log.
  bus.observe('deferred', (e) => deferred.warn(delivery(e), 'deferred'))
  bus.observe('bounced', (e) => bounced.warn(delivery(e), 'bounced'))
  bus.observe('suppressed', (e) => suppressed.info({ recipient: e.recipient, reason: e.reason, source: e.source, ...client(e.session) }, 'suppressed'))
}
