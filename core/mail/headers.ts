// A message's header section, kept as the raw bytes of each field (latin1 strings hold bytes 1:1),
// so that a message passes through byte-identical unless a plugin changes a header.

const FIELD = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/

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
    const fields: HeaderField[] = []
    for (const line of block.split(/(?<=\r\n)/)) {
      if (!line) continue
      const last = fields[fields.length - 1]
      if ((line[0] === ' ' || line[0] === '\t') && last) last.raw += line
      else fields.push({ name: FIELD.exec(line)?.[1] ?? '', raw: line })
    }
    return new MessageHeaders(fields)
  }

  /** First value of a field, unfolded and trimmed (UTF-8 decoded), or undefined. */
  get(name: string): string | undefined {
    const field = this.fields.find((f) => f.name.toLowerCase() === name.toLowerCase())
    return field ? valueOf(field) : undefined
  }

  getAll(name: string): string[] {
    const lower = name.toLowerCase()
    return this.fields.filter((f) => f.name.toLowerCase() === lower).map(valueOf)
  }

  has(name: string): boolean {
    const lower = name.toLowerCase()
    return this.fields.some((f) => f.name.toLowerCase() === lower)
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
    this.fields = this.fields.filter((f) => f.name.toLowerCase() !== lower)
    return before - this.fields.length
  }

  /** Replaces the first field of this name in place (or appends one). Later duplicates are removed. */
  set(name: string, value: string): void {
    const lower = name.toLowerCase()
    const index = this.fields.findIndex((f) => f.name.toLowerCase() === lower)
    if (index < 0) return this.append(name, value)
    this.fields[index] = makeField(name, value)
    this.fields = this.fields.filter((f, i) => i <= index || f.name.toLowerCase() !== lower)
  }

  /** The header section as bytes (without the blank line that ends it). */
  toBuffer(): Buffer {
    return Buffer.from(this.fields.map((f) => f.raw).join(''), 'latin1')
  }
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
