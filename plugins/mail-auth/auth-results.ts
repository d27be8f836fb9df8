// Authentication-Results (RFC 8601): reading the authserv-id of incoming fields, so that forged
// ones claiming this relay's id can be removed (§5), and writing this relay's own field.
import type { MessageHeaders } from '../../core/index.js'

/**
 * The authserv-id an Authentication-Results value starts with (RFC 8601 §2.2:
 * `[CFWS] authserv-id [CFWS authres-version] ( no-result / 1*resinfo ) [CFWS] CRLF`), unquoted;
 * undefined when there is none. Comments may stand before and after it.
 */
export function authservIdOf(value: string): string | undefined {
  let i = 0
  const skipCfws = () => {
    for (;;) {
      while (i < value.length && /[ \t\r\n]/.test(value[i]!)) i++
      if (value[i] !== '(') return
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
  skipCfws()
  if (value[i] === '"') {
    let out = ''
    for (i++; i < value.length && value[i] !== '"'; i++) {
      if (value[i] === '\\') i++
      if (i < value.length) out += value[i]
    }
    return out.trim() || undefined
  }
  const m = /^[^\s;()"]+/.exec(value.slice(i))
  return m ? m[0] : undefined
}

/**
 * Removes every Authentication-Results field whose authserv-id is one of `ids` (compared
 * case-insensitively; a version suffix or comments do not matter). Fields of other ids, and
 * ARC-Authentication-Results, stay. Returns the removed values.
 */
export function stripForged(headers: MessageHeaders, ids: string[]): string[] {
  const ours = new Set(ids.map((id) => id.toLowerCase()))
  const removed: string[] = []
  const keep = headers.fields.filter((field) => {
    if (field.name.toLowerCase() !== 'authentication-results') return true
    const value = Buffer.from(field.raw.slice(field.raw.indexOf(':') + 1), 'latin1').toString('utf8').replace(/\r\n(?=[ \t])/g, '')
    const id = authservIdOf(value)
    if (id === undefined || !ours.has(id.toLowerCase())) return true
    removed.push(value.trim())
    return false
  })
  headers.fields = keep
  return removed
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
