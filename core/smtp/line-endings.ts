// Line endings of a message as it arrives: bare CR or LF and NUL bytes (SMTP smuggling), refused or
// made CRLF, so what is queued has CRLF line ends only.

const CR = 13
const LF = 10

export class BareLineEndingError extends Error {
  constructor() {
    super('message contains a bare LF or bare CR')
  }
}

/** A NUL byte in the message ('reject' mode): receivers that drop NULs would read `<CRLF><NUL>.<CRLF>` as the end of data. */
export class NulByteError extends Error {
  constructor() {
    super('message contains a NUL byte')
  }
}

/**
 * Checks line endings: in 'reject' mode a bare CR or LF throws (after the whole message has been
 * read, so the reply comes at the end of DATA); in 'normalize' mode they become CRLF. Either way,
 * what reaches the queue has CRLF line ends only, so no bare LF can ever end or split a message
 * downstream (SMTP smuggling). NUL bytes get the same policy: 'reject' refuses the message
 * (`finish()` throws NulByteError), 'normalize' drops them, so a receiver that deletes NULs cannot
 * turn `<CRLF><NUL>.<CRLF>` into an end of data.
 */
export class LineEndings {
  private lastWasCR = false
  bare = false
  private nul = false

  constructor(private readonly mode: 'reject' | 'normalize') {}

  process(chunk: Buffer): Buffer {
    if (chunk.includes(0)) {
      if (this.mode === 'reject') this.nul = true
      else chunk = withoutNul(chunk)
    }
    if (this.mode === 'reject' && this.bare) return chunk
    // The usual chunk has CRLFs only: found by jumping between CRs and LFs (indexOf), not byte by byte.
    if (!hasBareEnding(chunk, this.lastWasCR)) {
      if (chunk.length) this.lastWasCR = chunk[chunk.length - 1] === CR
      return chunk
    }
    if (this.mode === 'reject') {
      this.bare = true
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
    if (this.nul) throw new NulByteError()
    if (!this.lastWasCR) return undefined
    if (this.mode === 'reject') this.bare = true
    return this.mode === 'normalize' ? Buffer.from([LF]) : undefined
  }
}

/** Whether `chunk` has a CR not followed by LF or an LF not preceded by CR (`prevCR`: the byte before it was a CR). */
function hasBareEnding(chunk: Buffer, prevCR: boolean): boolean {
  if (prevCR && chunk.length && chunk[0] !== LF) return true
  for (let lf = chunk.indexOf(LF); lf >= 0; lf = chunk.indexOf(LF, lf + 1)) if (lf ? chunk[lf - 1] !== CR : !prevCR) return true
  // A CR at the end may have its LF in the next chunk.
  for (let cr = chunk.indexOf(CR); cr >= 0 && cr + 1 < chunk.length; cr = chunk.indexOf(CR, cr + 1)) if (chunk[cr + 1] !== LF) return true
  return false
}

/** `chunk` without its NUL bytes (a new buffer). */
function withoutNul(chunk: Buffer): Buffer {
  const out = Buffer.allocUnsafe(chunk.length)
  let n = 0
  for (let i = 0; i < chunk.length; i++) if (chunk[i] !== 0) out[n++] = chunk[i]!
  return out.subarray(0, n)
}
