// A message's header section, kept as the raw bytes of each field (latin1 strings hold bytes 1:1),
// so that a message passes through byte-identical unless a plugin changes a header.

function toRaw(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1')
}
function fromRaw(raw: string): string {
  return Buffer.from(raw, 'latin1').toString('utf8')
}

/** RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6: the longest line a message may carry, CRLF not counted. */
export const MAX_LINE_OCTETS = 998

/** Where a header line is broken: a new (continuation) line starts at `at`, with a space put in front when `space`. */
export interface LineBreak {
  at: number
  space: boolean
}

const isWsp = (b: number | undefined) => b === 0x20 || b === 0x09

/**
 * The breaks that make the header line `buf[start, end)` (CRLF not included) lines of at most
 * MAX_LINE_OCTETS octets; none for a line that fits. A line is folded before whitespace it
 * already has (unfolding gives the field back unchanged, and relaxed DKIM sees no change) after
 * the field's colon and after some text on the line; a run with no such whitespace is broken with
 * CRLF and a space, never inside a UTF-8 sequence (backed off to its lead byte).
 */
export function headerLineBreaks(buf: Buffer, start: number, end: number): LineBreak[] {
  const breaks: LineBreak[] = []
  let p = start
  let width = 0 // octets the line starting at p has in front of buf[p]: 1 after an inserted space
  while (width + end - p > MAX_LINE_OCTETS) {
    const limit = p + MAX_LINE_OCTETS - width // buf[limit] would be one octet too many
    // Text the break must come after: on a field's first line its name, colon and the value's first word.
    let text = p
    if (p === start && !isWsp(buf[p])) {
      const colon = buf.indexOf(0x3a, p)
      text = colon >= 0 && colon < limit ? colon + 1 : limit
    }
    while (text < limit && isWsp(buf[text])) text++
    let at = limit
    while (at > text && !isWsp(buf[at])) at--
    if (at > text) {
      breaks.push({ at, space: false })
      width = 0
    } else {
      at = limit
      if ((buf[at]! & 0xc0) === 0x80) {
        for (let k = at - 1; k > p && k >= limit - 3; k--) {
          const b = buf[k]!
          if ((b & 0xc0) === 0xc0) {
            if (k + utf8Length(b) > at) at = k
            break
          }
          if ((b & 0xc0) !== 0x80) break
        }
      }
      breaks.push({ at, space: true })
      width = 1
    }
    p = at
  }
  return breaks
}

/** Bytes a UTF-8 sequence with this lead byte has. */
export function utf8Length(lead: number): number {
  return lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2
}

/** A header block or field (latin1 bytes, CRLF line ends) with every line of at most MAX_LINE_OCTETS octets. */
export function foldLongLines(raw: string): string {
  if (raw.length <= MAX_LINE_OCTETS + 2) return raw
  const buf = Buffer.from(raw, 'latin1')
  let out = ''
  let last = 0
  let pos = 0
  while (pos < buf.length) {
    const lf = buf.indexOf(0x0a, pos)
    const eol = lf < 0 ? buf.length : buf[lf - 1] === 0x0d ? lf - 1 : lf
    if (eol - pos > MAX_LINE_OCTETS) {
      for (const b of headerLineBreaks(buf, pos, eol)) {
        out += `${buf.toString('latin1', last, b.at)}\r\n${b.space ? ' ' : ''}`
        last = b.at
      }
    }
    if (lf < 0) break
    pos = lf + 1
  }
  return last ? out + buf.toString('latin1', last) : raw
}

/** Whether `buf[pos, end)` starts with a field name, optional white space and a colon (/^[\x21-\x39\x3b-\x7e]+[ \t]*:/). */
export function isFieldLine(buf: Buffer, pos: number, end: number): boolean {
  let i = pos
  for (; i < end; i++) {
    const b = buf[i]!
    if (b < 0x21 || b > 0x7e || b === 0x3a) break
  }
  if (i === pos) return false
  while (i < end && isWsp(buf[i])) i++
  return i < end && buf[i] === 0x3a
}

/** The header block `buf[0, end)` as latin1 text, folded at `breaks` (headerLineBreaks of its long lines). */
export function foldedText(buf: Buffer, end: number, breaks: LineBreak[]): string {
  if (!breaks.length) return buf.toString('latin1', 0, end)
  let text = ''
  let last = 0
  for (const b of breaks) {
    text += buf.toString('latin1', last, b.at) + (b.space ? '\r\n ' : '\r\n')
    last = b.at
  }
  return text + buf.toString('latin1', last, end)
}

/**
 * A header section as it is read: chunks copied into one buffer that doubles as it fills (up to
 * `cap`), so each byte is copied a bounded number of times however many chunks the header comes
 * in, never all of it again per chunk. A header that fits in the first chunk stays in that chunk.
 */
export class HeaderBytes {
  private buf: Buffer = Buffer.alloc(0)
  private own = false
  private length = 0

  constructor(private readonly cap: number) {}

  push(chunk: Buffer): void {
    if (!this.length) {
      this.buf = chunk
      this.length = chunk.length
      return
    }
    const need = this.length + chunk.length
    if (!this.own || need > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(need, Math.min(this.buf.length * 2, this.cap)))
      this.buf.copy(next, 0, 0, this.length)
      this.buf = next
      this.own = true
    }
    chunk.copy(this.buf, this.length)
    this.length = need
  }

  get bytes(): Buffer {
    return this.buf.subarray(0, this.length)
  }

  /** The bytes from `start` on, copied when that lets the (large) buffer go. */
  rest(start: number): Buffer {
    const rest = this.bytes.subarray(start)
    return this.own ? Buffer.from(rest) : rest
  }
}

export interface HeaderField {
  /** Field name as written. */
  name: string
  /** The whole field as bytes (latin1), folded lines included, ending with CRLF. */
  raw: string
}

/** The header fields of a message, in order. Plugins read and change them at `data` and `queue`. */
export class MessageHeaders {
  fields: HeaderField[]

  constructor(fields: HeaderField[] = []) {
    this.fields = fields
  }

  /** Parses a header block (bytes as latin1, CRLF line ends). */
  static parse(block: string): MessageHeaders {
    // One pass with indexOf: a field is its first line and the lines after it that start with
    // white space, taken as one slice of the block (no per-line split or regex).
    const fields: HeaderField[] = []
    let pos = 0
    while (pos < block.length) {
      const start = pos
      pos = lineEnd(block, pos)
      const name = fieldName(block, start, pos)
      while (pos < block.length && isWspCode(block.charCodeAt(pos))) pos = lineEnd(block, pos)
      fields.push({ name, raw: block.slice(start, pos) })
    }
    return new MessageHeaders(fields)
  }

  /** First value of a field, unfolded and trimmed (UTF-8 decoded), or undefined. */
  get(name: string): string | undefined {
    const lower = name.toLowerCase()
    const field = this.fields.find((f) => sameName(f, lower))
    return field ? valueOf(field) : undefined
  }

  getAll(name: string): string[] {
    const lower = name.toLowerCase()
    return this.fields.filter((f) => sameName(f, lower)).map(valueOf)
  }

  has(name: string): boolean {
    const lower = name.toLowerCase()
    return this.fields.some((f) => sameName(f, lower))
  }

  /** Adds a field at the top (where trace fields such as Received go). */
  prepend(name: string, value: string): void {
    this.fields.unshift(makeField(name, value))
  }

  /** Adds a field at the bottom of the header section. */
  append(name: string, value: string): void {
    this.fields.push(makeField(name, value))
  }

  /** Removes every field with this name; returns how many were removed. */
  remove(name: string): number {
    const lower = name.toLowerCase()
    const before = this.fields.length
    this.fields = this.fields.filter((f) => !sameName(f, lower))
    return before - this.fields.length
  }

  /** Replaces the first field of this name in place (or appends one). Later duplicates are removed. */
  set(name: string, value: string): void {
    const lower = name.toLowerCase()
    const index = this.fields.findIndex((f) => sameName(f, lower))
    if (index < 0) return this.append(name, value)
    this.fields[index] = makeField(name, value)
    this.fields = this.fields.filter((f, i) => i <= index || !sameName(f, lower))
  }

  /** The last toBuffer result and the raw strings it was made of. */
  #cache?: { raws: string[]; bytes: Buffer }

  /**
   * The header section as bytes (without the blank line that ends it). The result is shared by
   * calls until a field changes (the relay asks several times per message; a header may be 1 MB),
   * so it must not be written to.
   */
  toBuffer(): Buffer {
    // `fields` is public and may be replaced or edited in place: the bytes depend only on the raw
    // strings in order. The fields before and after the ones that changed since the last call
    // (a field put on top, a few removed) are copied from its bytes, not encoded again.
    const raws = this.fields.map((f) => f.raw)
    const old = this.#cache ?? { raws: [], bytes: Buffer.alloc(0) }
    const n = raws.length
    const m = old.raws.length
    let head = 0
    let headBytes = 0
    while (head < n && head < m && raws[head] === old.raws[head]) headBytes += raws[head++]!.length
    if (head === n && n === m) return old.bytes
    let tail = 0
    let tailBytes = 0
    while (tail < n - head && tail < m - head && raws[n - 1 - tail] === old.raws[m - 1 - tail]) tailBytes += raws[n - 1 - tail++]!.length
    // The changed fields in one write (one native call, not one per field).
    const middle = raws.slice(head, n - tail).join('')
    const bytes = Buffer.allocUnsafe(headBytes + middle.length + tailBytes)
    old.bytes.copy(bytes, 0, 0, headBytes)
    const at = headBytes + bytes.write(middle, headBytes, 'latin1')
    old.bytes.copy(bytes, at, old.bytes.length - tailBytes)
    this.#cache = { raws, bytes }
    return bytes
  }
}

const isWspCode = (c: number) => c === 0x20 || c === 0x09

/** Where the line starting at `pos` ends, its CRLF included (the block's end for a last line without one). */
function lineEnd(block: string, pos: number): number {
  const eol = block.indexOf('\r\n', pos)
  return eol < 0 ? block.length : eol + 2
}

/** The field name of the line `block[start, end)` (FIELD), '' when it has none. */
function fieldName(block: string, start: number, end: number): string {
  let i = start
  for (; i < end; i++) {
    const c = block.charCodeAt(i)
    if (c < 0x21 || c > 0x7e || c === 0x3a) break
  }
  if (i === start) return ''
  let j = i
  while (j < end && isWspCode(block.charCodeAt(j))) j++
  return j < end && block.charCodeAt(j) === 0x3a ? block.slice(start, i) : ''
}

/** Whether the field is named `lower` (lower case), in any case. */
function sameName(field: HeaderField, lower: string): boolean {
  const name = field.name
  if (name.length === lower.length) return name.toLowerCase() === lower
  // Lower-casing keeps an ASCII name's length (every parsed name is ASCII): no match, no new string.
  for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) > 0x7f) return name.toLowerCase() === lower
  return false
}

function valueOf(field: HeaderField): string {
  const raw = field.raw.slice(field.raw.indexOf(':') + 1)
  return fromRaw(raw).replace(/\r\n(?=[ \t])/g, '').trim()
}

function makeField(name: string, value: string): HeaderField {
  if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) throw new Error(`invalid header name ${JSON.stringify(name)}`)
  // No bare line breaks from plugin text: fold only at CRLF + whitespace, drop the rest; no NUL
  // either (a next hop that deletes NULs must see what we meant to send).
  const clean = value.replace(/\r?\n(?![ \t])/g, ' ').replace(/\r(?!\n)/g, ' ').replace(/\0/g, '')
  // Nor a line over 998 octets (RFC 5322 §2.1.1), however long the value: folded.
  return { name, raw: foldLongLines(toRaw(`${name}: ${clean}\r\n`)) }
}

// Plugins get the core's MessageHeaders (relay-mta): none may change how the core's own headers work.
Object.freeze(MessageHeaders.prototype)
Object.freeze(MessageHeaders)
