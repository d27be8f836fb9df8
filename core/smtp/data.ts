import type { Readable } from 'node:stream'
import { MessageHeaders } from './headers.js'
import type { Spool, SpoolFile } from '../queue/spool.js'

/** Bodies up to this size stay in memory and go inline into the queue database. */
export const INLINE_BODY_LIMIT = 128 * 1024
/** The header section is read into memory up to this size; the rest counts as body. */
const MAX_HEADER_BYTES = 1024 * 1024

const CR = 13
const LF = 10
const FIELD_LINE = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/

export class BareLineEndingError extends Error {
  constructor() {
    super('message contains a bare LF or bare CR')
  }
}

export interface ReceivedData {
  headers: MessageHeaders
  /** The body: everything after the header fields, the blank separator line included. */
  body: { inline: Buffer } | { file: SpoolFile }
  bodySize: number
}

/**
 * Checks line endings: in 'reject' mode a bare CR or LF throws (after the whole message has been
 * read, so the reply comes at the end of DATA); in 'normalize' mode they become CRLF. Either way,
 * what reaches the queue has CRLF line ends only, so no bare LF can ever end or split a message
 * downstream (SMTP smuggling).
 */
class LineEndings {
  private lastWasCR = false
  bare = false

  constructor(private readonly mode: 'reject' | 'normalize') {}

  process(chunk: Buffer): Buffer {
    if (this.mode === 'reject') {
      if (this.bare) return chunk
      let prevCR = this.lastWasCR
      for (let i = 0; i < chunk.length; i++) {
        const b = chunk[i]
        if (prevCR && b !== LF) {
          this.bare = true
          break
        }
        if (b === LF && !prevCR) {
          this.bare = true
          break
        }
        prevCR = b === CR
      }
      this.lastWasCR = prevCR
      return chunk
    }
    let start = 0
    const parts: Buffer[] = []
    let prevCR = this.lastWasCR
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]
      if (prevCR && b !== LF) {
        // bare CR (the CR was already emitted): add the missing LF
        parts.push(chunk.subarray(start, i), Buffer.from([LF]))
        start = i
      } else if (b === LF && !prevCR) {
        parts.push(chunk.subarray(start, i), Buffer.from([CR]))
        start = i
      }
      prevCR = b === CR
    }
    this.lastWasCR = prevCR
    if (!parts.length) return chunk
    parts.push(chunk.subarray(start))
    return Buffer.concat(parts)
  }

  /** At the end of the message: a trailing CR had no LF. */
  finish(): Buffer | undefined {
    if (!this.lastWasCR) return undefined
    if (this.mode === 'reject') this.bare = true
    return this.mode === 'normalize' ? Buffer.from([LF]) : undefined
  }
}

/**
 * Finds where the header section ends in `head`. Returns the header block length (every field with
 * its CRLF) and the offset where the body starts, or undefined while more data is needed.
 * A line that is not a header field ends the header section early; the body then gets a blank
 * line in front so that it cannot be read as header text.
 */
function splitHeader(head: Buffer, final: boolean): { headerEnd: number; bodyStart: number; addSeparator: boolean } | undefined {
  let pos = 0
  let sawField = false
  while (pos < head.length) {
    const eol = head.indexOf('\r\n', pos, 'latin1')
    if (eol < 0) {
      if (!final && head.length < MAX_HEADER_BYTES) return undefined
      // An unterminated last line (or an oversized header section) belongs to the body.
      return { headerEnd: pos, bodyStart: pos, addSeparator: pos > 0 }
    }
    if (eol === pos) return { headerEnd: pos, bodyStart: pos, addSeparator: false }
    const first = head[pos]
    const isContinuation = (first === 0x20 || first === 0x09) && sawField
    if (!isContinuation && !FIELD_LINE.test(head.toString('latin1', pos, Math.min(eol, pos + 200)))) {
      return { headerEnd: pos, bodyStart: pos, addSeparator: pos > 0 }
    }
    sawField = true
    pos = eol + 2
  }
  if (!final && head.length < MAX_HEADER_BYTES) return undefined
  return { headerEnd: pos, bodyStart: pos, addSeparator: false }
}

/**
 * Reads a message from the DATA stream: line-ending policy, header section parsed, body kept in
 * memory when small or streamed to a spool file when large.
 */
export async function readMessage(stream: Readable, o: { spool: Spool; id: string; lineEndings: 'reject' | 'normalize' }): Promise<ReceivedData> {
  const endings = new LineEndings(o.lineEndings)
  let headChunks: Buffer[] = []
  let headers: MessageHeaders | undefined
  let bodyChunks: Buffer[] = []
  let bodySize = 0
  let file: SpoolFile | undefined

  const addBody = async (chunk: Buffer) => {
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
    const head = headChunks.length === 1 ? headChunks[0]! : Buffer.concat(headChunks)
    headChunks = [head]
    const split = splitHeader(head, final)
    if (!split) return
    headers = MessageHeaders.parse(head.toString('latin1', 0, split.headerEnd))
    headChunks = []
    if (split.addSeparator) await addBody(Buffer.from('\r\n'))
    await addBody(head.subarray(split.bodyStart))
  }

  try {
    for await (const raw of stream as AsyncIterable<Buffer>) {
      const chunk = endings.process(raw)
      if (headers) {
        await addBody(chunk)
        continue
      }
      headChunks.push(chunk)
      await tryHeader(false)
    }
    const tail = endings.finish()
    if (tail) {
      if (headers) await addBody(tail)
      else headChunks.push(tail)
    }
    if (!headers) await tryHeader(true)
    if (endings.bare) throw new BareLineEndingError()
  } catch (err) {
    await (file as SpoolFile | undefined)?.discard()
    throw err
  }
  return {
    headers: headers ?? new MessageHeaders(),
    body: file ? { file } : { inline: bodyChunks.length === 1 ? bodyChunks[0]! : Buffer.concat(bodyChunks) },
    bodySize,
  }
}
