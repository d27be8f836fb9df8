// Patch 20 (core/smtp/patches.ts): a client that half-closes after its last command (FIN, as
// `printf ... | nc -N` or shutdown(SHUT_WR)) gets every reply. The server is made with
// `allowHalfOpen` (server.ts); a socket whose client sent FIN counts as open for smtp-server's
// send() until this side ends it, once the parser has answered everything it read.
import type { Socket } from 'node:net'
import type { Writable } from 'node:stream'
import type { ConnectionInternals, ParserInternals } from './connection-internals.js'
import { REPLIES_TO } from './reply-groups.js'

/** The client half-closed `socket`: its replies still go out, then this side ends. */
export function halfClosed(socket: Socket, parser: Writable | undefined): void {
  if (!socket.allowHalfOpen || socket.writableEnded || socket.destroyed) return
  Object.defineProperty(socket, 'readyState', { configurable: true, get: halfOpenState })
  if (parser && !parser.destroyed && !parser.writableFinished) parser.once('finish', endWhenAnswered)
  else socket.end()
}

/** A socket whose client half-closed, as smtp-server's send() asks: open until this side ends it. */
function halfOpenState(this: Socket): string {
  return this.writableEnded || this.destroyed ? 'closed' : 'open'
}

/** Every command the client sent before its FIN is answered (the parser finished): this side ends too. */
function endWhenAnswered(this: Writable): void {
  const socket = (this as ParserInternals)[REPLIES_TO]?._socket
  if (socket && !socket.writableEnded && !socket.destroyed) socket.end()
}

const CONNECTION_OF = Symbol('relay.halfCloseConnection')
type TlsSocket = Socket & { [CONNECTION_OF]?: ConnectionInternals }

/** After STARTTLS the library pipes the TLS socket (half-open as the plain one) to the parser: the same for its FIN. */
function onTlsEnd(this: TlsSocket): void {
  halfClosed(this, this[CONNECTION_OF]?._parser || undefined)
}

/** smtp-server's upgrade(), with the TLS socket's FIN handled once it replaces the plain one. */
export function withHalfCloseAfterTls(upgrade: ConnectionInternals['upgrade']): ConnectionInternals['upgrade'] {
  return function (this: ConnectionInternals, callback, secureCallback) {
    upgrade.call(this, callback, () => {
      const socket = this._socket as TlsSocket
      if (socket.allowHalfOpen) {
        socket[CONNECTION_OF] = this
        if (socket.readableEnded) process.nextTick(() => onTlsEnd.call(socket))
        else socket.once('end', onTlsEnd)
      }
      secureCallback?.()
    })
  }
}
