// 8-bit to 7-bit MIME conversion (RFC 6152 §3) for a next hop that does not offer 8BITMIME, as
// Postfix does it: the MIME tree is walked (multipart boundaries, message/rfc822), every leaf part
// with 8-bit bytes gets a 7-bit Content-Transfer-Encoding (quoted-printable for text with lines of
// at most 998 bytes, base64 otherwise) and its header says so; a container holding such a part
// (message/rfc822, a multipart declared 8bit) is declared 7bit. Two streaming passes with bounded
// memory: `scan8bit` finds what to convert, `sevenBitStream` rewrites it.
// Not convertible: raw 8-bit header fields (addresses and words would need RFC 2047 rewriting, or
// SMTPUTF8: RFC 6532) and 8-bit text outside any part (preamble, epilogue). The caller bounces those.
import { Transform, type Readable, type TransformCallback } from 'node:stream'

/** Longest line kept whole (headers, boundaries); longer body lines are passed on in pieces. */
const MAX_LINE = 64 * 1024
/** Longest header section of one entity kept in memory while it is rewritten. */
const MAX_HEADER = 1024 * 1024
/** RFC 5321 §4.5.3.1.6: longest line (without CRLF) a 7-bit text part may carry. */
const MAX_TEXT_LINE = 998
const CRLF = Buffer.from('\r\n')

/**
 * How a part is made 7-bit: encoded ('quoted-printable', 'base64'); or, for a part that already
 * declares one of those yet carries raw 8-bit bytes (a broken sender), 'escape' them as =XX (what
 * they mean in quoted-printable) or 'strip' them (base64 decoders ignore them, RFC 2045 §6.8).
 */
export type SevenBitEncoding = 'quoted-printable' | 'base64' | 'escape' | 'strip'

export interface EightBitScan {
  /** A byte above 127 (or a NUL) appears somewhere in the message. */
  eightBit: boolean
  /** The message's own header section has a byte above 127: it needs SMTPUTF8 (RFC 6532) or 8BITMIME as it is. */
  headerEightBit?: boolean
  /** Why the message cannot be made 7-bit, when it cannot. */
  unconvertible?: string
  /** Entities (by ordinal: order of their header, 0 = the message) whose body gets encoded. */
  convert: Map<number, SevenBitEncoding>
  /** Containers (by ordinal) that hold a converted part: declared 7bit afterwards. */
  containers: Set<number>
}

interface Entity {
  ordinal: number
  type: string
  /** Declared Content-Transfer-Encoding, lower case (default 7bit). */
  cte: string
  boundary?: string
  parent?: Entity
}

const is8bit = (b: Buffer): boolean => {
  for (let i = 0; i < b.length; i++) if (b[i]! > 127 || b[i] === 0) return true
  return false
}

/** The unfolded value of the first field of this name in a header block (latin1), or undefined. */
function fieldValue(header: string, name: string): string | undefined {
  const m = new RegExp(`^${name}[ \\t]*:([^\\r\\n]*(?:\\r?\\n[ \\t][^\\r\\n]*)*)`, 'im').exec(header)
  return m ? m[1]!.replace(/\r?\n/g, '').trim() : undefined
}

function entityOf(ordinal: number, header: string, parent: Entity | undefined): Entity {
  const ct = fieldValue(header, 'Content-Type')
  // RFC 2046 §5.1.5: the parts of a multipart/digest are message/rfc822 by default.
  const fallback = parent?.type === 'multipart/digest' ? 'message/rfc822' : 'text/plain'
  const type = (ct?.split(';')[0]?.trim().toLowerCase() || fallback)
  const b = ct && type.startsWith('multipart/') ? /;\s*boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))/i.exec(ct) : null
  const cte = (fieldValue(header, 'Content-Transfer-Encoding') ?? '7bit').toLowerCase()
  return { ordinal, type, cte, boundary: b ? (b[1] ?? b[2]) : undefined, parent }
}

// message/global is a leaf: unlike message/rfc822 it may be encoded (RFC 6532 §3.7), and must be
// when its UTF-8 header fields are to reach a next hop without 8BITMIME.
const isContainer = (e: Entity) => (e.type.startsWith('multipart/') && Boolean(e.boundary)) || e.type === 'message/rfc822'

/** What the walker reports, in order. Every byte of the input is in exactly one callback. */
interface Visitor {
  /** An entity's header section, with the empty line that ends it (when there is one). */
  header(entity: Entity, raw: Buffer): void
  /** A body line of a leaf, or of a multipart (preamble, epilogue); `eol`: a CRLF (or LF) ended it. */
  body(entity: Entity, line: Buffer, eol: boolean): void
  /** A boundary line; `ended`: the entity whose body it ends. */
  boundary(ended: Entity, line: Buffer, eol: boolean): void
  fail(why: string): void
}

/**
 * Splits the message into lines and walks its MIME structure. Bounded: a body line longer than
 * MAX_LINE goes to `body` in pieces (it can be no boundary); a larger header fails the walk.
 */
class MimeWalker {
  private carry: Buffer = Buffer.alloc(0)
  /** The line being read was partly passed on already (too long). */
  private continued = false
  private ordinal = 0
  /** Open multiparts, innermost last. */
  private readonly multiparts: Entity[] = []
  /** The depths (indexes in `multiparts`) of the open multiparts with each boundary, innermost last. */
  private readonly depths = new Map<string, number[]>()
  /** The entity whose body lines arrive (undefined while a header is read). */
  private current: Entity | undefined
  /** The entity a header being read belongs under. */
  private parent: Entity | undefined
  private headerLines: Buffer[] = []
  private headerSize = 0
  private failed = false

  constructor(private readonly v: Visitor) {}

  write(chunk: Buffer): void {
    if (this.failed) return
    const data = this.carry.length ? Buffer.concat([this.carry, chunk]) : chunk
    let start = 0
    for (let nl = data.indexOf(0x0a, start); nl >= 0 && !this.failed; nl = data.indexOf(0x0a, start)) {
      const end = nl > start && data[nl - 1] === 0x0d ? nl - 1 : nl
      this.line(data.subarray(start, end), true)
      start = nl + 1
    }
    let rest = data.subarray(start)
    if (rest.length > MAX_LINE && !this.failed) {
      // Keep a trailing CR back: it may be half of a CRLF.
      const keep = rest[rest.length - 1] === 0x0d ? 1 : 0
      this.line(rest.subarray(0, rest.length - keep), false)
      rest = rest.subarray(rest.length - keep)
    }
    this.carry = Buffer.from(rest)
  }

  end(): void {
    if (this.failed) return
    if (this.carry.length) this.line(this.carry, false)
    this.carry = Buffer.alloc(0)
    if (!this.current && !this.failed) this.endHeader(false)
  }

  private fail(why: string): void {
    this.failed = true
    this.v.fail(why)
  }

  private line(line: Buffer, eol: boolean): void {
    const continued = this.continued
    this.continued = !eol
    if (!this.current) {
      if (!continued && eol && line.length === 0) return this.endHeader(true)
      if (!eol && !continued && line.length > MAX_LINE) return this.fail('a header line is too long')
      this.headerLines.push(eol ? Buffer.concat([line, CRLF]) : line)
      this.headerSize += line.length + 2
      if (this.headerSize > MAX_HEADER) this.fail('a header section is too large')
      return
    }
    if (!continued && this.multiparts.length && line.length >= 3 && line[0] === 0x2d && line[1] === 0x2d) {
      // Trailing white space trimmed by hand (/[ \t]+$/ is quadratic in a long run of spaces inside the line).
      let end = line.length
      while (end > 2 && (line[end - 1] === 0x20 || line[end - 1] === 0x09)) end--
      const found = this.delimiter(line.toString('latin1', 0, end))
      if (found) {
        const multipart = this.multiparts[found.depth]!
        this.v.boundary(this.current, line, eol)
        if (found.close) {
          // Its epilogue follows, as body lines of the multipart.
          this.closeFrom(found.depth)
          this.current = multipart
        } else {
          this.closeFrom(found.depth + 1)
          this.parent = multipart
          this.current = undefined
        }
        return
      }
    }
    this.v.body(this.current, line, eol)
  }

  /** The depth of the innermost open multipart whose delimiter `text` is (`--b`; `--b--`: close), found by boundary (not one comparison per open multipart and line). */
  private delimiter(text: string): { depth: number; close: boolean } | undefined {
    const innermost = (boundary: string) => this.depths.get(boundary)?.at(-1) ?? -1
    const open = innermost(text.slice(2))
    const close = text.length >= 4 && text.endsWith('--') ? innermost(text.slice(2, -2)) : -1
    if (open < 0 && close < 0) return undefined
    return close > open ? { depth: close, close: true } : { depth: open, close: false }
  }

  private openMultipart(multipart: Entity): void {
    const depths = this.depths.get(multipart.boundary!)
    if (depths) depths.push(this.multiparts.length)
    else this.depths.set(multipart.boundary!, [this.multiparts.length])
    this.multiparts.push(multipart)
  }

  /** Closes the open multiparts from `depth` in. */
  private closeFrom(depth: number): void {
    while (this.multiparts.length > depth) {
      const boundary = this.multiparts.pop()!.boundary!
      const depths = this.depths.get(boundary)!
      depths.pop()
      if (!depths.length) this.depths.delete(boundary)
    }
  }

  private endHeader(separator: boolean): void {
    const raw = Buffer.concat([...this.headerLines, ...(separator ? [CRLF] : [])])
    const entity = entityOf(this.ordinal++, raw.toString('latin1'), this.parent)
    this.headerLines = []
    this.headerSize = 0
    this.v.header(entity, raw)
    if (entity.type.startsWith('multipart/') && entity.boundary) {
      this.openMultipart(entity)
      this.current = entity
    } else if (entity.type === 'message/rfc822') {
      // The enclosed message's header follows at once.
      this.parent = entity
      this.current = undefined
    } else {
      this.current = entity
    }
  }
}

/** Reads the message once and finds what `sevenBitStream` has to convert. */
export async function scan8bit(message: Readable): Promise<EightBitScan> {
  const scan: EightBitScan = { eightBit: false, convert: new Map(), containers: new Set() }
  const seen = new Map<number, { entity: Entity; eightBit: boolean; long: boolean }>()
  // RFC 2045 §4: without MIME-Version the message is no MIME entity; a Content-Transfer-Encoding added to it means nothing.
  let mime = true
  const walker = new MimeWalker({
    header(entity, raw) {
      if (entity.ordinal === 0) mime = /^MIME-Version[ \t]*:/im.test(raw.toString('latin1'))
      seen.set(entity.ordinal, { entity, eightBit: false, long: false })
      if (is8bit(raw)) {
        if (entity.ordinal === 0) scan.headerEightBit = true
        scan.eightBit = true
        scan.unconvertible ??= 'it has 8-bit header fields'
      }
    },
    body(entity, line) {
      const s = seen.get(entity.ordinal)!
      if (line.length > MAX_TEXT_LINE) s.long = true
      if (!s.eightBit && is8bit(line)) {
        s.eightBit = true
        scan.eightBit = true
      }
    },
    boundary() {},
    fail(why) {
      scan.unconvertible ??= why
    },
  })
  for await (const chunk of message as AsyncIterable<Buffer | string>) walker.write(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk)
  walker.end()
  if (!scan.eightBit || scan.unconvertible) return scan
  for (const { entity, eightBit, long } of seen.values()) {
    if (!eightBit) continue
    if (isContainer(entity)) {
      scan.unconvertible = 'it has 8-bit text outside any MIME part'
      return scan
    }
    if (!mime) {
      scan.unconvertible = 'it has 8-bit text and no MIME-Version'
      return scan
    }
    const kind = entity.cte === 'quoted-printable' ? 'escape' : entity.cte === 'base64' ? 'strip' : entity.type.startsWith('text/') && !long ? 'quoted-printable' : 'base64'
    scan.convert.set(entity.ordinal, kind)
    // A container already in the set has its own containers in it too: each is added once.
    for (let p = entity.parent; p && !scan.containers.has(p.ordinal); p = p.parent) scan.containers.add(p.ordinal)
  }
  return scan
}

/** Drops every Content-Transfer-Encoding field and adds `value` at the end of the header block. */
function withEncoding(raw: Buffer, value: string): Buffer {
  let text = raw.toString('latin1').replace(/^Content-Transfer-Encoding[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*/gim, '')
  const field = `Content-Transfer-Encoding: ${value}\r\n`
  text = text.endsWith('\r\n\r\n') || text === '\r\n' ? `${text.slice(0, -2)}${field}\r\n` : `${text}${text && !text.endsWith('\n') ? '\r\n' : ''}${field}`
  return Buffer.from(text, 'latin1')
}

const HEX = '0123456789ABCDEF'

/** One line of text, quoted-printable (RFC 2045 §6.7), with soft breaks at 76 characters. */
function qpLine(line: Buffer): string {
  let out = ''
  let width = 0
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!
    const last = i === line.length - 1
    // Trailing space or tab would be lost in transport: encoded.
    const plain = (c >= 33 && c <= 126 && c !== 61) || ((c === 32 || c === 9) && !last)
    const token = plain ? String.fromCharCode(c) : `=${HEX[c >> 4]}${HEX[c & 15]}`
    if (width + token.length > (last ? 76 : 75)) {
      out += '=\r\n'
      width = 0
    }
    out += token
    width += token.length
  }
  return out
}

/** base64 of a byte stream, in lines of 76 characters. */
class Base64Lines {
  private carry: Buffer = Buffer.alloc(0)
  private width = 0

  update(b: Buffer): string {
    const data = this.carry.length ? Buffer.concat([this.carry, b]) : b
    const whole = data.length - (data.length % 3)
    this.carry = Buffer.from(data.subarray(whole))
    return this.wrap(data.subarray(0, whole).toString('base64'))
  }

  final(): string {
    const rest = this.wrap(this.carry.toString('base64'))
    this.carry = Buffer.alloc(0)
    const end = this.width > 0 ? '\r\n' : ''
    this.width = 0
    return rest + end
  }

  private wrap(s: string): string {
    let out = ''
    let i = 0
    while (i < s.length) {
      const take = Math.min(76 - this.width, s.length - i)
      out += s.slice(i, i + take)
      i += take
      this.width += take
      if (this.width === 76) {
        out += '\r\n'
        this.width = 0
      }
    }
    return out
  }
}

/**
 * The message with the parts `scan` found converted to 7-bit, as a stream. Parts not in the scan
 * pass byte for byte; so does everything when the scan found nothing to convert.
 */
export function sevenBitStream(message: Readable, scan: EightBitScan): Readable {
  let out: Buffer[] = []
  const push = (b: Buffer | string) => out.push(typeof b === 'string' ? Buffer.from(b, 'latin1') : b)
  /** The entity being encoded, its encoding, and (base64) the line end not yet known to be content. */
  let encoding: { ordinal: number; kind: SevenBitEncoding; b64?: Base64Lines; pendingEol: boolean } | undefined
  const finishPart = (atEnd: boolean) => {
    // The line end before a boundary belongs to the boundary (RFC 2046 §5.1.1), the last base64
    // line's CRLF stands for it; at the end of the message a final line end is content.
    if (encoding?.b64) {
      if (encoding.pendingEol && atEnd) push(encoding.b64.update(CRLF))
      push(encoding.b64.final())
    }
    encoding = undefined
  }
  const walker = new MimeWalker({
    header(entity, raw) {
      const kind = scan.convert.get(entity.ordinal)
      if (kind) {
        push(kind === 'escape' || kind === 'strip' ? raw : withEncoding(raw, kind))
        encoding = { ordinal: entity.ordinal, kind, b64: kind === 'base64' ? new Base64Lines() : undefined, pendingEol: false }
        return
      }
      if (scan.containers.has(entity.ordinal) && /^Content-Transfer-Encoding[ \t]*:[ \t]*(8bit|binary)\b/im.test(raw.toString('latin1'))) push(withEncoding(raw, '7bit'))
      else push(raw)
    },
    body(entity, line, eol) {
      if (!encoding || encoding.ordinal !== entity.ordinal) return push(eol ? Buffer.concat([line, CRLF]) : line)
      if (encoding.kind === 'quoted-printable') return push(qpLine(line) + (eol ? '\r\n' : ''))
      if (encoding.kind === 'escape' || encoding.kind === 'strip') {
        const strip = encoding.kind === 'strip'
        let text = ''
        for (const c of line) text += c > 127 || c === 0 ? (strip ? '' : `=${HEX[c >> 4]}${HEX[c & 15]}`) : String.fromCharCode(c)
        return push(text + (eol ? '\r\n' : ''))
      }
      if (encoding.pendingEol) push(encoding.b64!.update(CRLF))
      push(encoding.b64!.update(line))
      encoding.pendingEol = eol
    },
    boundary(_ended, line, eol) {
      finishPart(false)
      push(eol ? Buffer.concat([line, CRLF]) : line)
    },
    fail() {},
  })
  const take = () => {
    const b = out.length === 1 ? out[0]! : Buffer.concat(out)
    out = []
    return b
  }
  const transform = new Transform({
    transform(chunk: Buffer | string, _enc, done: TransformCallback) {
      walker.write(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk)
      done(null, take())
    },
    flush(done: TransformCallback) {
      walker.end()
      finishPart(true)
      done(null, take())
    },
  })
  message.on('error', (err) => transform.destroy(err))
  return message.pipe(transform)
}
