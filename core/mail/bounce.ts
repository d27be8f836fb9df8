import MimeNode from 'nodemailer/lib/mime-node'

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
}

export interface DsnInput {
  /** 'failed' (a bounce, the default) or 'delayed' (a warning: still being retried). */
  action?: 'failed' | 'delayed'
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
}

// Every control character, NUL included (a remote reply or an xtext-decoded ENVID/ORCPT may carry one).
const oneLine = (s: string) => s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim()

/** RET=FULL returns the message only up to this size; larger ones get their headers (as RET=HDRS). */
export const RET_FULL_MAX = 1024 * 1024

type Args = Record<string, string | boolean> | undefined

/** NOTIFY of a recipient (RFC 3461 §4.1), upper-cased; undefined when the client gave none. */
export function notifyOf(args: Args): string[] | undefined {
  const v = args?.NOTIFY
  return typeof v === 'string' && v ? v.toUpperCase().split(',').map((s) => s.trim()) : undefined
}

/**
 * Whether the sender asked for this kind of DSN for a recipient: NOTIFY=NEVER never; a NOTIFY list
 * only for what it names; no NOTIFY: failures and delays (RFC 3461 §4.1, the usual default).
 */
export function wantsDsn(args: Args, kind: 'FAILURE' | 'DELAY' | 'SUCCESS'): boolean {
  const notify = notifyOf(args)
  if (!notify) return kind !== 'SUCCESS'
  return notify.includes(kind)
}

/** RET of the message: 'FULL' or 'HDRS' (the default). */
export function retOf(senderArgs: Args): 'FULL' | 'HDRS' {
  return typeof senderArgs?.RET === 'string' && senderArgs.RET.toUpperCase() === 'FULL' ? 'FULL' : 'HDRS'
}

/** ENVID of the message, if the client gave one. */
export function envidOf(senderArgs: Args): string | undefined {
  return typeof senderArgs?.ENVID === 'string' && senderArgs.ENVID ? oneLine(senderArgs.ENVID) : undefined
}

/** ORCPT of a recipient (`rfc822;addr`), if the client gave one. */
export function orcptOf(args: Args): string | undefined {
  return typeof args?.ORCPT === 'string' && args.ORCPT ? oneLine(args.ORCPT) : undefined
}

/**
 * The DSN parameters to pass on to the next hop (nodemailer's `send({ dsn })`, used only when the
 * server offers DSN). nodemailer applies NOTIFY and ORCPT to every RCPT of the transaction, so they
 * are passed on only when they hold for all of its recipients: NOTIFY when every recipient gave the
 * same, ORCPT when the transaction has a single recipient. RET and ENVID belong to the message.
 */
export function relayDsn(senderArgs: Args, recipients: { args?: Args }[]): { ret?: string; envid?: string; notify?: string; orcpt?: string } | undefined {
  const out: { ret?: string; envid?: string; notify?: string; orcpt?: string } = {}
  if (typeof senderArgs?.RET === 'string') out.ret = retOf(senderArgs)
  const envid = envidOf(senderArgs)
  if (envid) out.envid = envid
  const notify = recipients.map((r) => notifyOf(r.args)?.join(','))
  if (notify[0] && notify.every((n) => n === notify[0])) out.notify = notify[0]
  const orcpt = recipients.length === 1 ? orcptOf(recipients[0]!.args) : undefined
  if (orcpt) out.orcpt = orcpt
  return Object.keys(out).length ? out : undefined
}

/** Pulls the enhanced status code out of an SMTP reply, else derives one from the basic code. */
export function statusOf(response: string, fallback: string): string {
  const enhanced = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(response)
  if (enhanced) return enhanced[1]!
  const basic = /^([45])\d\d\b/.exec(response)
  return basic ? `${basic[1]}.0.0` : fallback
}

/**
 * An RFC 3464 delivery status notification: multipart/report with the original headers (or, for
 * a failure with RET=FULL, the original message). `action: 'delayed'` makes the warning sent while
 * delivery is still being retried.
 */
export async function buildDsn(d: DsnInput): Promise<Buffer> {
  const delayed = d.action === 'delayed'
  const root = new MimeNode('multipart/report; report-type=delivery-status', { hostname: d.reportingMta })
  root.setHeader({
    From: `Mail Delivery System <MAILER-DAEMON@${d.reportingMta}>`,
    To: d.sender,
    Subject: delayed ? 'Delayed Mail (still being retried)' : 'Undelivered Mail Returned to Sender',
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
    : ["I'm sorry to have to inform you that your message could not be delivered to one or more recipients."]
  const text = [
    `This is the mail system at host ${d.reportingMta}.`,
    '',
    ...intro,
    '',
    ...d.recipients.map((r) => `<${r.address}>: ${r.remoteHost ? `host ${r.remoteHost} said: ` : ''}${oneLine(r.diagnostic)}`),
    '',
  ].join('\r\n')
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
    fields.push(`Final-Recipient: rfc822; ${r.address}`, `Action: ${delayed ? 'delayed' : 'failed'}`, `Status: ${r.status}`)
    if (r.remoteHost) fields.push(`Remote-MTA: dns; ${r.remoteHost.replace(/\[.*$/, '')}`)
    fields.push(`Diagnostic-Code: ${r.remote ? 'smtp' : 'x-local'}; ${oneLine(r.diagnostic)}`)
    fields.push(`Last-Attempt-Date: ${new Date().toUTCString()}`)
    if (delayed && d.willRetryUntil) fields.push(`Will-Retry-Until: ${d.willRetryUntil.toUTCString()}`)
  }
  root.createChild('message/delivery-status').setHeader('Content-Transfer-Encoding', '7bit').setContent(fields.join('\r\n') + '\r\n')
  if (d.originalMessage && !delayed) root.createChild('message/rfc822').setHeader('Content-Transfer-Encoding', '8bit').setContent(d.originalMessage)
  else root.createChild('text/rfc822-headers').setHeader('Content-Transfer-Encoding', '8bit').setContent(d.originalHeaders)

  return new Promise((resolve, reject) => root.build((err, buf) => (err ? reject(err) : resolve(buf))))
}
