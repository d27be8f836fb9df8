// A message leaves in as few writes as the socket allows: nodemailer pipes its dot-stuffing data
// stream into the socket chunk by chunk, so the header block, each body chunk and the final ".\r\n"
// were a write (a system call, and a TCP segment to the next hop) each. The socket is corked from
// the moment that stream is made (after the 354) until it ends, and uncorked early when the stream
// pauses (the socket's buffer is full: a corked socket never drains, so a large message goes on
// as before, the first part of it in one write). Checked at load: an upgrade that renames the
// private method stops the relay at start instead of silently sending in pieces.
import type { Writable } from 'node:stream'
import SMTPConnection from 'nodemailer/lib/smtp-connection'

interface SendStreamInternals {
  _socket?: Writable & { destroyed: boolean }
  _createSendStream(this: SendStreamInternals, callback: (...args: unknown[]) => void): NodeJS.ReadableStream & Writable
}

const proto = (SMTPConnection as unknown as { prototype: Partial<SendStreamInternals> }).prototype
const createSendStream = proto._createSendStream
if (typeof createSendStream !== 'function') {
  throw new Error('nodemailer SMTPConnection internals changed (_createSendStream): check core/delivery/one-write.ts against the installed version')
}
const PATCHED = Symbol.for('relay.nodemailerOneWrite')
const marked = proto as unknown as Record<symbol, boolean>
if (!marked[PATCHED]) {
  marked[PATCHED] = true
  proto._createSendStream = function (callback) {
    const stream = createSendStream.call(this, callback)
    const socket = this._socket
    // A socket already full waits for 'drain', which a corked one never sends.
    if (!socket || socket.destroyed || !socket.writable || socket.writableNeedDrain) return stream
    socket.cork()
    let corked = true
    const release = () => {
      if (!corked) return
      corked = false
      socket.uncork()
    }
    for (const event of ['end', 'pause', 'error', 'close']) stream.once(event, release)
    return stream
  }
}
