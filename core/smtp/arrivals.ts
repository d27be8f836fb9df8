// Connections on their way in (an implicit-TLS handshake, the reverse lookup) already hold a slot of
// smtp.maxClients before onConnect counts them per client (session-limits.ts). They are counted per
// client from accept too, as Postfix does: over smtp.maxConnectionsPerClient the next is refused at
// once (421 4.7.0; closed before a TLS handshake), and an implicit-TLS handshake must end within
// smtp.firstCommandTimeout, not smtp.socketTimeout. A failed implicit-TLS handshake is counted against
// its client (core/smtp/tls-failures.ts).
import type { Socket } from 'node:net'
import type { SMTPServer } from 'smtp-server'
import { replyText, type Reply } from '../hooks/verdict.js'

type SocketOptions = { id: string; remoteAddress?: string }

/** What the guard reads of smtp-server 3.21's SMTPServer (pinned; see STACK.md). */
interface ServerInternals {
  _handleProxy(socket: Socket, callback: (err: Error | null, options?: SocketOptions) => void): void
  connect(socket: Socket, options: SocketOptions): void
  /** Sockets not connected yet, each with its TLS socket once the handshake began. */
  _pendingSockets: Map<Socket, Socket>
}

/** A connection refused on arrival, and the core rule that refused it (for its `refused` line). */
export type ArrivalRefusal = Reply & { rule: string }

export interface ArrivalGuard {
  /** A connection from `ip` (session id `id`) arrives: its refusal, or undefined (counted until settled). */
  arrive(id: string, ip: string): ArrivalRefusal | undefined | Promise<ArrivalRefusal | undefined>
  /** Its session counted it, or (`gone`) the connection closed (a count already settled is ignored). */
  settle(id: string, gone?: boolean): void
  /** Told of each refusal on arrival (its `refused` line). */
  refused?(id: string, ip: string, socket: Socket, reply: ArrivalRefusal): void
  /** An implicit-TLS connection from `ip` sent bytes but closed before its handshake was done. */
  tlsFailed(ip: string): void
  implicitTls: boolean
  /** How long an implicit-TLS handshake may take (ms). */
  handshakeTimeout: number
}

export function guardArrivals(server: SMTPServer, guard: ArrivalGuard): void {
  const internals = server as unknown as ServerInternals
  if (typeof internals._handleProxy !== 'function' || typeof internals.connect !== 'function' || !(internals._pendingSockets instanceof Map)) {
    throw new Error('smtp-server internals changed: check core/smtp/arrivals.ts against the installed version')
  }
  const handleProxy = internals._handleProxy.bind(internals)
  const connect = internals.connect.bind(internals)
  const deadlines = new WeakMap<SocketOptions, NodeJS.Timeout>()
  /** Connections whose session began (an implicit-TLS one: its handshake succeeded). */
  const connected = new WeakSet<SocketOptions>()
  /** Refuses the connection, or lets it go on (with a deadline for an implicit-TLS handshake). */
  const admit = (socket: Socket, options: SocketOptions, refused: ArrivalRefusal | undefined, callback: (err: Error | null, options?: SocketOptions) => void): void => {
    // Gone while the count was asked for (under config `workers`): no session for it.
    if (!refused && socket.destroyed) return callback(new Error('the client left'))
    if (refused) {
      guard.refused?.(options.id, options.remoteAddress ?? socket.remoteAddress ?? '', socket, refused)
      socket.on('error', () => undefined)
      if (guard.implicitTls || socket.destroyed || !socket.writable) socket.destroy()
      else {
        socket.end(`${refused.code} ${replyText(refused)}\r\n`)
        setTimeout(() => socket.destroy(), 1000).unref()
      }
      // smtp-server then releases its guard and does not start a session.
      return callback(new Error('too many connections from one client'))
    }
    if (guard.implicitTls) {
      const deadline = setTimeout(() => {
        // The TLS socket is torn down (not the TCP one under it): smtp-server reports the failure.
        const tls = internals._pendingSockets.get(socket)
        const timeout = Object.assign(new Error('TLS handshake timeout'), { code: 'ERR_TLS_HANDSHAKE_TIMEOUT' })
        if (tls && tls !== socket) tls.destroy(timeout)
        else socket.destroy()
      }, guard.handshakeTimeout)
      deadline.unref()
      deadlines.set(options, deadline)
    }
    callback(null, options)
  }
  internals._handleProxy = (socket, callback) =>
    handleProxy(socket, (err, options) => {
      if (err || !options) return callback(err, options)
      // Settles the count whatever the answer (a refused connection has none to settle).
      socket.once('close', () => {
        clearTimeout(deadlines.get(options))
        guard.settle(options.id, true)
        // A handshake that failed or was broken off (a connection that sent nothing, a TCP health check, is none).
        if (guard.implicitTls && !connected.has(options) && socket.bytesRead > 0) guard.tlsFailed(options.remoteAddress ?? socket.remoteAddress ?? '')
      })
      const answer = guard.arrive(options.id, options.remoteAddress ?? socket.remoteAddress ?? '')
      if (answer instanceof Promise) void answer.then((refused) => admit(socket, options, refused, callback))
      else admit(socket, options, answer, callback)
    })
  internals.connect = (socket, options) => {
    connected.add(options)
    clearTimeout(deadlines.get(options))
    deadlines.delete(options)
    connect(socket, options)
  }
}
