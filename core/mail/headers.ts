// A message's header section, kept as the raw bytes of each field (latin1 strings hold bytes 1:1),
// so that a message passes through byte-identical unless a plugin changes a header.

const FIELD = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/

function toRaw(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1')
}
function fromRaw(raw: string): string {
  return Buffer.from(raw, 'latin1').toString('utf8')
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
  return { name, raw: toRaw(`${name}: ${clean}\r\n`) }
}
