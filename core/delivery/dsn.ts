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
  reportingMta: string
  queueId: string
  sender: string
  arrivalDate: Date
  originalHeaders: Buffer
  envid?: string
  recipients: FailedRecipient[]
}

/** Pulls the enhanced status code out of an SMTP reply, else derives one from the basic code. */
export function statusOf(response: string, fallback: string): string {
  const enhanced = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(response)
  if (enhanced) return enhanced[1]!
  const basic = /^([45])\d\d\b/.exec(response)
  return basic ? `${basic[1]}.0.0` : fallback
}

const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ').trim()

/** An RFC 3464 delivery status notification: multipart/report with the original headers. */
export async function buildDsn(d: DsnInput): Promise<Buffer> {
  const root = new MimeNode('multipart/report; report-type=delivery-status', { hostname: d.reportingMta })
  root.setHeader({
    From: `Mail Delivery System <MAILER-DAEMON@${d.reportingMta}>`,
    To: d.sender,
    Subject: 'Undelivered Mail Returned to Sender',
    'Auto-Submitted': 'auto-replied',
    Date: new Date(),
  })

  const text = [
    `This is the mail system at host ${d.reportingMta}.`,
    '',
    "I'm sorry to have to inform you that your message could not be delivered to one or more recipients.",
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
    fields.push(`Final-Recipient: rfc822; ${r.address}`, 'Action: failed', `Status: ${r.status}`)
    if (r.remoteHost) fields.push(`Remote-MTA: dns; ${r.remoteHost.replace(/\[.*$/, '')}`)
    fields.push(`Diagnostic-Code: ${r.remote ? 'smtp' : 'x-local'}; ${oneLine(r.diagnostic)}`)
    fields.push(`Last-Attempt-Date: ${new Date().toUTCString()}`)
  }
  root.createChild('message/delivery-status').setHeader('Content-Transfer-Encoding', '7bit').setContent(fields.join('\r\n') + '\r\n')
  root.createChild('text/rfc822-headers').setHeader('Content-Transfer-Encoding', '8bit').setContent(d.originalHeaders)

  return new Promise((resolve, reject) => root.build((err, buf) => (err ? reject(err) : resolve(buf))))
}
