// What goes on MAIL FROM and RCPT TO beyond what nodemailer puts there: SMTPUTF8 whenever the message
// needs it, and each recipient's own NOTIFY and ORCPT (RFC 3461 §4.1, §4.2), written into nodemailer's
// commands as it sends them (core/delivery/smtp-session.ts wires this into every connection).
import type SMTPConnection from 'nodemailer/lib/smtp-connection'

/** A recipient's DSN parameters as passed on (core/mail/dsn-params.ts relayDsn). */
export interface RecipientDsn {
  notify?: string
  orcpt?: string
}

/** What the transaction in progress needs (a Session holds these). */
export interface EnvelopeNeeds {
  /** SMTPUTF8 on MAIL FROM. */
  smtpUtf8?: boolean
  /** Each recipient's NOTIFY and ORCPT, by address; used when the server offers DSN. */
  rcptDsn?: Map<string, RecipientDsn>
}

interface Internals {
  _sendCommand?: (str: string, logStr?: string) => unknown
  _sendRcpt?: (recipient: string, callback: unknown) => unknown
  _envelope?: { dsn?: { notify?: string | null; orcpt?: string | null } | null }
}

export function addEnvelopeParams(conn: SMTPConnection, needs: EnvelopeNeeds): void {
  const c = conn as unknown as Internals
  // nodemailer adds SMTPUTF8 to MAIL FROM only for non-ASCII addresses; RFC 6531 wants it
  // whenever the message needs it (the client said SMTPUTF8: UTF-8 header fields).
  const sendCommand = c._sendCommand
  if (typeof sendCommand === 'function') {
    c._sendCommand = function (this: unknown, str, logStr) {
      const line = needs.smtpUtf8 && /^MAIL FROM:<[^>]*>/i.test(str) && !/ SMTPUTF8\b/i.test(str) ? `${str} SMTPUTF8` : str
      return sendCommand.call(this, line, logStr)
    }
  }
  // nodemailer writes the envelope's one NOTIFY and ORCPT on every RCPT (and only when the server
  // offers DSN): set to this recipient's own just before its RCPT is written, so recipients with
  // different parameters still share one transaction and one copy of the message.
  const sendRcpt = c._sendRcpt
  if (typeof sendRcpt !== 'function') throw new Error('nodemailer changed: SMTPConnection#_sendRcpt is gone (core/delivery/envelope-params.ts)')
  c._sendRcpt = function (this: Internals, recipient, callback) {
    const dsn = this._envelope?.dsn
    if (dsn) {
      const own = needs.rcptDsn?.get(recipient)
      dsn.notify = own?.notify ?? null
      dsn.orcpt = own?.orcpt ?? null
    }
    return sendRcpt.call(this, recipient, callback)
  }
}
