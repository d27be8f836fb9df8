import { isAscii } from 'node:buffer'
import type { Readable } from 'node:stream'
import { foldedText, HeaderBytes, headerLineBreaks, isFieldLine, MAX_LINE_OCTETS, MessageHeaders, utf8Length, type LineBreak } from '../mail/headers.js'
import type { Spool, SpoolFile } from '../queue/spool.js'
import { FREE_HEADER_BYTES, HeaderMemoryError, type HeaderBudget } from './header-memory.js'
import { BareLineEndingError, LineEndings } from './line-endings.js'

export { BareLineEndingError, NulByteError } from './line-endings.js'

/** Bodies up to this size stay in memory and go inline into the queue database. */
export const INLINE_BODY_LIMIT = 128 * 1024

const CR = 13
const LF = 10
const CRLF = Buffer.from('\r\n')

/** Bounds on the header section (config smtp.maxHeaderSize, maxHeaderLines, maxHeaderFieldLines). */
export interface HeaderLimits {
  /** Bytes of header fields (CRLFs included, the blank line not). */
  maxBytes: number
  /** Physical lines of the header section. */
  maxLines: number
  /** Physical lines of one field (its first line and its continuation lines). */
  maxFieldLines: number
}

/**
 * The header section passed a limit: the message is refused (552 5.3.4) once it has been read
 * to the end, so no plugin ever parses an unbounded header (mailauth unfolds quadratically).
 */
export class HeaderTooLargeError extends Error {
  constructor(
    readonly limit: 'size' | 'lines' | 'fieldLines',
    readonly max: number,
  ) {
    super(limit === 'size' ? `message header larger than ${max} bytes` : limit === 'lines' ? `message header longer than ${max} lines` : `a header field folded over more than ${max} lines`)
  }
}

export interface ReceivedData {
  headers: MessageHeaders
  /** The body: everything after the header fields, the blank separator line included. */
  body: { inline: Buffer } | { file: SpoolFile }
  bodySize: number
  /** Read with `wrap: false`: it has lines over 998 octets, left as they came (wrapLongLines breaks them). */
  longLines?: boolean
  /** A byte above 127 somewhere (header or body): it travels only with BODY=8BITMIME (RFC 6152 §3). */
  eightBit?: boolean
}


/**
 * Breaks body lines longer than MAX_LINE_OCTETS (998) octets, CRLF not counted (RFC 5321
 * §4.5.3.1.6, RFC 5322 §2.1.1), into lines of at most that many with a CRLF, as the message
 * streams in: never inside a UTF-8 sequence (the break backs off to its lead byte), so that the
 * pieces put together are the line again. Works on the bytes after LineEndings (CRLF line ends)
 * and after smtp-server removed the dot-stuffing; the body starts at the start of a line. A chunk
 * with no long line is passed on as it is; at most the 3 bytes of a UTF-8 sequence that a break
 * may have to go in front of are held back until the next chunk.
 */
class LongLines {
  /** Octets of the current line so far (its CR not counted). */
  private col = 0
  /** The end of the last chunk, held back: an unfinished UTF-8 sequence the next break may go in front of. */
  private carry: Buffer | undefined

  process(chunk: Buffer): Buffer {
    if (this.carry) {
      chunk = Buffer.concat([this.carry, chunk])
      this.carry = undefined
    }
    const n = chunk.length
    let col = this.col
    let pos = 0
    let parts: Buffer[] | undefined
    let emitted = 0
    for (;;) {
      const lf = chunk.indexOf(LF, pos)
      const end = lf < 0 ? n : lf
      // The CR of a CRLF (at the chunk's end: of one split across chunks) is not part of the line.
      const stop = end > pos && chunk[end - 1] === CR ? end - 1 : end
      while (col + stop - pos > MAX_LINE_OCTETS) {
        let at = pos + MAX_LINE_OCTETS - col
        if ((chunk[at]! & 0xc0) === 0x80) {
          // a continuation byte: the break goes before its lead byte (when it is on this line)
          for (let k = at - 1; k >= pos && k >= at - 3; k--) {
            const b = chunk[k]!
            if ((b & 0xc0) === 0xc0) {
              if (k + utf8Length(b) > at && (k > pos || col > 0)) at = k
              break
            }
            if ((b & 0xc0) !== 0x80) break
          }
        }
        ;(parts ??= []).push(chunk.subarray(emitted, at), CRLF)
        emitted = at
        pos = at
        col = 0
      }
      col += stop - pos
      if (lf < 0) break
      col = 0
      pos = lf + 1
    }
    let keep = n
    // A UTF-8 sequence unfinished at the chunk's end that the next break would fall inside: held back.
    if (col >= MAX_LINE_OCTETS - 3 && chunk[n - 1] !== CR) {
      for (let k = n - 1; k >= n - 3 && k >= Math.max(emitted, n - col); k--) {
        const b = chunk[k]!
        if ((b & 0xc0) === 0xc0) {
          const len = utf8Length(b)
          if (k + len > n && col - (n - k) + len > MAX_LINE_OCTETS) {
            keep = k
            this.carry = Buffer.from(chunk.subarray(k))
            col -= n - k
          }
          break
        }
        if ((b & 0xc0) !== 0x80) break
      }
    }
    this.col = col
    if (!parts) return keep === n ? chunk : chunk.subarray(0, keep)
    parts.push(chunk.subarray(emitted, keep))
    return Buffer.concat(parts)
  }

  /** At the end of the message: what was held back. */
  finish(): Buffer | undefined {
    const carry = this.carry
    this.carry = undefined
    return carry
  }
}

/** Where splitHeader stopped in `head` (it resumes there when more data has come). */
interface HeaderScan {
  pos: number
  /** No CRLF starts in `head` between `pos` and here: the next search starts here, not at `pos` again. */
  searched: number
  sawField: boolean
  lines: number
  fieldLines: number
  /** Where header lines over MAX_LINE_OCTETS are folded (offsets in `head`), and the bytes that adds. */
  breaks: LineBreak[]
  added: number
}

type HeaderSplit = { headerEnd: number; bodyStart: number; addSeparator: boolean }

/** Whether the line starting at `pos` (up to `end`) belongs to the header section. */
function isHeaderLine(head: Buffer, pos: number, end: number, sawField: boolean): boolean {
  const first = head[pos]
  if ((first === 0x20 || first === 0x09) && sawField) return true
  return isFieldLine(head, pos, Math.min(end, pos + 200))
}

/** The first CRLF at or after `from` in `buf`, -1 if none (a search for the LF byte: faster than for a string). */
function crlfAt(buf: Buffer, from: number): number {
  let lf = buf.indexOf(LF, from + 1)
  while (lf >= 0 && buf[lf - 1] !== CR) lf = buf.indexOf(LF, lf + 1)
  return lf < 0 ? -1 : lf - 1
}

/**
 * Finds where the header section ends in `head`, resuming at `scan.pos`. Returns the header block
 * length (every field with its CRLF) and the offset where the body starts; undefined while more
 * data is needed; a HeaderTooLargeError when the header fields pass one of `limits`.
 * A line that is not a header field ends the header section early; the body then gets a blank
 * line in front so that it cannot be read as header text.
 */
function splitHeader(head: Buffer, final: boolean, scan: HeaderScan, limits: HeaderLimits): HeaderSplit | HeaderTooLargeError | undefined {
  let pos = scan.pos
  while (pos < head.length) {
    const eol = crlfAt(head, Math.max(pos, scan.searched))
    if (eol < 0) {
      if (!final) {
        scan.pos = pos
        // The last byte may be the CR of a CRLF split across chunks.
        scan.searched = Math.max(pos, head.length - 1)
        if (head.length + scan.added <= limits.maxBytes) return undefined
        // An unfinished line of header text that is already past the limit cannot end well.
        if (isHeaderLine(head, pos, head.length, scan.sawField)) return new HeaderTooLargeError('size', limits.maxBytes)
      }
      // An unterminated last line (or an oversized line that is not header text) belongs to the body.
      return { headerEnd: pos, bodyStart: pos, addSeparator: true }
    }
    if (eol === pos) return { headerEnd: pos, bodyStart: pos, addSeparator: false }
    // Even with no header field before it (pos 0): the line must never follow a field the relay
    // adds (its Received on top), where one starting with whitespace would continue that field.
    if (!isHeaderLine(head, pos, eol, scan.sawField)) return { headerEnd: pos, bodyStart: pos, addSeparator: true }
    const first = head[pos]
    // A line over 998 octets is folded; the limits count the lines and bytes as folded (what plugins parse).
    let folds = 0
    if (eol - pos > MAX_LINE_OCTETS) {
      for (const b of headerLineBreaks(head, pos, eol)) {
        scan.breaks.push(b)
        scan.added += b.space ? 3 : 2
        folds++
      }
    }
    scan.fieldLines = (first === 0x20 || first === 0x09 ? scan.fieldLines + 1 : 1) + folds
    scan.lines += 1 + folds
    if (eol + 2 + scan.added > limits.maxBytes) return new HeaderTooLargeError('size', limits.maxBytes)
    if (scan.lines > limits.maxLines) return new HeaderTooLargeError('lines', limits.maxLines)
    if (scan.fieldLines > limits.maxFieldLines) return new HeaderTooLargeError('fieldLines', limits.maxFieldLines)
    scan.sawField = true
    pos = eol + 2
  }
  scan.pos = pos
  if (!final) return undefined
  return { headerEnd: pos, bodyStart: pos, addSeparator: false }
}

/**
 * A header section this large costs tens of milliseconds of this thread from here to the queue
 * (folding, parsing, the bytes made again). Many finishing at once (one client's 45 connections)
 * held every other session up for as long as all of them took; each takes an event-loop turn of
 * its own instead, and the sessions in between are answered.
 */
const LARGE_HEADER = 64 * 1024
let largeHeaderLane: Promise<void> = Promise.resolve()
function largeHeaderTurn(): Promise<void> {
  const turn = largeHeaderLane.then(() => new Promise<void>((resolve) => setImmediate(resolve)))
  largeHeaderLane = turn
  return turn
}

/**
 * Reads a message from the DATA stream: line-ending policy, header section parsed, body kept in
 * memory when small or streamed to a spool file when large. Lines over 998 octets are folded (in
 * the header section) or broken (in the body) on the way, so what is queued, signed and sent has
 * none; and the body, when there is one, starts with the blank line that ends the header section.
 * `wrap: false` leaves such lines as they came and says so (`longLines`): checks of the sender's
 * signatures see the message as it was signed, and wrapLongLines breaks them afterwards.
 */
export async function readMessage(stream: Readable, o: { spool: Spool; id: string; lineEndings: 'reject' | 'normalize'; headerLimits: HeaderLimits; wrap?: boolean; headerBudget?: HeaderBudget }): Promise<ReceivedData> {
  const wrap = o.wrap !== false
  /** Without `wrap`: the body's bytes as they came, and as LongLines would have made them. */
  let asCame = 0
  let asWrapped = 0
  const endings = new LineEndings(o.lineEndings)
  const scan: HeaderScan = { pos: 0, searched: 0, sawField: false, lines: 0, fieldLines: 0, breaks: [], added: 0 }
  const long = new LongLines()
  /** Set once the header passed a limit: the rest of the message is read and dropped. */
  let tooLarge: HeaderTooLargeError | HeaderMemoryError | undefined
  /** Header bytes beyond the free allowance taken from `headerBudget`, given back at the end. */
  let borrowed = 0
  const borrow = (headerBytes: number) => {
    const want = headerBytes - FREE_HEADER_BYTES - borrowed
    if (want <= 0 || !o.headerBudget) return true
    if (!o.headerBudget.take(want)) return false
    borrowed += want
    return true
  }
  // Room for the header at its limit and one more chunk, before the limit check stops it.
  let head = new HeaderBytes(o.headerLimits.maxBytes + 65536)
  let headers: MessageHeaders | undefined
  let bodyChunks: Buffer[] = []
  let bodySize = 0
  let file: SpoolFile | undefined
  let eightBit = false

  /** Body bytes: long lines broken (`asIs` for the bytes LongLines held back and gives back at the end). */
  const addBody = async (chunk: Buffer, asIs = false) => {
    if (!asIs && wrap) chunk = long.process(chunk)
    else if (!asIs) {
      asCame += chunk.length
      asWrapped += long.process(chunk).length
    }
    if (!chunk.length) return
    bodySize += chunk.length
    if (file) return file.write(chunk)
    bodyChunks.push(chunk)
    if (bodySize > INLINE_BODY_LIMIT) {
      file = await o.spool.create(o.id)
      for (const c of bodyChunks) await file.write(c)
      bodyChunks = []
    }
  }

  const tryHeader = async (final: boolean) => {
    const bytes = head.bytes
    const split = splitHeader(bytes, final, scan, o.headerLimits)
    if (!split) return
    const done = head
    head = new HeaderBytes(0)
    if (split instanceof HeaderTooLargeError) {
      tooLarge = split
      return
    }
    if (split.headerEnd > LARGE_HEADER) await largeHeaderTurn()
    headers = MessageHeaders.parse(foldedText(bytes, split.headerEnd, wrap ? scan.breaks : []))
    if (split.addSeparator) await addBody(Buffer.from('\r\n'))
    await addBody(done.rest(split.bodyStart))
  }

  try {
    for await (const raw of stream as AsyncIterable<Buffer>) {
      eightBit ||= !isAscii(raw)
      const chunk = endings.process(raw)
      if (tooLarge) continue
      if (headers) {
        await addBody(chunk)
        continue
      }
      if (!borrow(head.bytes.length + chunk.length)) {
        tooLarge = new HeaderMemoryError()
        head = new HeaderBytes(0)
        continue
      }
      head.push(chunk)
      await tryHeader(false)
    }
    const tail = endings.finish()
    if (tail) {
      if (headers) await addBody(tail)
      else if (!tooLarge) head.push(tail)
    }
    if (!headers && !tooLarge) await tryHeader(true)
    const held = long.finish()
    if (held && headers && wrap) await addBody(held, true)
    asWrapped += held?.length ?? 0
    if (endings.bare) throw new BareLineEndingError()
    if (tooLarge) throw tooLarge
  } catch (err) {
    await (file as SpoolFile | undefined)?.discard()
    throw err
  } finally {
    o.headerBudget?.release(borrowed)
  }
  return {
    headers: headers ?? new MessageHeaders(),
    body: file ? { file } : { inline: bodyChunks.length === 1 ? bodyChunks[0]! : Buffer.concat(bodyChunks) },
    bodySize,
    ...(wrap ? {} : { longLines: scan.breaks.length > 0 || asWrapped !== asCame }),
    ...(eightBit ? { eightBit } : {}),
  }
}

