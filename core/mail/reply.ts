// The bounded, one-line form of a remote SMTP/LMTP reply, as the relay keeps it (Postfix keeps a
// few hundred bytes to about 2 KB of one): multi-line replies joined with a space (the code of each
// continuation line dropped), control characters removed, whitespace runs collapsed, at most
// REPLY_MAX characters. Delivery applies it to every result of an attempt (core/delivery/attempt.ts),
// so the queue, events, logs, the suppression list and DSNs all get this form.

/** The most characters of a reply (or a local reason quoting one) the relay keeps. */
export const REPLY_MAX = 1000

/** Ends a reply cut at REPLY_MAX (ASCII: it goes into 7-bit DSN parts). */
export const TRUNCATED = ' [truncated]'

// C0 and C1 control characters, DEL, and the Unicode line and paragraph separators.
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]+/g

/** A reply line's basic code, its separator and its enhanced status code, if it has them. */
const CODES = /^([2-5]\d\d)([ -]|$)(?:\s*([245]\.\d{1,3}\.\d{1,3})(?=\s|$))?/

/**
 * `text` (a reply as nodemailer hands it: lines joined by newlines, or a local reason quoting one)
 * on one line. A continuation line that repeats the first line's code loses it (and the enhanced
 * code too when it is the same), so `250-a` / `250 b` becomes `250 a b`.
 */
export function oneLineReply(text: string, max = REPLY_MAX): string {
  // Never look at more than a few times the cap: the rest is cut anyway.
  const head = text.length > max * 4 + 1024 ? text.slice(0, max * 4 + 1024) : text
  const lines = head.split(/\r\n|\r|\n/)
  let joined: string
  if (lines.length === 1) joined = head
  else {
    const first = CODES.exec(lines[0]!.trimStart())
    const out: string[] = []
    for (const [i, raw] of lines.entries()) {
      const line = raw.trimStart()
      if (i === 0) {
        // `250-first` becomes `250 first`: the reply as a whole ends with the code and a space.
        out.push(first && first[2] === '-' ? `${first[1]} ${line.slice(4)}` : line)
        continue
      }
      const m = first ? CODES.exec(line) : null
      if (m && m[1] === first![1]) {
        const status = m[3] && m[3] === first![3] ? m[0].length : m[1]!.length + m[2]!.length
        out.push(line.slice(status))
      } else out.push(line)
    }
    joined = out.join(' ')
  }
  return truncateReply(joined.replace(CONTROL, ' ').replace(/\s+/g, ' ').trim(), max)
}

/** `s` cut to at most `max` characters, ending with TRUNCATED when it was cut. */
export function truncateReply(s: string, max = REPLY_MAX): string {
  if (s.length <= max) return s
  let end = Math.max(0, max - TRUNCATED.length)
  // Never half of a surrogate pair.
  const code = s.charCodeAt(end - 1)
  if (code >= 0xd800 && code <= 0xdbff) end--
  return s.slice(0, end).trimEnd() + TRUNCATED
}
