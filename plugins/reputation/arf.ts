// Feedback-loop reports (ARF, RFC 5965): a multipart/report; report-type=feedback-report with a
// human-readable part, a message/feedback-report part (machine-readable fields) and the original
// message (message/rfc822) or its header section (text/rfc822-headers). Reports come from outside
// and are often sloppy, so the parser is lenient where that loses nothing, and returns an error
// (never throws) where the report cannot be used.

/** What a feedback report says, as far as this relay needs it. */
export interface FeedbackReport {
  /** abuse, fraud, virus, other, not-spam, auth-failure … (lower case). */
  feedbackType: string
  userAgent?: string
  version?: string
  /** The envelope sender of the original (without angle brackets). */
  originalMailFrom?: string
  /** The complaining recipients (often redacted in the local part; the domain stays). */
  originalRcptTo: string[]
  /** Arrival-Date (or the older Received-Date), epoch ms. */
  arrivalDate?: number
  sourceIp?: string
  reportedDomain: string[]
  /** The original message, from the report's third part; absent when the report has none. */
  original?: {
    /** Without angle brackets. */
    messageId?: string
    /** Queue ids this relay wrote into the original's Received headers, newest first. */
    queueIds: string[]
    from?: string
    subject?: string
    /** The third part held only the header section (text/rfc822-headers). */
    headersOnly: boolean
  }
  /** Things that were wrong but did not stop the report from being used. */
  notes: string[]
}

export type ArfResult = { ok: true; report: FeedbackReport } | { ok: false; error: string }

/** A queue id (core/queue/id.ts): 16 characters of a vowel-free base 31 alphabet. */
const QUEUE_ID = /^[0-9BCDFGHJ-NP-TV-Z]{16}$/

interface Part {
  headers: Header[]
  body: string
}
interface Header {
  name: string
  value: string
}

/**
 * Parses a feedback report (the whole message as received: header section and body). `hostname`
 * is this relay's host name: Received headers written `by <hostname>` count as ours, as do those
 * that carry the `(Relay)` mark.
 */
export function parseArf(raw: Buffer | string, opts: { hostname?: string } = {}): ArfResult {
  try {
    return parse(unixLines(typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw), opts)
  } catch (err) {
    // The parser guards its inputs; this is the last line of defence for the SMTP session.
    return { ok: false, error: `malformed report: ${(err as Error).message}` }
  }
}

function parse(text: string, opts: { hostname?: string }): ArfResult {
  const top = splitPart(text)
  const type = contentType(top.headers)
  if (!type) return { ok: false, error: 'not a feedback report: the message has no Content-Type (an ARF report is multipart/report; report-type=feedback-report)' }
  if (type.type !== 'multipart/report') {
    return { ok: false, error: `not a feedback report: Content-Type is ${type.type} (an ARF report is multipart/report; report-type=feedback-report)` }
  }
  const reportType = type.params['report-type']?.toLowerCase()
  if (reportType && reportType !== 'feedback-report') {
    return { ok: false, error: `not a feedback report: report-type=${reportType}${reportType === 'delivery-status' ? ' (a bounce)' : ''}` }
  }
  const boundary = type.params['boundary']
  if (!boundary) return { ok: false, error: 'malformed report: multipart/report without a boundary parameter' }
  const parts = splitMultipart(top.body, boundary)
  if (!parts.length) return { ok: false, error: `malformed report: no MIME parts found for boundary "${boundary}"` }

  const notes: string[] = []
  if (!reportType) notes.push('report-type parameter missing')
  const typed = parts.map((p) => ({ part: p, type: contentType(p.headers)?.type ?? 'text/plain' }))
  const fbIndex = typed.findIndex((t) => t.type === 'message/feedback-report')
  if (fbIndex < 0) return { ok: false, error: 'malformed report: no message/feedback-report part' }
  const fields = parseFields(decodeBody(typed[fbIndex]!.part))

  const feedbackType = first(fields, 'feedback-type')?.toLowerCase()
  if (!feedbackType) return { ok: false, error: 'malformed report: the message/feedback-report part has no Feedback-Type field' }
  if (!/^[a-z0-9-]+$/.test(feedbackType)) return { ok: false, error: `malformed report: Feedback-Type "${feedbackType}" is not a token` }

  const report: FeedbackReport = {
    feedbackType,
    userAgent: first(fields, 'user-agent'),
    version: first(fields, 'version'),
    originalMailFrom: stripAngles(first(fields, 'original-mail-from')),
    originalRcptTo: all(fields, 'original-rcpt-to').map((v) => stripAngles(v)!).filter(Boolean),
    arrivalDate: dateOf(first(fields, 'arrival-date') ?? first(fields, 'received-date')),
    sourceIp: first(fields, 'source-ip'),
    reportedDomain: all(fields, 'reported-domain'),
    notes,
  }
  if (!report.userAgent) notes.push('User-Agent missing')
  if (!report.version) notes.push('Version missing')

  // The original comes after the feedback part (RFC 5965 §2); some senders omit its Content-Type.
  const after = typed.slice(fbIndex + 1)
  const original =
    after.find((t) => ORIGINAL_TYPES.has(t.type)) ??
    after.find((t) => t.type === 'text/plain' && looksLikeHeaders(decodeBody(t.part)))
  if (original) {
    const headersOnly = original.type !== 'message/rfc822'
    const headers = splitPart(decodeBody(original.part)).headers
    const msgId = stripAngles(headerValue(headers, 'message-id'))
    report.original = {
      messageId: msgId || undefined,
      queueIds: ourQueueIds(headers.filter((h) => h.name === 'received').map((h) => h.value), opts.hostname),
      from: headerValue(headers, 'from'),
      subject: headerValue(headers, 'subject'),
      headersOnly,
    }
  } else {
    notes.push('the original message (third part) is missing')
    if (!report.originalMailFrom) {
      return { ok: false, error: 'malformed report: neither the original message (third part) nor Original-Mail-From: it cannot be matched to a sender' }
    }
  }
  return { ok: true, report }
}

const ORIGINAL_TYPES = new Set(['message/rfc822', 'text/rfc822-headers', 'text/rfc822-header', 'message/rfc822-headers', 'message/partial'])

/** Queue ids from Received fields this relay wrote: `by <host> (Relay) with <proto> id <queueId>`. */
function ourQueueIds(received: string[], hostname?: string): string[] {
  const ids: string[] = []
  const host = hostname?.toLowerCase()
  for (const value of received) {
    const m = /\bby\s+(\S+)\s+(\(Relay\)\s+)?(?:with\s+\S+\s+)?id\s+([^\s;]+)/i.exec(value)
    if (!m) continue
    const ours = Boolean(m[2]) || (host !== undefined && m[1]!.toLowerCase() === host)
    if (ours && QUEUE_ID.test(m[3]!) && !ids.includes(m[3]!)) ids.push(m[3]!)
  }
  return ids
}

/**
 * Most lines of one part's header section read, and continuation lines kept per field (the core's
 * limits for a message's own header section: the original inside a report is body text to the
 * core, so nothing bounded it). A report folding one field over 350,000 lines held the event
 * loop for 200 ms; past these, lines are not read. Real originals come nowhere near.
 */
const MAX_PART_HEADER_LINES = 10_000
const MAX_FIELD_LINES = 1_000

/** Splits a header section from its body at the first empty line; headers are unfolded, names lower case. */
function splitPart(text: string): Part {
  const end = text.startsWith('\n') ? 0 : text.indexOf('\n\n')
  const head = end < 0 ? text : text.slice(0, end)
  const body = end < 0 ? '' : text.slice(end + (end === 0 ? 1 : 2))
  const headers: Header[] = []
  let folds = 0
  for (let at = 0, n = 0; at < head.length && n < MAX_PART_HEADER_LINES; n++) {
    const nl = head.indexOf('\n', at)
    const line = head.slice(at, nl < 0 ? head.length : nl)
    at = nl < 0 ? head.length : nl + 1
    if (!line) continue
    if ((line[0] === ' ' || line[0] === '\t') && headers.length) {
      if (++folds <= MAX_FIELD_LINES) headers[headers.length - 1]!.value += ' ' + line.trim()
      continue
    }
    const colon = line.indexOf(':')
    // A line that is no field (mbox "From " lines, garbage) is skipped, not fatal.
    if (colon <= 0 || !/^[\x21-\x39\x3b-\x7e]+$/.test(line.slice(0, colon).trimEnd())) continue
    headers.push({ name: line.slice(0, colon).trim().toLowerCase(), value: line.slice(colon + 1).trim() })
    folds = 0
  }
  return { headers, body }
}

/**
 * The parts between boundary lines; a missing close delimiter (a cut-off report) ends the last part.
 * Found by searching for the delimiter, not by splitting the body into lines (2 MB of short lines).
 */
function splitMultipart(body: string, boundary: string): Part[] {
  const delimiter = '--' + boundary
  const parts: Part[] = []
  // Where the current part's text starts; -1 before the first delimiter line (the preamble).
  let start = -1
  for (let at = body.indexOf(delimiter); at >= 0; at = body.indexOf(delimiter, at + 1)) {
    if (at > 0 && body[at - 1] !== '\n') continue
    const nl = body.indexOf('\n', at)
    const eol = nl < 0 ? body.length : nl
    const rest = body.slice(at + delimiter.length, eol).trimEnd()
    if (rest !== '' && rest !== '--') continue
    if (start >= 0) parts.push(splitPart(body.slice(start, Math.max(start, at - 1))))
    if (rest === '--') return parts
    start = eol + 1
  }
  if (start >= 0) parts.push(splitPart(body.slice(start)))
  return parts
}

/** The Content-Type's type (lower case) and parameters (names lower case, values unquoted). */
function contentType(headers: Header[]): { type: string; params: Record<string, string> } | undefined {
  const value = headerValue(headers, 'content-type')
  if (!value) return undefined
  const [type, ...rest] = splitParams(value)
  const params: Record<string, string> = {}
  for (const p of rest) {
    const eq = p.indexOf('=')
    if (eq <= 0) continue
    let v = p.slice(eq + 1).trim()
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1).replace(/\\(.)/g, '$1')
    params[p.slice(0, eq).trim().toLowerCase()] = v
  }
  return { type: type!.trim().toLowerCase(), params }
}

/** Splits at semicolons outside quoted strings. */
function splitParams(value: string): string[] {
  const out: string[] = []
  let cur = ''
  let quoted = false
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!
    if (c === '\\' && quoted && i + 1 < value.length) {
      cur += c + value[++i]
      continue
    }
    if (c === '"') quoted = !quoted
    if (c === ';' && !quoted) {
      out.push(cur)
      cur = ''
      continue
    }
    cur += c
  }
  out.push(cur)
  return out
}

/** A part's body with its Content-Transfer-Encoding undone (some senders base64 the original). */
function decodeBody(part: Part): string {
  const cte = headerValue(part.headers, 'content-transfer-encoding')?.toLowerCase()
  // Only a part's header section is read (the fields, the original's header): its start is enough.
  const body = part.body.length > MAX_DECODED ? part.body.slice(0, MAX_DECODED) : part.body
  // Node's base64 decoder skips what is not base64 (line breaks, spaces).
  if (cte === 'base64') return unixLines(Buffer.from(body, 'base64'))
  if (cte === 'quoted-printable') return decodeQuotedPrintable(body)
  return body
}

/** How much of a part's encoded body is decoded. */
const MAX_DECODED = 1024 * 1024

/**
 * CRLF and lone CR as LF, as Latin-1 text, in one pass over the bytes: a regular expression's
 * replace took 55–130 ms for 2 MB of short lines (a cost per match), on the event loop.
 */
function unixLines(raw: Buffer): string {
  if (!raw.includes(13)) return raw.toString('latin1')
  const out = Buffer.allocUnsafe(raw.length)
  let n = 0
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i]!
    if (b !== 13) out[n++] = b
    else {
      out[n++] = 10
      if (raw[i + 1] === 10) i++
    }
  }
  return out.toString('latin1', 0, n)
}

const hexValue = (c: number) => (c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : -1)

/** Quoted-printable (soft line breaks dropped, =XX decoded; anything else as it is), in one pass. */
function decodeQuotedPrintable(text: string): string {
  const raw = Buffer.from(text, 'latin1')
  const out = Buffer.allocUnsafe(raw.length)
  let n = 0
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i]!
    if (b === 61 /* = */) {
      if (raw[i + 1] === 10) {
        i++
        continue
      }
      const hi = hexValue(raw[i + 1] ?? -1)
      const lo = hexValue(raw[i + 2] ?? -1)
      if (hi >= 0 && lo >= 0) {
        out[n++] = hi * 16 + lo
        i += 2
        continue
      }
    }
    out[n++] = b
  }
  return out.toString('latin1', 0, n)
}

/** The fields of a message/feedback-report part (header syntax). */
function parseFields(body: string): Header[] {
  // Some senders put a blank line first, or end the fields with one: the fields are what is there.
  return splitPart(body.replace(/^\n+/, '')).headers
}

function looksLikeHeaders(text: string): boolean {
  const { headers } = splitPart(text)
  return headers.some((h) => h.name === 'received' || h.name === 'message-id')
}

function headerValue(headers: Header[], name: string): string | undefined {
  return headers.find((h) => h.name === name)?.value
}
const first = headerValue
function all(headers: Header[], name: string): string[] {
  return headers.filter((h) => h.name === name).map((h) => h.value).filter(Boolean)
}

function stripAngles(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  const m = /<([^>]*)>/.exec(value)
  return (m ? m[1]! : value).trim()
}

function dateOf(value: string | undefined): number | undefined {
  if (!value) return undefined
  const t = Date.parse(value)
  return Number.isNaN(t) ? undefined : t
}
