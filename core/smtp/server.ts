// One smtp-server for one configured listener: the server options taken from config, and binding.
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server'
import type { Reply } from '../hooks/verdict.js'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import type { RelayConfig } from '../config/schema.js'
import { acceptProxyProtocol } from './proxy.js'
import { guardArrivals, type ArrivalGuard } from './arrivals.js'
import { logRefusal } from '../events/log.js'
import type { ClientChecks } from './session-limits.js'
import { unmapIp, type ListenerInfo } from './session.js'
import type { TlsFiles } from './tls.js'
import { listenFailure, type ListenFailure } from '../net/listen-error.js'
import { hostPortText } from '../net/host-port.js'
import { confirmedReverse } from '../dns/confirmed-reverse.js'
import { stressLevel } from './deadlines.js'

export interface Listener extends ListenerInfo {
  tls: 'starttls' | 'implicit' | 'none'
  allowPlaintextAuth: boolean
  /** Offer AUTH here (config listen[].auth). */
  auth: boolean
  /** Trusted PROXY protocol senders (IPs, CIDR blocks); empty: none. */
  proxyProtocol: string[]
}

/** The SMTP command callbacks, whether any plugin does AUTH, and the checks of client addresses (SessionLimits.clients). */
export type Handlers = Pick<SMTPServerOptions, 'onConnect' | 'onSecure' | 'onAuth' | 'onMailFrom' | 'onRcptTo' | 'onData' | 'onClose'> & {
  hasAuth: boolean
  clients: ClientChecks
  /** A command refused by smtp-server itself (core/smtp/patches.ts 15). */
  onRefused: (session: SMTPServerSession, command: string, reply: Reply) => void
  processes?: number
}

/** `processes`: in an SMTP worker, how many share the listener (config `workers`); each is under stress at its share. */
export function createSmtpServer(c: RelayConfig, listener: Listener, log: Logger, resolver: Resolver, tls: TlsFiles | undefined, { hasAuth, clients, processes, ...handlers }: Handlers): SMTPServer {
  const server = new SMTPServer({
    name: c.hostname,
    banner: 'Relay',
    secure: listener.tls === 'implicit',
    // A client that half-closes after its last command still gets its replies (core/smtp/patches.ts 20).
    allowHalfOpen: true,
    ...(tls ? { key: tls.key, cert: tls.cert, sniOptions: tls.sniOptions, minVersion: tls.minVersion } : {}),
    hideSTARTTLS: listener.tls !== 'starttls',
    size: c.smtp.maxMessageSize,
    // In an SMTP worker (`processes`) the primary counts smtp.maxClients for the whole relay
    // (session-limits.ts): a local count would also hold the connections still waiting for the
    // primary's answer, so a flood that the per-client limit refuses would shut other clients out here.
    maxClients: processes ? 0 : c.smtp.maxClients,
    socketTimeout: c.smtp.socketTimeout,
    closeTimeout: c.shutdownTimeout,
    hideENHANCEDSTATUSCODES: false,
    hide8BITMIME: false,
    hidePIPELINING: false,
    hideSMTPUTF8: false,
    // RFC 3461: NOTIFY, RET, ENVID, ORCPT are parsed and validated by smtp-server, kept in the
    // envelope args, honoured in bounces and passed on to a next hop that offers DSN.
    hideDSN: false,
    hideREQUIRETLS: true,
    authMethods: ['PLAIN', 'LOGIN'],
    allowInsecureAuth: listener.allowPlaintextAuth,
    // Submission needs AUTH before MAIL; smtp-server enforces it once AUTH is on offer (in TLS).
    authOptional: !(hasAuth && listener.role === 'submission'),
    authRequiredMessage: '5.7.0 Authentication required',
    authAfterStartTls: hasAuth && !listener.allowPlaintextAuth,
    maxAllowedUnauthenticatedCommands: c.smtp.maxUnauthenticatedCommands,
    // Every 4xx/5xx reply counts (core/smtp/patches.ts); the one that reaches the limit is a 421.
    maxErrors: c.smtp.maxErrors,
    // Clients in smtp.trustedNetworks are not held to the limit of commands that move no mail (core/smtp/patches.ts 14).
    trustedClient: clients.trusted,
    onTooManyErrors: (session: { id: string; remoteAddress: string }) => log.warn({ session: session.id, client: session.remoteAddress }, 'too many errors: closing the session'),
    firstCommandTimeout: c.smtp.firstCommandTimeout,
    // A command whole within the idle limit, message data at minDataRate; stress (core/smtp/deadlines.ts).
    stressTimeout: c.smtp.stressTimeout,
    minDataRate: c.smtp.minDataRate,
    // A stressTimeout no shorter than socketTimeout turns stress mode off: nothing to enter, nothing to log.
    stressAt: c.smtp.stressTimeout < c.smtp.socketTimeout ? stressLevel(c.smtp.maxClients, processes) : 0,
    onStress: (stressed: boolean, sessions: number) =>
      stressed
        ? log.warn({ listener: { host: listener.host, port: listener.port }, sessions, stressTimeout: c.smtp.stressTimeout }, 'listener under stress: clients neither trusted nor authenticated get smtp.stressTimeout')
        : log.info({ listener: { host: listener.host, port: listener.port }, sessions }, 'listener no longer under stress'),
    onInputTooSlow: (session: { id: string; remoteAddress: string }, after: string | undefined, inData: boolean) =>
      log.info({ session: session.id, client: session.remoteAddress, after: after ?? 'CONNECT' }, inData ? 'message data too slow: closing' : `command too slow after ${after ?? 'CONNECT'}: closing`),
    onImproperPipelining: (session: { id: string; remoteAddress: string }) => log.warn({ session: session.id, client: session.remoteAddress }, 'improper pipelining: message data before the 354 reply to DATA; closing the session'),
    onFirstCommandTimeout: (session: { id: string; remoteAddress: string }) => log.info({ session: session.id, client: session.remoteAddress }, 'no command before the first-command timeout: closing'),
    // Postfix's "timeout after DATA from ...": which command the client went quiet after.
    onIdleTimeout: (session: { id: string; remoteAddress: string }, after: string | undefined) => log.info({ session: session.id, client: session.remoteAddress, after: after ?? 'CONNECT' }, `idle timeout after ${after ?? 'CONNECT'}: closing`),
    onProxyHeaderRefused: (client: string) => log.warn({ client, listener: { host: listener.host, port: listener.port } }, `PROXY header from ${client} refused: not a trusted proxy`),
    disableReverseLookup: !c.smtp.reverseLookup,
    resolver: { reverse: (ip: string, cb: (err: Error | null, names?: string[]) => void) => void confirmedReverse(resolver, ip).then((n) => cb(null, n), (e: Error) => cb(e)) },
    logger: false,
    greetingDelay: c.smtp.greetingDelay,
    ...handlers,
  } as SMTPServerOptions)
  if (listener.proxyProtocol.length) {
    // Header before greeting (and before TLS on 465); its wait is capped at 10 s.
    const timeoutMs = Math.min(10_000, c.smtp.socketTimeout)
    acceptProxyProtocol(server, { trusted: listener.proxyProtocol, timeoutMs, hostname: c.hostname, implicitTls: listener.tls === 'implicit', log })
  }
  // After the PROXY header (its client address counts), before the TLS handshake and the reverse lookup.
  // A refusal there has no session yet: its `refused` line names the client as the arrival knows it.
  const refused: ArrivalGuard['refused'] = (id, ip, socket, r) => {
    const session = { id, remoteAddress: unmapIp(ip), remotePort: socket.remotePort ?? 0, localAddress: unmapIp(socket.localAddress ?? ''), localPort: socket.localPort ?? 0, clientHostname: `[${unmapIp(ip)}]`, listener, secure: false, trusted: false }
    logRefusal(log, { session, stage: 'connect', hook: 'protocol', code: r.code, status: r.status, text: r.message, rule: r.rule })
  }
  guardArrivals(server, { arrive: clients.arrive, settle: clients.settle, tlsFailed: clients.tlsFailed, refused, implicitTls: listener.tls === 'implicit', handshakeTimeout: c.smtp.firstCommandTimeout })
  return server
}

/** Binds the server; `listener.port` becomes the real port (for a configured port 0). */
/** Binds the listener; a failure names it as config does (`at`: `listen[0]`), with its address. */
export async function listen(server: SMTPServer, listener: Listener, log: Logger, at = 'listen'): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const failed = (err: ListenFailure) => reject(listenFailure(err, `${at} ${hostPortText(listener.host, listener.port)}`))
    server.once('error', failed)
    server.listen(listener.port, listener.host, () => {
      server.off('error', failed)
      resolve()
    })
  })
  // Client-side failures (a TLS handshake a client broke off, a reset) come here too: one short
  // line each; anything else is a server problem.
  // (A failed TLS handshake names its client in err.meta, an error of a client's socket in err.remoteAddress.)
  server.on('error', (err: Error & { remoteAddress?: string; meta?: { stage?: string; remoteAddress?: string } }) => {
    const client = err.meta?.remoteAddress ?? err.remoteAddress
    if (client) log.info({ client, stage: err.meta?.stage, error: err.message.trim() }, 'client connection failed')
    else log.error({ err, listener: { host: listener.host, port: listener.port } }, 'listener error')
  })
  const address = server.server.address()
  if (address && typeof address === 'object') listener.port = address.port
  log.info({ host: listener.host, port: listener.port, role: listener.role, tls: listener.tls }, `listening on ${hostPortText(listener.host, listener.port)} (${listener.role})`)
}
