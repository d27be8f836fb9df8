// The fields and text of a DSN as RFC 3464 writes them: one-line diagnostics, RFC 6533's escapes
// for internationalized addresses, and header-like fields folded within the line limit.
import { foldLongLines, MAX_LINE_OCTETS as MAX_LINE } from './headers.js'
import { REPLY_MAX, truncateReply } from './reply.js'
import { oneLine } from './dsn-params.js'

/**
 * A diagnostic as a DSN quotes it: one line, at most REPLY_MAX characters. Delivery records replies
 * bounded already (core/mail/reply.ts); this holds for older queue entries and other callers too.
 */
export const diagnosticOf = (s: string) => truncateReply(oneLine(s.length > REPLY_MAX * 4 ? s.slice(0, REPLY_MAX * 4) : s))

/** RFC 6533 §3 EmbeddedUnicodeChar: each non-ASCII character as \x{HEX}, which a 7-bit part can carry. */
const escaped = (c: string) => `\\x{${c.codePointAt(0)!.toString(16).toUpperCase()}}`
export const unicodeEscaped = (s: string) => s.replace(/[^\x00-\x7f]/gu, escaped)

/**
 * A Final-Recipient value: `rfc822; a@b`, or for an internationalized address (RFC 6531) the
 * `utf-8` type with RFC 6533's utf-8-addr-xtext (non-ASCII, space, '+', '=' and '\' escaped).
 */
export const finalRecipient = (address: string) =>
  /[^\x00-\x7f]/.test(address) ? `utf-8; ${address.replace(/[^\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]/gu, escaped)}` : `rfc822; ${address}`

/** The width a folded field aims at (RFC 5322 §2.1.1: lines SHOULD be at most 78 characters). */
const FOLD_WIDTH = 78

const octets = (s: string) => Buffer.byteLength(s, 'utf8')

/**
 * A header-like field (RFC 5322 §2.2.3; RFC 3464 fields are header-like) of at most MAX_LINE octets
 * as it is; a longer one folded at spaces into lines of about FOLD_WIDTH, a run without spaces
 * longer than a line broken where it must be (a folding space appears there when it is unfolded).
 */
export function foldField(line: string): string {
  if (octets(line) <= MAX_LINE) return line
  const out: string[] = []
  let current = ''
  // Each word after the first keeps its leading space: a line that starts with one is a folded line.
  for (let word of line.split(/(?= )/)) {
    if (current.trim() && octets(current) + octets(word) > FOLD_WIDTH) {
      out.push(current)
      current = ''
    }
    // A word too long for any line: as much of it as fits, the rest on the next (folded) line.
    while (octets(current) + octets(word) > MAX_LINE) {
      const room = MAX_LINE - octets(current)
      let n = 0
      for (let used = 0; n < word.length; ) {
        const step = word.codePointAt(n)! > 0xffff ? 2 : 1
        const size = octets(word.slice(n, n + step))
        if (used + size > room) break
        used += size
        n += step
      }
      out.push(current + word.slice(0, n))
      current = ''
      word = ` ${word.slice(n)}`
    }
    current += word
  }
  if (current) out.push(current)
  return out.join('\r\n')
}

/** Whether some line of `buf` is longer than MAX_LINE octets. */
export function hasLongLine(buf: Buffer): boolean {
  let start = 0
  for (;;) {
    const lf = buf.indexOf(0x0a, start)
    const end = lf === -1 ? buf.length : lf
    const len = end - start - (end > start && buf[end - 1] === 0x0d ? 1 : 0)
    if (len > MAX_LINE) return true
    if (lf === -1) return false
    start = lf + 1
  }
}

/** The original headers as a DSN quotes them: every line within MAX_LINE octets (long fields folded). */
export function originalHeadersOf(headers: Buffer): Buffer {
  if (!hasLongLine(headers)) return headers
  // latin1 keeps every byte as it was (folding only adds CRLF and spaces).
  return Buffer.from(foldLongLines(headers.toString('latin1')), 'latin1')
}
