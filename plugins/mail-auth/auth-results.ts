// Authentication-Results (RFC 8601): reading the authserv-id of incoming fields, so that forged
// ones claiming this relay's id can be removed (§5), and writing this relay's own field.
import type { MessageHeaders } from '../../core/index.js'

/**
 * The authserv-id an Authentication-Results value starts with (RFC 8601 §2.2:
 * `[CFWS] authserv-id [CFWS authres-version] ( no-result / 1*resinfo ) [CFWS] CRLF`), unquoted;
 * undefined when there is none. Comments may stand before and after it.
 */
export function authservIdOf(value: string): string | undefined {
  let i = afterCfws(value)
  if (value[i] === '"') {
    let out = ''
    for (i++; i < value.length && value[i] !== '"'; i++) {
      if (value[i] === '\\') i++
      if (i < value.length) out += value[i]
    }
    return out.trim() || undefined
  }
  ID.lastIndex = i
  return ID.exec(value)?.[0]
}

/** Where the white space and comments at the start of `value` end. */
function afterCfws(value: string): number {
  let i = 0
  for (;;) {
    while (i < value.length && WSP_OR_EOL.includes(value[i]!)) i++
    if (value[i] !== '(') return i
    // A comment, possibly nested, with quoted-pairs.
    let depth = 0
    for (; i < value.length; i++) {
      const c = value[i]!
      if (c === '\\') i++
      else if (c === '(') depth++
      else if (c === ')' && --depth === 0) {
        i++
        break
      }
    }
  }
}

const WSP_OR_EOL = ' \t\r\n'
/** An unquoted authserv-id, matched where the CFWS before it ends (sticky: no copy of the rest). */
const ID = /[^\s;()"]+/y
const NAME = 'authentication-results'

/**
 * Removes every Authentication-Results field whose authserv-id is one of `ids` (compared
 * case-insensitively, with or without a trailing dot; a version suffix or comments do not matter). Fields of other ids, and
 * ARC-Authentication-Results, stay. Returns the removed values.
 */
export function stripForged(headers: MessageHeaders, ids: string[]): string[] {
  // A host name with its root dot (`mx.example.com.`) names the same host: readers take it for ours.
  // (Trimmed by hand: /\.+$/ is quadratic in a long run of dots inside the id, which the message chose.)
  const key = (id: string) => {
    let end = id.length
    while (end > 0 && id[end - 1] === '.') end--
    return id.slice(0, end).toLowerCase()
  }
  const ours = new Set(ids.map(key))
  const removed: string[] = []
  const keep = headers.fields.filter((field) => {
    // Lower-casing changes a string's length only for U+0130, to no ASCII: other lengths never match.
    if (field.name.length !== NAME.length || field.name.toLowerCase() !== NAME) return true
    const value = unfold(field.raw.slice(field.raw.indexOf(':') + 1))
    const id = authservIdOf(value)
    if (id === undefined || !ours.has(key(id))) return true
    removed.push(value.trim())
    return false
  })
  headers.fields = keep
  return removed
}

/** A raw value (latin1 bytes) UTF-8 decoded and unfolded; ASCII (the usual case) needs no decoding. */
function unfold(raw: string): string {
  const value = /[^\x00-\x7f]/.test(raw) ? Buffer.from(raw, 'latin1').toString('utf8') : raw
  const crlf = value.indexOf('\r\n')
  return crlf >= 0 && crlf < value.length - 2 ? value.replace(/\r\n(?=[ \t])/g, '') : value
}

/** Folds a long result entry at spaces so no line grows past ~78 characters where it can be helped. */
function fold(entry: string): string {
  const words = entry.split(' ')
  const lines: string[] = []
  let line = ''
  for (const word of words) {
    if (line && line.length + 1 + word.length > 76) {
      lines.push(line)
      line = word
    } else line = line ? `${line} ${word}` : word
  }
  if (line) lines.push(line)
  return lines.join('\r\n\t  ')
}

/** The Authentication-Results value: `authserv-id;` then one result entry per folded line. */
export function formatAuthResults(authservId: string, entries: string[]): string {
  if (!entries.length) return `${authservId}; none`
  return `${authservId};\r\n\t${entries.map(fold).join(';\r\n\t')}`
}
