import { deepFreeze } from '../config/freeze.js'
import type { HookName, Route, RouteDecision, Verdict } from './types.js'

type VerdictArgs = [status?: string, message?: string] | [options: { code?: number; status?: string; message?: string; senders?: string[]; handled?: boolean }]

const STATUS = /^[245]\.\d{1,3}\.\d{1,3}$/

function make(action: Verdict['action'], args: VerdictArgs): Verdict {
  const [first, second] = args
  if (typeof first === 'object') return { action, ...first }
  if (first === undefined || STATUS.test(first)) return { action, status: first, message: second }
  // One argument that is no status is the text (`reject('not here')`). With a text after it, the
  // first is a mistaken status: a reply code (`reject('550', 'User unknown')`) is taken as the
  // code, anything else goes to the check of the reply (the stage's default status), the text kept.
  if (second === undefined) return { action, message: first }
  if (/^\s*[245]\d\d\s*$/.test(first)) return { action, code: Number(first), message: second }
  return { action, status: first, message: second }
}

/** Accept: stops the remaining plugins for this hook. `accept()` or `accept('2.1.5', 'ok')`. */
export const accept = (...args: VerdictArgs): Verdict => make('accept', args)
/** Reject permanently (5xx). `reject('5.7.1', 'not allowed')` or `reject({ code: 553, status, message })`. */
export const reject = (...args: VerdictArgs): Verdict => make('reject', args)
/** Reject temporarily (4xx); the client may try again later. */
export const tempfail = (...args: VerdictArgs): Verdict => make('tempfail', args)
/** From a `deliver` hook: send these recipients to the given hosts instead of the domain's MX. */
export const route = (r: Route): RouteDecision => ({ action: 'route', route: r })

/** One SMTP reply: code, enhanced status code, text. */
export interface Reply {
  code: number
  status: string
  message: string
}

type StageReplies = Record<'accept' | 'reject' | 'tempfail', Reply>

/** The reply each verdict becomes at each stage, when the plugin gives no code or text of its own. */
// Frozen: plugins import it (relay-mta), and the core answers from it.
export const STAGE_REPLIES: Readonly<Record<Exclude<HookName, 'deliver' | 'generated'>, Readonly<StageReplies>>> = deepFreeze({
  connect: {
    accept: { code: 220, status: '', message: '' },
    reject: { code: 554, status: '5.7.1', message: 'Service refused' },
    tempfail: { code: 421, status: '4.7.0', message: 'Service temporarily unavailable, try again later' },
  },
  helo: {
    accept: { code: 250, status: '', message: '' },
    reject: { code: 550, status: '5.7.1', message: 'HELO/EHLO name refused' },
    tempfail: { code: 450, status: '4.7.1', message: 'HELO/EHLO name temporarily refused' },
  },
  auth: {
    accept: { code: 235, status: '2.7.0', message: 'Authentication successful' },
    reject: { code: 535, status: '5.7.8', message: 'Authentication credentials invalid' },
    tempfail: { code: 454, status: '4.7.0', message: 'Temporary authentication failure' },
  },
  mail: {
    accept: { code: 250, status: '2.1.0', message: 'Ok' },
    reject: { code: 550, status: '5.7.1', message: 'Sender refused' },
    tempfail: { code: 451, status: '4.7.1', message: 'Sender temporarily refused, try again later' },
  },
  rcpt: {
    accept: { code: 250, status: '2.1.5', message: 'Ok' },
    reject: { code: 550, status: '5.7.1', message: 'Recipient refused' },
    tempfail: { code: 450, status: '4.7.1', message: 'Recipient temporarily refused, try again later' },
  },
  data: {
    accept: { code: 250, status: '2.0.0', message: 'Ok' },
    reject: { code: 550, status: '5.7.1', message: 'Message refused' },
    tempfail: { code: 451, status: '4.7.1', message: 'Message temporarily refused, try again later' },
  },
  queue: {
    accept: { code: 250, status: '2.0.0', message: 'Ok' },
    reject: { code: 554, status: '5.7.1', message: 'Message refused' },
    tempfail: { code: 451, status: '4.3.0', message: 'Message could not be queued, try again later' },
  },
})

/**
 * The SMTP reply for a verdict at a stage. A plugin's own code is kept when its class fits the
 * action (5xx for reject, 4xx for tempfail); otherwise the stage's default code is used.
 */
export function replyFor(stage: keyof typeof STAGE_REPLIES, verdict: Verdict): Reply {
  const base = STAGE_REPLIES[stage][verdict.action]
  const wantClass = classOf(verdict)
  // A plugin's code and status are used only when well-formed and of the verdict's class.
  const code = Number.isInteger(verdict.code) && Math.floor(verdict.code! / 100) === wantClass ? verdict.code! : base.code
  return { code, status: statusOfClass(verdict.status, wantClass) ?? base.status, message: oneLine(verdict.message ?? base.message) }
}

/** The reply class a verdict's code and status must have: 5 for reject, 4 for tempfail, else 2. */
const classOf = (v: Verdict) => (v.action === 'reject' ? 5 : v.action === 'tempfail' ? 4 : 2)

/** A plugin's enhanced status when well-formed and of class `wantClass`, else undefined. */
const statusOfClass = (status: unknown, wantClass: number) => (typeof status === 'string' && STATUS.test(status) && Number(status[0]) === wantClass ? status : undefined)

/**
 * Plugin text as reply text: one line (no control characters reach the client), no longer than
 * RFC 5321's 512-octet reply line (§4.5.3.1.5) leaves room for, however much the plugin gave.
 */
const oneLine = (text: unknown) => fitLine(String(text).replace(/[\x00-\x1f\x7f]+/g, ' '))

/** Reply text within MAX_REPLY_TEXT octets (code, status, spaces and CRLF fit in the rest of 512). */
const MAX_REPLY_TEXT = 480
function fitLine(text: string): string {
  if (Buffer.byteLength(text) <= MAX_REPLY_TEXT) return text
  let cut = text.slice(0, MAX_REPLY_TEXT - 3)
  while (Buffer.byteLength(cut) > MAX_REPLY_TEXT - 3) cut = cut.slice(0, -1)
  return `${cut}...`
}

const FAILURE_TEXT = 'Temporary local problem, try again later'

/**
 * What a plugin that threw, timed out or returned something that is not a verdict is taken to have
 * said: a local error (RFC 5321 451, RFC 3463 4.3.0), not a policy refusal; at connect 421 (the
 * connection closes), at AUTH RFC 4954's 454 4.7.0.
 */
export function pluginFailure(hook: string): Verdict {
  if (hook === 'connect') return { action: 'tempfail', code: 421, status: '4.3.0', message: FAILURE_TEXT }
  if (hook === 'auth') return { action: 'tempfail', code: 454, status: '4.7.0', message: FAILURE_TEXT }
  return { action: 'tempfail', code: 451, status: '4.3.0', message: FAILURE_TEXT }
}

const optional = (v: unknown, type: 'string' | 'number' | 'boolean') => v === undefined || v === null || typeof v === type

/**
 * A hook's result as the core uses it: a copy of the verdict's own fields (a plugin cannot change
 * it afterwards, nor run code when the core reads it), or 'invalid' when it is no verdict: an
 * unknown action, `route` outside `deliver`, a field of the wrong type, a getter that throws.
 * undefined for no opinion.
 */
export function asVerdict(result: unknown, hook: string): Verdict | RouteDecision | 'invalid' | undefined {
  if (result === undefined || result === null) return undefined
  if (typeof result !== 'object') return 'invalid'
  try {
    const { action, code, status, message, senders, handled, route } = result as Record<string, unknown>
    if (action === 'route') return hook === 'deliver' && typeof route === 'object' && route !== null ? { action, route: route as Route } : 'invalid'
    if (action !== 'accept' && action !== 'reject' && action !== 'tempfail') return 'invalid'
    if (!optional(code, 'number') || !optional(status, 'string') || !optional(message, 'string') || !optional(handled, 'boolean')) return 'invalid'
    if (senders !== undefined && senders !== null && !(Array.isArray(senders) && senders.every((x) => typeof x === 'string'))) return 'invalid'
    const v: Verdict = { action }
    if (typeof code === 'number') v.code = code
    if (typeof status === 'string') v.status = status
    if (typeof message === 'string') v.message = message
    if (Array.isArray(senders)) v.senders = [...(senders as string[])]
    if (typeof handled === 'boolean') v.handled = handled
    return v
  } catch {
    return 'invalid'
  }
}

/** An Error carrying an SMTP reply, as smtp-server expects from its callbacks. */
export function replyError(reply: Reply): Error & { responseCode: number } {
  const err = new Error(reply.status ? `${reply.status} ${reply.message}` : reply.message) as Error & { responseCode: number }
  err.responseCode = reply.code
  return err
}

const reply = (code: number, status: string, message: string): Reply => ({ code, status, message })

/**
 * The refusals the SMTP side makes itself (protocol checks and the core's own policies), one named
 * row each, so every reply text the relay writes on its own is in one place.
 */
export const CORE_REPLIES = {
  // AUTH
  authInTransaction: reply(503, '5.5.1', 'AUTH not permitted during a mail transaction'),
  foreignAuthorizationIdentity: reply(535, '5.7.8', 'Authentication credentials invalid: acting as another identity is not permitted'),
  // DATA, RSET: RFC 5321 gives them no argument (Postfix's words)
  noArgument: (verb: 'DATA' | 'RSET') => reply(501, '5.5.4', `Syntax: ${verb}`),
  // MAIL FROM, RCPT TO
  improperPipelining: reply(554, '5.5.0', 'Improper pipelining: message data sent before the 354 reply to DATA (RFC 2920); closing connection'),
  badDsnParameter: (name: 'ENVID' | 'ORCPT') => reply(501, '5.5.4', `Bad ${name} parameter syntax (RFC 3461: xtext)`),
  dsnParameterTooLong: (name: 'ENVID' | 'ORCPT', most: number) => reply(501, '5.5.4', `Bad ${name} parameter syntax: longer than ${most} characters (RFC 3461)`),
  parameterNeedsEhlo: (command: 'MAIL FROM' | 'RCPT TO', name: string) => reply(555, '5.5.4', `${command} parameter ${name.replace(/[^\x21-\x7e]/g, '?').slice(0, 40)} needs EHLO, not HELO`),
  unsupportedParameter: (command: 'MAIL FROM' | 'RCPT TO', name: string) => reply(555, '5.5.4', `${command} parameter ${name.replace(/[^\x21-\x7e]/g, '?').slice(0, 40)} not supported`),
  // MAIL FROM
  mustStartTls: reply(530, '5.7.0', 'Must issue a STARTTLS command first, then authenticate'),
  authRequired: reply(530, '5.7.0', 'Authentication required'),
  badSenderSyntax: reply(553, '5.1.7', 'Bad sender address syntax'),
  // RFC 6531 §3.4 (Postfix's wording): a UTF-8 mailbox without the SMTPUTF8 parameter on MAIL.
  smtpUtf8Required: reply(553, '5.6.7', 'Must declare SMTPUTF8 to send unicode address'),
  senderNotOwned: (address: string, user: string) => reply(553, '5.7.1', `Sender address <${address}> not owned by user ${user}`),
  // RCPT TO
  badRecipientSyntax: reply(553, '5.1.3', 'Bad recipient address syntax'),
  lineTooLong: reply(500, '5.5.2', 'Line too long'),
  notImplemented: reply(502, '5.5.1', 'Error: command not implemented'),
  tlsAlreadyActive: reply(503, '5.5.1', 'TLS already active'),
  tooManyRecipients: reply(452, '4.5.3', 'Too many recipients'),
  routingInLocalPart: (address: string) => reply(550, '5.7.1', `Routing in the local part is not allowed: <${address}>`),
  relayingDenied: (address: string) => reply(550, '5.7.1', `Relaying denied for <${address}>`),
  suppressed: (address: string, reason: string) => reply(550, '5.1.1', `<${address}>: recipient suppressed (${reason.replace(/[\x00-\x1f\x7f]+/g, ' ')})`),
  // DATA
  headerTooLarge: (detail: string) => reply(552, '5.3.4', `Message header too large: ${detail}`),
  bareLineEnding: reply(550, '5.6.0', 'Message contains bare LF or bare CR (only CRLF line ends are allowed)'),
  nulByte: reply(550, '5.6.0', 'Message contains a NUL byte (not allowed in mail)'),
  readFailed: reply(451, '4.3.0', 'Error reading message, try again'),
  // The relay could not write the message down (spool file): its fault, not the client's (Postfix's words).
  writeFailed: reply(451, '4.3.0', 'Error: queue file write error, try again later'),
  sizeExceeded: reply(552, '5.3.4', 'Message exceeds fixed maximum message size'),
  tooManyHops: reply(554, '5.4.6', 'Too many hops'),
  headerSenderNotOwned: (address: string, user: string) => reply(553, '5.7.1', `Header sender <${address}> not owned by user ${user}`),
  queueFailed: reply(451, '4.3.0', 'Message could not be queued, try again later'),
  noStorage: reply(452, '4.3.1', 'Insufficient system storage'),
  // Connection (sent by the smtp-server patches and the PROXY protocol reader, then closed)
  tooManyClients: (name: string) => reply(421, '4.7.0', `${name} Too many connected clients, try again in a moment`),
  tooManyErrors: (name: string) => reply(421, '4.7.0', `${name} Too many errors, closing connection`),
  tooManyUnauthenticatedCommands: reply(421, '4.7.0', 'Error: too many unauthenticated commands'),
  idleTimeout: (name: string) => reply(421, '4.4.2', `${name} Timeout exceeded, closing connection`),
  inputTooSlow: (name: string) => reply(421, '4.4.2', `${name} Timeout exceeded: input too slow, closing connection`),
  firstCommandTimeout: (name: string) => reply(421, '4.4.2', `${name} No command received in time, closing connection`),
  proxyHeaderRequired: (hostname: string) => reply(421, '4.7.0', `${hostname} PROXY protocol header required`),
  proxyHeaderRefused: (name: string, client: string) => reply(421, '4.7.0', `${name} PROXY header not accepted from ${client}, closing connection`),
  tooManyConnections: (hostname: string, ip: string) => reply(421, '4.7.0', `${hostname} Too many connections from ${ip}, try again later`),
  tooManyTlsFailures: (hostname: string, ip: string) => reply(421, '4.7.0', `${hostname} Too many failed TLS handshakes from ${ip}, try again later`),
  sessionTimeLimit: (hostname: string) => reply(421, '4.4.2', `${hostname} Session time limit exceeded, closing connection`),
} as const

/** The row of CORE_REPLIES a reply one of its functions made comes from: its name in the audit log (core/smtp/core-rules.ts). */
export const MADE_BY = new WeakMap<Reply, string>()
for (const [name, make] of Object.entries(CORE_REPLIES)) {
  if (typeof make !== 'function') continue
  ;(CORE_REPLIES as Record<string, unknown>)[name] = (...args: never[]) => {
    const made = (make as (...a: never[]) => Reply)(...args)
    MADE_BY.set(made, name)
    return made
  }
}

/** A reply as the text after the code (`4.7.0 ...`), for code that writes replies itself. */
export const replyText = (r: Reply): string => (r.status ? `${r.status} ${r.message}` : r.message)

/** A core policy's refusal as a verdict: `replyFor` keeps its code, status and text. */
export const refusal = (r: Reply): Verdict => ({ action: r.code >= 500 ? 'reject' : 'tempfail', code: r.code, status: r.status, message: r.message })

/**
 * The status and text a `deliver` hook's reject or tempfail gives its recipients: the plugin's
 * status only when of the verdict's class (5 for reject, 4 for tempfail), the text one line.
 */
export function deliverRefusal(verdict: Verdict, plugin: string): { status: string; text: string } {
  const wantClass = classOf(verdict)
  const status = statusOfClass(verdict.status, wantClass) ?? `${wantClass}.0.0`
  return { status, text: `${status} ${oneLine(verdict.message ?? `${verdict.action === 'reject' ? 'Refused' : 'Deferred'} by ${plugin}`)}` }
}

