// The one place every DSN (RFC 3464) is built, as Postfix's bounce(8): failures (an expiry is a
// failure with 4.4.7), success reports (NOTIFY=SUCCESS), delay warnings, and the operator's bounce.
// Callers decide when one goes and hand it to the queue; who may get one (delivery's untrusted-mail
// policy) stays with them.
import type { Logger } from 'pino'
import { isAscii } from 'node:buffer'
import { Readable } from 'node:stream'
import type MimeNode from 'nodemailer/lib/mime-node'
import { formatDuration } from '../config/duration.js'
import type { DelayCandidate, NewMessage, QueuedMessage } from '../queue/types.js'
import { parseAddress } from './address.js'
import { scan8bit } from './downgrade.js'
import { truncateReply } from './reply.js'
import { envidOf, orcptOf, retOf, statusOf, wantsDsn, type Args } from './dsn-params.js'
import { diagnosticOf, finalRecipient, foldField, hasLongLine, originalHeadersOf, unicodeEscaped } from './dsn-fields.js'

// The fields' writers live in dsn-fields.ts.
export { foldField, hasLongLine } from './dsn-fields.js'

// The DSN parameters' readers live in dsn-params.ts; callers import them from here too.
export { envidOf, notifyOf, orcptOf, relayDsn, retOf, statusOf, wantsDsn, type Args } from './dsn-params.js'

export interface FailedRecipient {
  address: string
  /** RFC 3463 status, e.g. 5.1.1 */
  status: string
  /** `name[ip]:port` of the host that answered, if one did. */
  remoteHost?: string
  /** The remote reply or the local reason. */
  diagnostic: string
  /** The reply came from a remote SMTP server (Diagnostic-Code type smtp), else local (x-local). */
  remote: boolean
  orcpt?: string
  /** This recipient's Action when it differs from the report's: a success (RFC 3464 §2.3.3) beside failures. */
  action?: DsnAction
  /** When its last attempt ended (Last-Attempt-Date); null: never attempted (no field); absent: now (a failure reported as it happens). */
  lastAttemptAt?: Date | null
}

/** RFC 3464 §2.3.3: what became of a recipient. */
export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed'

export interface DsnInput {
  /** 'failed' (a bounce, the default), 'delayed' (a warning: still being retried), or a success. */
  action?: DsnAction
  reportingMta: string
  queueId: string
  sender: string
  arrivalDate: Date
  originalHeaders: Buffer
  /** RET=FULL: the whole original message, returned as message/rfc822 instead of its headers. */
  originalMessage?: Buffer
  envid?: string
  /** For 'delayed': when the relay gives up (Will-Retry-Until). */
  willRetryUntil?: Date
  recipients: FailedRecipient[]
  /** The original is returned otherwise than asked (`returned`: as headers, or not at all): the text says why. */
  fallback?: { returned: 'headers' | 'nothing'; why: string }
  /** The original was an internationalized message (SMTPUTF8): RFC 6533's global types. 8-bit headers imply it. */
  international?: boolean
}

/** RET=FULL returns the message only up to this size; larger ones get their headers (as RET=HDRS). */
export const RET_FULL_MAX = 1024 * 1024

/**
 * An RFC 3464 delivery status notification: multipart/report with the original headers (or, for
 * a failure with RET=FULL, the original message). `action: 'delayed'` makes the warning sent while
 * delivery is still being retried.
 */
export async function buildDsn(input: DsnInput): Promise<Buffer> {
  // An address is written into the report's text and fields: a control character in one (a maildrop
  // file is written by any local user, past sendmail's checks) must not start a line of its own.
  const noControls = (s: string) => s.replace(/[\x00-\x1f\x7f]/g, '?')
  const d: DsnInput = { ...input, recipients: input.recipients.map((r) => ({ ...r, address: noControls(r.address), ...(r.orcpt ? { orcpt: noControls(r.orcpt) } : {}) })) }
  const delayed = d.action === 'delayed'
  const actionOf = (r: FailedRecipient): DsnAction => r.action ?? d.action ?? 'failed'
  const failed = d.recipients.some((r) => actionOf(r) === 'failed')
  const succeeded = d.recipients.some((r) => actionOf(r) === 'delivered' || actionOf(r) === 'relayed')
  // Loaded when a DSN is built: CLI verbs that only read the queue (`relay queue list`) skip it.
  const { default: MimeNodeClass } = await import('nodemailer/lib/mime-node')
  // RFC 6533 §6: an internationalized message's DSN is a global-delivery-status report, which returns
  // it as message/global or message/global-headers (RFC 6532 §3.7: UTF-8 header fields allowed).
  const global = d.international === true || !isAscii(d.originalHeaders)
  const root = new MimeNodeClass(`multipart/report; report-type=${global ? 'global-delivery-status' : 'delivery-status'}`, { hostname: d.reportingMta })
  root.setHeader({
    From: `Mail Delivery System <MAILER-DAEMON@${d.reportingMta}>`,
    To: d.sender,
    Subject: delayed ? 'Delayed Mail (still being retried)' : failed ? 'Undelivered Mail Returned to Sender' : 'Successful Mail Delivery Report',
    'Auto-Submitted': 'auto-replied',
    Date: new Date(),
  })

  const intro = delayed
    ? [
        '####### THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE. #######',
        '',
        'Your message could not be delivered yet to one or more recipients; delivery is still being retried' +
          (d.willRetryUntil ? ` until ${d.willRetryUntil.toUTCString()}.` : '.'),
      ]
    : [
        ...(failed ? ["I'm sorry to have to inform you that your message could not be delivered to one or more recipients."] : []),
        // Postfix's wording: a relayed message may still fail further on.
        ...(succeeded
          ? ['Your message was successfully delivered to the destination(s) listed below. If the message was delivered to a mailbox you will receive no further notifications. Otherwise you may still receive notifications of mail delivery errors from other systems.']
          : []),
      ]
  const text = [
    `This is the mail system at host ${d.reportingMta}.`,
    '',
    ...intro,
    '',
    ...d.recipients.map((r) => {
      const success = actionOf(r) === 'relayed' || actionOf(r) === 'delivered'
      const who = r.remote && r.remoteHost ? (success ? `delivery via ${r.remoteHost}: ` : `host ${r.remoteHost} said: `) : ''
      return `<${r.address}>: ${who}${diagnosticOf(r.diagnostic)}`
    }),
    '',
    ...(d.fallback ? [`${d.fallback.returned === 'headers' ? 'Only the headers of your message are' : 'Your message is not'} returned: as it was, this report could not be converted to 7-bit for a mail server without 8BITMIME (${d.fallback.why}).`, ''] : []),
  ]
    .map(foldField)
    .join('\r\n')
  root.createChild('text/plain; charset=utf-8').setContent(text)

  const fields = [
    `Reporting-MTA: dns; ${d.reportingMta}`,
    `X-Relay-Queue-ID: ${d.queueId}`,
    ...(d.envid ? [`Original-Envelope-Id: ${d.envid}`] : []),
    `Arrival-Date: ${d.arrivalDate.toUTCString()}`,
  ]
  for (const r of d.recipients) {
    fields.push('')
    if (r.orcpt) fields.push(`Original-Recipient: ${r.orcpt}`)
    fields.push(`Final-Recipient: ${finalRecipient(r.address)}`, `Action: ${actionOf(r)}`, `Status: ${r.status}`)
    if (r.remoteHost) fields.push(`Remote-MTA: dns; ${r.remoteHost.replace(/\[.*$/, '')}`)
    fields.push(`Diagnostic-Code: ${r.remote ? 'smtp' : 'x-local'}; ${diagnosticOf(r.diagnostic)}`)
    if ((actionOf(r) === 'failed' || actionOf(r) === 'delayed') && r.lastAttemptAt !== null) fields.push(`Last-Attempt-Date: ${(r.lastAttemptAt ?? new Date()).toUTCString()}`)
    if (delayed && d.willRetryUntil) fields.push(`Will-Retry-Until: ${d.willRetryUntil.toUTCString()}`)
  }
  // Every field within the line limit, whatever a remote server or a client put into it.
  // and in 7 bits: a UTF-8 reply or address is written with RFC 6533's \x{HEX} escapes.
  root.createChild(global ? 'message/global-delivery-status' : 'message/delivery-status').setHeader('Content-Transfer-Encoding', '7bit').setContent(fields.map((f) => foldField(unicodeEscaped(f))).join('\r\n') + '\r\n')
  // message/rfc822 cannot be re-encoded (RFC 2046 §5.2.1): a message with a line over the limit
  // comes back as its headers, as one too large does.
  if (d.fallback?.returned === 'nothing') return build(root)
  // A global type may be encoded (RFC 6532 §3.7): a line over the limit goes as base64; 8-bit
  // content as it is, which the delivery makes base64 for a next hop without 8BITMIME.
  const returnedAs = (content: Buffer) => (hasLongLine(content) ? 'base64' : isAscii(content) ? '7bit' : '8bit')
  if (d.originalMessage && failed && global) root.createChild('message/global').setHeader('Content-Transfer-Encoding', returnedAs(d.originalMessage)).setContent(d.originalMessage)
  else if (global) {
    const headers = originalHeadersOf(d.originalHeaders)
    root.createChild('message/global-headers').setHeader('Content-Transfer-Encoding', returnedAs(headers)).setContent(headers)
  }
  else if (d.originalMessage && failed && !hasLongLine(d.originalMessage)) root.createChild('message/rfc822').setHeader('Content-Transfer-Encoding', isAscii(d.originalMessage) ? '7bit' : '8bit').setContent(d.originalMessage)
  else {
    // 7-bit headers as they are: nodemailer quoted-printables a text part given as a Buffer (`<a=3Db@x>`).
    const headers = originalHeadersOf(d.originalHeaders)
    const ascii = isAscii(headers)
    root.createChild('text/rfc822-headers').setHeader('Content-Transfer-Encoding', ascii ? '7bit' : '8bit').setContent(ascii ? headers.toString('latin1') : headers)
  }

  return build(root)
}

const build = (root: MimeNode): Promise<Buffer> => new Promise((resolve, reject) => root.build((err, buf) => (err ? reject(err) : resolve(buf))))

/**
 * A DSN any next hop can take, with whether it has 8-bit content (then it goes with BODY=8BITMIME).
 * One a server without 8BITMIME could not take (RFC 6152 §3: a returned message with 8-bit header
 * fields cannot be made 7-bit) returns the original's headers instead, else nothing of it, saying
 * why: a notification lost for what it quotes would tell the sender nothing. When that does not
 * help either (an internationalized address, say), the DSN as built, for a next hop with SMTPUTF8.
 */
export async function sendableDsn(d: DsnInput): Promise<{ dsn: Buffer; eightBit: boolean }> {
  const dsn = await buildDsn(d)
  const scan = await scan8bit(Readable.from([dsn]))
  if (!scan.unconvertible) return { dsn, eightBit: scan.eightBit }
  for (const returned of d.originalMessage ? (['headers', 'nothing'] as const) : (['nothing'] as const)) {
    const other = await buildDsn({ ...d, originalMessage: undefined, fallback: { returned, why: scan.unconvertible } })
    const again = await scan8bit(Readable.from([other]))
    if (!again.unconvertible) return { dsn: other, eightBit: again.eightBit }
  }
  return { dsn, eightBit: true }
}

/** The reply recorded for recipients an operator bounced (and quoted in the DSN). */
export const ADMIN_BOUNCE_RESPONSE = '5.0.0 Bounced by the administrator'

/** What a DSN message needs from the relay. */
export interface DsnEnv {
  /** Reporting-MTA and the MAILER-DAEMON domain (config `hostname`). */
  reportingMta: string
  /** How long the DSN itself may wait in the queue (`delivery.maxQueueLifetime`). */
  lifetime: number
  /** A queue id for the DSN (core/queue/id.ts). */
  newId: (now?: number) => string
  /** Told when a RET=FULL body cannot be read (the DSN then returns the headers). */
  log?: Pick<Logger, 'warn'>
  /** The plugins' last look at the DSN before it is queued (the `generated` hook: a signature). */
  generated?: (dsn: NewMessage) => Promise<NewMessage>
}

/** Reads a queued message's body (not its headers), whatever kind of StoredBody it is. */
export type BodyReader = (m: QueuedMessage) => Promise<Buffer>

/**
 * The caller's last word once a DSN would go (delivery's untrusted-mail limit, dsn-policy.ts):
 * false drops it. Asked only when the DSN has a recipient and an addressable sender.
 */
export type DsnGate = () => boolean

/** A recipient whose delivery failed for good, as delivery recorded it. */
export interface BouncedRecipient {
  address: string
  /** The remote reply or the local reason. */
  response: string
  /** RFC 3463 status the relay derived, else taken from the response (fallback 5.0.0). */
  status?: string
  remoteHost?: string
  remote: boolean
  /** RCPT parameters (NOTIFY, ORCPT). */
  args?: Args
}

/** The response recorded for a recipient still deferred when its message expires (its bounce says why). */
export function expiredResponse(receivedAt: number, now: number, lastError: string): string {
  return truncateReply(`4.4.7 Message expired after ${formatDuration(now - receivedAt)} in the queue; last error: ${lastError}`)
}

/**
 * A failure DSN to the message's sender for the recipients whose NOTIFY asks for one (RFC 3461; no
 * NOTIFY: yes); none for the null sender. With `readBody`, RET=FULL returns the whole message when
 * it is at most RET_FULL_MAX bytes; without it (or RET=HDRS), the headers.
 */
export async function failureDsn(
  env: DsnEnv,
  m: QueuedMessage,
  failed: BouncedRecipient[],
  opts: { readBody?: BodyReader; allow?: DsnGate; succeeded?: SucceededRecipient[] } = {},
): Promise<NewMessage | undefined> {
  const notify = failed.filter((f) => wantsDsn(f.args, 'FAILURE'))
  // RFC 3461 §4.1 NOTIFY=SUCCESS: delivered here (LMTP) or relayed to a next hop that cannot report it.
  const successes = (opts.succeeded ?? []).filter((s) => wantsDsn(s.args, 'SUCCESS'))
  const to = notify.length || successes.length ? returnAddress(m.sender) : undefined
  if (!to || (opts.allow && !opts.allow())) return undefined
  // A success report returns the headers only (RFC 3461 §4.3).
  const original = opts.readBody && notify.length ? await returnedMessage(env, m, opts.readBody) : undefined
  const entry = (f: BouncedRecipient, fallback: string) => ({
    address: f.address,
    status: f.status ?? statusOf(f.response, fallback),
    remoteHost: f.remoteHost,
    diagnostic: f.response,
    remote: f.remote,
    orcpt: orcptOf(f.args),
  })
  return dsnMessage(env, m, to, {
    action: 'failed',
    originalMessage: original,
    recipients: [...notify.map((f) => entry(f, '5.0.0')), ...successes.map((s) => ({ ...entry(s, '2.0.0'), action: s.action }))],
  })
}

/** A recipient delivered (final delivery, LMTP) or relayed to a next hop without DSN, for NOTIFY=SUCCESS. */
export type SucceededRecipient = BouncedRecipient & { action: 'delivered' | 'relayed' }

/**
 * A delay warning (Action: delayed) to the message's sender for its deferred recipients whose
 * NOTIFY asks for DELAY (no NOTIFY: yes), with Will-Retry-Until at the message's expiry.
 */
export async function delayDsn(env: DsnEnv, c: DelayCandidate, opts: { allow?: DsnGate } = {}): Promise<NewMessage | undefined> {
  const wanted = c.recipients.filter((r) => wantsDsn(r.args, 'DELAY'))
  const to = wanted.length ? returnAddress(c.message.sender) : undefined
  if (!to || (opts.allow && !opts.allow())) return undefined
  return dsnMessage(env, c.message, to, {
    action: 'delayed',
    willRetryUntil: new Date(c.message.expiresAt),
    recipients: wanted.map((r) => {
      const response = r.lastResponse ?? '4.0.0 Delivery not yet attempted'
      return {
        address: r.address,
        status: delayStatus(response),
        remoteHost: r.remoteHost,
        diagnostic: response,
        remote: /^\d{3}[ -]/.test(response),
        orcpt: orcptOf(r.args),
        // Not attempted yet: no date of an attempt (RFC 3464 §2.3.7: the field is optional).
        lastAttemptAt: r.lastResponse === undefined ? null : r.lastAttemptAt === undefined ? undefined : new Date(r.lastAttemptAt),
      }
    }),
  })
}

/**
 * A delayed recipient's status: the reply's detail in class 4 (a 552 5.2.2 taken as temporary is
 * 4.2.2, as Postfix's soft bounce says it); a connection refused or unreachable 4.4.1, one that
 * failed or timed out 4.4.2 (RFC 3463); else 4.0.0.
 */
function delayStatus(response: string): string {
  const status = statusOf(response, '')
  if (status) return status.startsWith('4.') ? status : `4${status.slice(1)}`
  if (/\b(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|EHOSTDOWN)\b/.test(response)) return '4.4.1'
  if (/\b(ETIMEDOUT|ECONNRESET|EPIPE)\b|connection lost|timed? ?out/i.test(response)) return '4.4.2'
  return '4.0.0'
}

/** RET=FULL: the whole message when it is small enough and readable, else undefined (headers only). */
async function returnedMessage(env: DsnEnv, m: QueuedMessage, readBody: BodyReader): Promise<Buffer | undefined> {
  if (retOf(m.senderArgs) !== 'FULL' || m.size > RET_FULL_MAX) return undefined
  try {
    const body = 'inline' in m.body ? m.body.inline : await readBody(m)
    return Buffer.concat([m.headers, body])
  } catch (err) {
    env.log?.warn({ err, queueId: m.id }, 'could not read the message for RET=FULL; returning its headers')
    return undefined
  }
}

/** Where a DSN for the message goes: its sender, unless that is the null sender (or not an address). */
function returnAddress(sender: string): { address: string; domain: string } | undefined {
  const parsed = sender === '' ? undefined : parseAddress(sender)
  return parsed ? { address: sender, domain: parsed.domain } : undefined
}

type DsnSource = Pick<QueuedMessage, 'id' | 'sender' | 'senderArgs' | 'receivedAt' | 'headers'>

/** A DSN from the null sender to `to` (the message's sender), as a message to queue (meta.dsnFor: the message). */
async function dsnMessage(env: DsnEnv, m: DsnSource, to: { address: string; domain: string }, d: Pick<DsnInput, 'action' | 'recipients' | 'originalMessage' | 'willRetryUntil'>): Promise<NewMessage> {
  const { dsn, eightBit } = await sendableDsn({
    ...d,
    reportingMta: env.reportingMta,
    queueId: m.id,
    sender: m.sender,
    arrivalDate: new Date(m.receivedAt),
    originalHeaders: m.headers,
    envid: envidOf(m.senderArgs),
    international: m.senderArgs !== undefined && 'SMTPUTF8' in m.senderArgs,
  })
  const split = dsn.indexOf('\r\n\r\n')
  const headers = dsn.subarray(0, split + 2)
  const now = Date.now()
  const built: NewMessage = {
    id: env.newId(now),
    sender: '',
    ...(eightBit ? { senderArgs: { BODY: '8BITMIME' } } : {}),
    recipients: [to],
    headers,
    body: { inline: dsn.subarray(split + 2) },
    size: dsn.length,
    messageId: /^Message-ID:\s*(.+)$/im.exec(headers.toString('latin1'))?.[1]?.trim(),
    receivedAt: now,
    expiresAt: now + env.lifetime,
    meta: { dsnFor: m.id },
  }
  return env.generated ? env.generated(built) : built
}
