// How long a client may take to send, and stress (Postfix's smtpd_per_record_deadline, its
// smtpd_min_data_rate and its stress mode). Used by core/smtp/patches.ts (patch 17).
// 1. Node's idle timer restarts at every byte, so a client that drips one byte every 20 s kept its
//    session (and a maxClients slot) until smtp.sessionTimeout. Now a command must arrive whole
//    within the idle limit of the relay's last reply; message data gets one more second for each
//    smtp.minDataRate bytes received. Checked as input arrives: a silent client is the idle timer's.
// 2. Stress: while a listener holds STRESS_AT of smtp.maxClients (under `workers`, of this
//    process's share), clients neither trusted (smtp.trustedNetworks) nor authenticated get
//    smtp.stressTimeout instead of smtp.socketTimeout, for the idle timer and the deadline, so a
//    flood of slow or idle connections frees its slots within seconds. It ends below RELIEF_AT.
// 3. The TLS handshake after STARTTLS's 220 must end within smtp.firstCommandTimeout, as an
//    implicit-TLS one does (core/smtp/arrivals.ts): a ClientHello dripped a byte every few seconds
//    held the session (and its slot) for socketTimeout, 5 minutes.
import type { ConnectionInternals } from './connection-internals.js'

const STRESS_AT = 0.8
const RELIEF_AT = 0.6

const STRESSED = Symbol('relay.listenerStressed')
type Server = ConnectionInternals['_server'] & { [STRESSED]?: boolean }

/** Sessions of this process on the listener from which it is under stress (0: never). */
export function stressLevel(maxClients: number, processes = 1): number {
  return maxClients > 0 ? Math.max(1, Math.ceil((STRESS_AT * maxClients) / processes)) : 0
}

function exempt(conn: ConnectionInternals): boolean {
  return !!conn.session?.user || (conn._relayTrusted ??= conn._server.options.trustedClient?.(conn.remoteAddress) ?? false)
}

/** The idle limit of this connection now (ms). */
export function idleLimit(conn: ConnectionInternals): number {
  const { stressTimeout } = conn._server.options
  const socketTimeout = conn._server.options.socketTimeout || 60_000 // smtp-server's default
  return (conn._server as Server)[STRESSED] && stressTimeout && stressTimeout < socketTimeout && !exempt(conn) ? stressTimeout : socketTimeout
}

/** The relay replied: the client's time to send the next command (or the message) starts now. */
export function replied(conn: ConnectionInternals): void {
  conn._relayWaitFrom = Date.now()
  conn._relayCredit = 0
  const limit = idleLimit(conn)
  if (conn._relayIdle !== limit && conn._socket && !conn._closing) conn._armTimeout()
}

/** The relay works on a command: no deadline for the client until it replies. */
export function working(conn: ConnectionInternals): void {
  conn._relayWaitFrom = undefined
}

/**
 * Input arrived (`bytes`, message data when `data`): false when the client is past its deadline.
 * Message data earns its own time (smtp.minDataRate bytes a second) after it is counted.
 */
export function inTime(conn: ConnectionInternals, bytes: number, data: boolean): boolean {
  const from = conn._relayWaitFrom
  if (from === undefined) return true
  const due = from + idleLimit(conn) + (conn._relayCredit ?? 0)
  if (Date.now() > due) return false
  const rate = conn._server.options.minDataRate
  if (data && rate) conn._relayCredit = (conn._relayCredit ?? 0) + (bytes * 1000) / rate
  return true
}

/** A connection came or went: the listener enters or leaves stress, and its waiting clients' idle timers follow. */
export function checkStress(server: Server, log?: (stressed: boolean, sessions: number) => void): void {
  const level = server.options.stressAt ?? 0
  if (!level) return
  const sessions = server.connections.size
  const stressed = server[STRESSED] ? sessions >= Math.floor((level * RELIEF_AT) / STRESS_AT) : sessions >= level
  if (stressed === !!server[STRESSED]) return
  server[STRESSED] = stressed
  log?.(stressed, sessions)
  for (const conn of server.connections as Set<ConnectionInternals>) {
    if (conn._closing || conn._closed || !conn._socket || conn._relayIdle === idleLimit(conn)) continue
    conn._armTimeout()
  }
}

/** Patch 17's third part: a deadline for the STARTTLS handshake (the upgrade under way). */
export function withHandshakeDeadline(upgrade: ConnectionInternals['upgrade']): ConnectionInternals['upgrade'] {
  return function (this: ConnectionInternals, callback, secureCallback) {
    const socket = this._socket
    upgrade.call(this, callback, secureCallback)
    const limit = this._server.options.firstCommandTimeout
    if (!limit || !this._upgrading) return
    const timer = setTimeout(() => {
      // Still upgrading: the handshake did not finish. The raw socket goes, and the TLS one with it.
      if (this._upgrading && !socket.destroyed) socket.destroy(Object.assign(new Error('TLS handshake timeout after STARTTLS'), { code: 'ERR_TLS_HANDSHAKE_TIMEOUT' }))
    }, limit)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
  }
}
