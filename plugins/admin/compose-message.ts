// POST /api/inject's `{ from, to, subject, text, headers? }`: a plain-text RFC 5322 message. Header
// values are checked for line breaks (no header injection) and encoded (RFC 2047) when not ASCII;
// the body is 7bit when it can be, else base64.
import crypto from 'node:crypto'
import { AdminError } from './server.js'
import { encodedWords } from '../../core/index.js'

export interface ComposeInput {
  from: string
  to: string[]
  subject: string
  text: string
  headers?: Record<string, string>
}

/** Header names a caller may not set: the body's encoding is the composer's. */
const OWN = new Set(['mime-version', 'content-type', 'content-transfer-encoding'])
const FIELD_NAME = /^[!-9;-~]+$/
const ASCII = /^[\x20-\x7e\t]*$/
/** Address fields stay as they are (UTF-8 addresses are RFC 6532's, not encoded words). */
const ADDRESS_FIELDS = new Set(['from', 'to', 'cc', 'bcc', 'reply-to', 'sender'])

export function composeMessage(m: ComposeInput, hostname: string, now = new Date()): Buffer {
  const fields = new Map<string, [string, string]>()
  const set = (name: string, value: string) => fields.set(name.toLowerCase(), [name, value])
  set('From', m.from)
  set('To', m.to.join(', '))
  set('Subject', m.subject)
  set('Date', now.toUTCString().replace(/GMT$/, '+0000'))
  set('Message-ID', `<${crypto.randomUUID()}@${hostname}>`)
  for (const [name, value] of Object.entries(m.headers ?? {})) {
    if (!FIELD_NAME.test(name)) throw new AdminError(400, `headers: '${name.slice(0, 60)}' is not a header field name`)
    if (OWN.has(name.toLowerCase())) throw new AdminError(400, `headers: ${name} is set by the relay (the text is UTF-8)`)
    set(name, value)
  }
  const lines: string[] = []
  for (const [name, value] of fields.values()) {
    if (/[\r\n]/.test(value)) throw new AdminError(400, `${name === 'Subject' ? 'subject' : `headers.${name}`}: no line breaks in a header field`)
    lines.push(`${name}: ${ASCII.test(value) || ADDRESS_FIELDS.has(name.toLowerCase()) ? value : encodedWords(value, '\r\n ')}`)
  }
  // Text in canonical form (CRLF line ends) before any encoding (RFC 2045 §6.8).
  const body = m.text.replace(/\r\n|\r|\n/g, '\r\n')
  const plain = /^[\x00-\x7f]*$/.test(body) && !body.includes('\0') && body.split('\r\n').every((l) => l.length <= 998)
  lines.push('MIME-Version: 1.0', 'Content-Type: text/plain; charset=utf-8', `Content-Transfer-Encoding: ${plain ? '7bit' : 'base64'}`)
  const encoded = plain ? body : (Buffer.from(body, 'utf8').toString('base64').match(/.{1,76}/g) ?? []).join('\r\n')
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${encoded}${encoded.endsWith('\r\n') ? '' : '\r\n'}`, 'utf8')
}

