// PROXY protocol (HAProxy's spec, v1 text and v2 binary) on listeners behind a TCP load balancer.
// smtp-server 3.21 reads v1 only and trusts exact addresses only, so the relay reads the header
// itself: from a trusted proxy (IP or CIDR) a connection must start with a valid header before
// anything else (before the TLS handshake on an implicit-TLS listener); its source address then
// is the session's remoteAddress. Any other peer is served as it is, and a PROXY line it sends is
// refused (421) and logged, never honoured.
import crypto from 'node:crypto'
import net from 'node:net'
import type { Logger } from 'pino'
import type { SMTPServer } from 'smtp-server'
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js'
import { networkMatcher } from '../net/networks.js'
import { CORE_REPLIES, replyText } from '../hooks/verdict.js'

/** What a PROXY header said: the real client (`proxy`), or nothing to take over (`local`: health checks, UNKNOWN). */
export type ProxyHeader =
  | { version: 1 | 2; command: 'proxy'; source: { address: string; port: number }; destination: { address: string; port: number } }
  | { version: 1 | 2; command: 'local' }

/** The peer sent something that is not a valid PROXY header (or sent it too slowly). */
export class ProxyHeaderError extends Error {
  constructor(
    message: string,
    /** Nothing at all arrived before the peer closed (a TCP health check): not worth an error line. */
    readonly silent = false,
  ) {
    super(message)
    this.name = 'ProxyHeaderError'
  }
}

const V1_PREFIX = Buffer.from('PROXY ', 'latin1')
/** v1 header lines are at most 107 bytes including CRLF (spec §2.1). */
const V1_MAX = 107
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
/** v2: 16 fixed bytes, then addresses and TLVs; real proxies send well under this. */
export const V2_MAX = 4096

/**
 * Parses a PROXY header at the start of `buf`. Returns undefined while more bytes are needed,
 * the header and its length once complete; throws ProxyHeaderError on anything invalid.
 */
export function parseProxyHeader(buf: Buffer): { header: ProxyHeader; length: number } | undefined {
  if (!buf.length) return undefined
  if (buf[0] === V1_PREFIX[0]) return parseV1(buf)
  if (buf[0] === V2_SIGNATURE[0]) return parseV2(buf)
  throw new ProxyHeaderError('not a PROXY protocol header')
}

function startsLike(buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length)
  return buf.subarray(0, n).equals(prefix.subarray(0, n))
}

function parseV1(buf: Buffer): { header: ProxyHeader; length: number } | undefined {
  if (!startsLike(buf, V1_PREFIX)) throw new ProxyHeaderError('not a PROXY protocol header')
  const end = buf.subarray(0, V1_MAX).indexOf('\r\n')
  if (end < 0) {
    if (buf.length >= V1_MAX) throw new ProxyHeaderError(`PROXY v1 header longer than ${V1_MAX} bytes`)
    return undefined
  }
  const length = end + 2
  const parts = buf.subarray(0, end).toString('latin1').split(' ')
  const family = parts[1]
  if (family === 'UNKNOWN') return { header: { version: 1, command: 'local' }, length }
  if ((family !== 'TCP4' && family !== 'TCP6') || parts.length !== 6) throw new ProxyHeaderError('malformed PROXY v1 header')
  const ipVersion = family === 'TCP4' ? 4 : 6
  const [, , src, dst, sport, dport] = parts as [string, string, string, string, string, string]
  if (net.isIP(src) !== ipVersion || net.isIP(dst) !== ipVersion) throw new ProxyHeaderError(`PROXY v1 header: addresses are not ${family}`)
  // "Leading zeroes are not permitted" (the PROXY protocol spec, 2.1): 0 to 65535 as written.
  const port = (p: string) => (/^(?:0|[1-9]\d{0,4})$/.test(p) && Number(p) <= 65535 ? Number(p) : undefined)
  const sp = port(sport)
  const dp = port(dport)
  if (sp === undefined || dp === undefined) throw new ProxyHeaderError('PROXY v1 header: bad port')
  return { header: { version: 1, command: 'proxy', source: { address: canonical(src, ipVersion), port: sp }, destination: { address: canonical(dst, ipVersion), port: dp } }, length }
}

function parseV2(buf: Buffer): { header: ProxyHeader; length: number } | undefined {
  if (!startsLike(buf, V2_SIGNATURE)) throw new ProxyHeaderError('not a PROXY protocol header')
  if (buf.length < 16) return undefined
  const verCmd = buf[12]!
  if (verCmd >> 4 !== 2) throw new ProxyHeaderError(`PROXY v2 header: unsupported version ${verCmd >> 4}`)
  const command = verCmd & 0x0f
  if (command > 1) throw new ProxyHeaderError(`PROXY v2 header: unknown command ${command}`)
  const length = 16 + buf.readUInt16BE(14)
  if (length > V2_MAX) throw new ProxyHeaderError(`PROXY v2 header longer than ${V2_MAX} bytes`)
  if (buf.length < length) return undefined
  // LOCAL: the proxy's own connection (health check); its address stays.
  if (command === 0) return { header: { version: 2, command: 'local' }, length }
  const family = buf[13]! >> 4
  const transport = buf[13]! & 0x0f
  // UNSPEC and UNIX carry no IP address to take over: the connection's own address stays.
  if (family === 0 || family === 3) return { header: { version: 2, command: 'local' }, length }
  if (transport !== 1) throw new ProxyHeaderError('PROXY v2 header: not a stream (TCP) connection')
  if (family === 1) {
    if (length < 16 + 12) throw new ProxyHeaderError('PROXY v2 header: address block too short for IPv4')
    const ip = (o: number) => `${buf[o]}.${buf[o + 1]}.${buf[o + 2]}.${buf[o + 3]}`
    return { header: { version: 2, command: 'proxy', source: { address: ip(16), port: buf.readUInt16BE(24) }, destination: { address: ip(20), port: buf.readUInt16BE(26) } }, length }
  }
  if (family === 2) {
    if (length < 16 + 36) throw new ProxyHeaderError('PROXY v2 header: address block too short for IPv6')
    const ip = (o: number) => canonical(Array.from({ length: 8 }, (_, i) => buf.readUInt16BE(o + 2 * i).toString(16)).join(':'), 6)
    return { header: { version: 2, command: 'proxy', source: { address: ip(16), port: buf.readUInt16BE(48) }, destination: { address: ip(32), port: buf.readUInt16BE(50) } }, length }
  }
  throw new ProxyHeaderError(`PROXY v2 header: unknown address family ${family}`)
}

/** One spelling per address (2001:db8::1, not 2001:0db8:0:0:...), as logs and limits key on it. */
function canonical(address: string, version: 4 | 6): string {
  return new net.SocketAddress({ address, family: version === 4 ? 'ipv4' : 'ipv6' }).address
}

/**
 * Reads a PROXY header from the start of a fresh socket; bytes after it stay in the socket for
 * the SMTP (or TLS) layer. Rejects with ProxyHeaderError after `timeoutMs`, on invalid bytes, or
 * when the peer leaves first.
 */
export function readProxyHeader(socket: net.Socket, timeoutMs: number): Promise<ProxyHeader> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    let finished = false
    const finish = (err: Error | undefined, header?: ProxyHeader) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      socket.off('readable', onReadable)
      socket.off('error', onError)
      socket.off('close', onClose)
      socket.off('end', onClose)
      if (err) reject(err)
      else resolve(header!)
    }
    const onReadable = () => {
      let chunk: Buffer | null
      while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
        buf = Buffer.concat([buf, chunk])
        let parsed: ReturnType<typeof parseProxyHeader>
        try {
          parsed = parseProxyHeader(buf)
        } catch (err) {
          return finish(err as Error)
        }
        if (!parsed) continue
        if (buf.length > parsed.length) socket.unshift(buf.subarray(parsed.length))
        return finish(undefined, parsed.header)
      }
    }
    const onError = (err: Error) => finish(new ProxyHeaderError(`connection failed before the PROXY header: ${err.message}`, !buf.length))
    const onClose = () => finish(new ProxyHeaderError('connection closed before a complete PROXY header', !buf.length))
    const timer = setTimeout(() => finish(new ProxyHeaderError(`no complete PROXY header within ${timeoutMs} ms`)), timeoutMs)
    timer.unref()
    socket.on('readable', onReadable)
    socket.on('error', onError)
    socket.on('close', onClose)
    socket.on('end', onClose)
  })
}

/** smtp-server's hooks between accepting a socket and starting its session (checked at start). */
interface ServerInternals {
  _expectsProxyHeader(socket: net.Socket): boolean
  _handleProxy(socket: net.Socket, callback: (err: Error | null, socketOptions?: { id: string; remoteAddress?: string; remotePort?: number }) => void): void
}

/** smtp-server's session id format (16 base-32 digits). */
const sessionId = () => BigInt('0x' + crypto.randomBytes(10).toString('hex')).toString(32).padStart(16, '0')

/**
 * Makes `server` read a PROXY header from every connection whose peer is in `trusted`, before the
 * SMTP greeting and before an implicit TLS handshake. smtp-server's own guard for that phase stays
 * in place (pending sockets are counted against maxClients and destroyed on close).
 */
export function acceptProxyProtocol(
  server: SMTPServer,
  opts: { trusted: string[]; timeoutMs: number; hostname: string; implicitTls: boolean; log: Logger },
): void {
  const internals = server as unknown as ServerInternals
  if (typeof internals._expectsProxyHeader !== 'function' || typeof internals._handleProxy !== 'function') {
    throw new Error('smtp-server internals changed: check core/smtp/proxy.ts against the installed version')
  }
  const isTrusted = networkMatcher(opts.trusted)
  internals._expectsProxyHeader = (socket) => isTrusted(socket.remoteAddress ?? '')
  internals._handleProxy = (socket, callback) => {
    const socketOptions: { id: string; remoteAddress?: string; remotePort?: number } = { id: sessionId() }
    const proxy = socket.remoteAddress ?? ''
    if (!isTrusted(proxy)) return void setImmediate(() => callback(null, socketOptions))
    // smtp-server's idle guard on this socket (smtp.socketTimeout) stays as a backstop behind
    // the header deadline, so that a silent proxy is logged as such.
    socket.setTimeout(opts.timeoutMs + 1000)
    readProxyHeader(socket, opts.timeoutMs).then(
      (header) => {
        if (header.command === 'proxy') {
          socketOptions.remoteAddress = header.source.address
          socketOptions.remotePort = header.source.port
          opts.log.debug({ session: socketOptions.id, client: header.source.address, proxy, version: header.version }, 'PROXY header read')
        } else {
          opts.log.debug({ session: socketOptions.id, proxy, version: header.version }, 'PROXY header without a client address (LOCAL): the proxy itself connected')
        }
        callback(null, socketOptions)
      },
      (err: ProxyHeaderError) => {
        if (err.silent) opts.log.debug({ proxy }, 'connection from a trusted proxy closed before sending anything')
        else opts.log.error({ proxy, error: err.message }, `connection from trusted proxy ${proxy} closed: ${err.message}`)
        socket.on('error', () => undefined) // a late EPIPE must not become an uncaught error
        if (!opts.implicitTls && !socket.destroyed && socket.writable) {
          socket.end(`421 ${replyText(CORE_REPLIES.proxyHeaderRequired(opts.hostname))}\r\n`)
          setTimeout(() => socket.destroy(), 1000).unref()
        } else {
          socket.destroy()
        }
        callback(err)
      },
    )
  }
}

interface ConnectionInternals {
  remoteAddress: string
  _server: { options: { onProxyHeaderRefused?: (remoteAddress: string) => void } }
  name: string
  send(code: number, data: string, context?: unknown): void
}

let guardInstalled = false

/**
 * A PROXY line as an SMTP command comes from a peer that is not a trusted proxy (a trusted one's
 * header is read before the session): it is answered 421 and the connection closed, so a client
 * cannot pass itself off as another address. (A v2 header read as SMTP ends in its own "QUIT".)
 */
export function refuseUntrustedProxyHeaders(): void {
  if (guardInstalled) return
  guardInstalled = true
  const proto = SMTPConnection.prototype as unknown as Record<string, unknown>
  proto.handler_PROXY = function (this: ConnectionInternals, _command: Buffer, callback: () => void) {
    this._server.options.onProxyHeaderRefused?.(this.remoteAddress)
    this.send(421, replyText(CORE_REPLIES.proxyHeaderRefused(this.name, this.remoteAddress)), false)
    callback()
  }
}
