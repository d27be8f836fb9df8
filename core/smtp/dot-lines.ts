// RFC 5321 §4.5.2: a line of message data that starts with a period and has other characters
// loses that first period (the client doubled it). smtp-server drops it only when the next
// character is another period, so from a client that does not dot-stuff, `.x` was delivered as
// `.x` where Postfix delivers `x`. Its data-mode feeder (smtp-server 3.21, SMTPStream) is
// replaced by this copy, which differs in one test: a period at the start of a line followed by
// anything but CR or LF is dropped. The end of data (`\r\n.\r\n`, or `.\r\n` first) is found
// exactly as before. The library's source is compared first, so a new version fails loudly.
import crypto from 'node:crypto'
import type { Writable } from 'node:stream'
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js'

interface DataFeeder {
  _dataStream: (Writable & { destroyed: boolean }) | false
  _lastBytes: Buffer | false
  _atDataStart: boolean
  _feedDataStream(chunk: Buffer, done: () => void): void
  _countDataBytes(length: number): void
  _endDataMode(chunk: Buffer | false, remainder: Buffer, done: () => void): void
}

/** sha256 of smtp-server 3.21.6's `_feedDataStream`, whitespace folded: what this file replaces. */
const LIBRARY_FEEDER = 'f8d36018f7c40bea6de17063c1b1a67d3570916dc9969dcd90c85538e453a6fd'
const END_SEQUENCE = Buffer.from('\r\n.\r\n')
const DOT_LINE_END = Buffer.from('.\r\n')
const LF_DOT = Buffer.from('\n.')
const DOT = 0x2e
const CR = 0x0d
const LF = 0x0a

/** A period that starts a line and is followed by more than the line break: the client's escape. */
const isEscape = (next: number | undefined) => next !== undefined && next !== CR && next !== LF

function feedDataStream(this: DataFeeder, chunk: Buffer, done: () => void): void {
  const dataStream = this._dataStream as Writable & { destroyed: boolean }
  if (this._lastBytes && this._lastBytes.length) {
    chunk = Buffer.concat([this._lastBytes, chunk], this._lastBytes.length + chunk.length)
    this._lastBytes = false
  }
  let len = chunk.length
  // The first line: the end of data already (`.` alone), or an escape (the library's note: a
  // stripped escape makes the next byte content, never a terminator).
  if (this._atDataStart && len >= 3 && chunk.subarray(0, 3).equals(DOT_LINE_END)) return this._endDataMode(false, chunk.subarray(3), done)
  if (this._atDataStart && len >= 2 && chunk[0] === DOT && isEscape(chunk[1])) {
    chunk = chunk.subarray(1)
    len--
    this._atDataStart = false
  }
  // Each period that starts a line, found by the native search (not a JS loop over every byte).
  for (let i = chunk.indexOf(LF_DOT, 1) + 1; i > 0 && i < len - 2; i = chunk.indexOf(LF_DOT, i) + 1) {
    if (chunk.subarray(i - 2, i + 3).equals(END_SEQUENCE)) {
      const body = chunk.subarray(0, i)
      this._countDataBytes(body.length)
      return this._endDataMode(body, chunk.subarray(i + 3), done)
    }
    if (isEscape(chunk[i + 1])) {
      const before = chunk.subarray(0, i)
      this._lastBytes = false
      this._countDataBytes(before.length)
      if (dataStream.writable) dataStream.write(before)
      const rest = chunk.subarray(i + 1)
      setImmediate(() => this._feedDataStream(rest, done))
      return
    }
  }
  // The last bytes wait for the next read: they may be the start of the end sequence.
  this._lastBytes = chunk.length < 4 ? chunk : chunk.subarray(chunk.length - 4)
  if (this._lastBytes.length >= chunk.length) return done()
  const ready = chunk.subarray(0, chunk.length - this._lastBytes.length)
  this._countDataBytes(ready.length)
  if (!dataStream.writable) return done()
  if (dataStream.write(ready) || dataStream.destroyed) return done()
  // A stream that the application destroys never drains, it only closes.
  const onDrain = () => {
    dataStream.removeListener('drain', onDrain)
    dataStream.removeListener('close', onDrain)
    done()
  }
  dataStream.once('drain', onDrain)
  dataStream.once('close', onDrain)
}

// On the class itself: a second copy of this module (another install of the relay in the same
// process) must not take the patched feeder for a changed library.
const PATCHED = Symbol.for('relay-mta.dot-lines')

export function patchDotLines(): void {
  const proto = (SMTPStream as unknown as { prototype: DataFeeder & { [PATCHED]?: true } }).prototype
  if (proto[PATCHED]) return
  const source = String(proto._feedDataStream).replace(/\s+/g, ' ')
  if (crypto.createHash('sha256').update(source).digest('hex') !== LIBRARY_FEEDER) {
    throw new Error('smtp-server internals changed: check core/smtp/dot-lines.ts against the installed version')
  }
  proto._feedDataStream = feedDataStream
  proto[PATCHED] = true
}
