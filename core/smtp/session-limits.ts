// Per-client connection counting (`smtp.maxConnectionsPerClient`) and the session time limit
// (`smtp.sessionTimeout`), across all listeners. A client counts under its clientKey: an IPv6
// client with its whole /`smtp.clientIpv6Prefix` network, an IPv4 client by its address.
import type { SMTPServer, SMTPServerSession } from 'smtp-server'
import type { Logger } from 'pino'
import { CORE_REPLIES, replyText, type Reply } from '../hooks/verdict.js'
import { sendToSessions } from './server-internals.js'
import { clientKey, DEFAULT_IPV6_PREFIX } from '../net/client-key.js'
import type { ArrivalGuard, ArrivalRefusal } from './arrivals.js'
import { unmapIp } from './session.js'
import { TlsFailures } from './tls-failures.js'

/** What a session holds: the client key it counts against, when its time is up. */
interface Held {
  key?: string
  deadline?: number
  /** Counted elsewhere (SharedClientCounts) and not answered yet; `closed` if the session ended meanwhile. */
  pending?: boolean
  closed?: boolean
}

/** Counts kept for several processes (config `workers`: the primary holds them): per client key, per listener. */
export interface SharedClientCounts {
  /**
   * Counts one for every [key, max] unless one of them has `max` open: the index of that one (nothing
   * counted), or -1. Then, either way, releases one of each of `release` (in the same step).
   */
  admit(counts: [key: string, max: number, also?: string][], release?: string[]): Promise<number>
  release(...keys: string[]): void
  /** How many SMTP workers share the counts (each listener's stress level is a share: core/smtp/deadlines.ts). */
  processes: number
}

/** See SessionLimits.clients(). */
export type ClientChecks = Pick<ArrivalGuard, 'arrive' | 'settle' | 'tlsFailed'> & { trusted(ip: string): boolean }

/** What SessionLimits.clients() reads of the config in force. */
type ClientConfig = {
  hostname: string
  smtp: { maxClients: number; maxConnectionsPerClient: number; clientIpv6Prefix: number; maxTlsHandshakeFailures: number; tlsHandshakeFailurePeriod: number }
}

/** A connection on its way in counted by the primary (`shared`): its keys there, until it is answered, settled, gone. */
interface SharedArrival {
  listener: string
  arriving?: string
  pending: boolean
  gone?: boolean
}

export class SessionLimits {
  /** Open sessions per client key (clientKey: an IPv4 address, an IPv6 network). */
  private readonly perClient = new Map<string, number>()
  /** Connections not admitted yet (core/smtp/arrivals.ts) per client key, in this process; and each one's key by session id. */
  private readonly arriving = new Map<string, number>()
  private readonly arrivalKeys = new Map<string, string>()
  /** Failed implicit-TLS handshakes per client key (core/smtp/tls-failures.ts). */
  private readonly tlsFailures = new TlsFailures()
  /** In an SMTP worker (`shared`): connections counted by the primary from accept to close, by session id. */
  private readonly sharedArrivals = new Map<string, SharedArrival>()
  /** Every open session with a count or a time limit (released at close). */
  private readonly held = new Map<SMTPServerSession, Held>()
  /**
   * One timer for all time limits, not one per session: an idle session costs no timer, and
   * thousands of them cost one sweep a second. It runs while any session has a deadline.
   */
  private sweeper?: NodeJS.Timeout
  private tick = 1000
  private servers: () => SMTPServer[] = () => []
  private hostname = ''

  /** Set in an SMTP worker process: the counts are the whole relay's, kept by the primary. */
  shared: SharedClientCounts | undefined

  constructor(private readonly log: Logger) {}

  /**
   * What listener `listener` asks of its clients, with `config()` in force and `trusted(ip)` (a
   * client in smtp.trustedNetworks: no per-client limit): the count of arriving connections
   * (core/smtp/arrivals.ts), refusals of a client with too many failed TLS handshakes, and whether a
   * client is trusted (exempt from the limit of commands that move no mail, core/smtp/patches.ts 14).
   * In an SMTP worker the primary also counts the listener's connections against smtp.maxClients,
   * for the whole relay.
   */
  clients(config: () => ClientConfig, trusted: (ip: string) => boolean, listener: string): ClientChecks {
    return {
      arrive: (id, address) => {
        const ip = unmapIp(address)
        const c = config()
        const max = trusted(ip) ? undefined : c.smtp.maxConnectionsPerClient
        if (max !== undefined) {
          const { maxTlsHandshakeFailures: limit, tlsHandshakeFailurePeriod: period, clientIpv6Prefix } = c.smtp
          const key = clientKey(ip, clientIpv6Prefix)
          const failures = this.tlsFailures.over(key, limit, period)
          if (failures !== undefined) {
            this.log.warn({ session: id, client: ip, key, failures, limit }, 'too many failed TLS handshakes from one client: refused')
            return { ...CORE_REPLIES.tooManyTlsFailures(c.hostname, ip), rule: 'core:too-many-tls-failures' }
          }
        }
        if (this.shared) return this.arriveShared(this.shared, id, ip, c, max, listener)
        return max === undefined ? undefined : this.arrive(id, ip, max, c.hostname, c.smtp.clientIpv6Prefix)
      },
      tlsFailed: (address) => {
        const ip = unmapIp(address)
        const c = config()
        if (!trusted(ip) && c.smtp.maxTlsHandshakeFailures > 0) this.tlsFailures.failed(clientKey(ip, c.smtp.clientIpv6Prefix), c.smtp.tlsHandshakeFailurePeriod)
      },
      settle: (id, gone) => this.settle(id, gone),
      trusted: (address) => trusted(unmapIp(address)),
    }
  }

  /** A connection from `ip` was accepted: the refusal when its client already has `max` on their way in. */
  arrive(id: string, ip: string, max: number, hostname: string, ipv6Prefix: number = DEFAULT_IPV6_PREFIX): ArrivalRefusal | undefined {
    const key = clientKey(ip, ipv6Prefix)
    const arriving = this.arriving.get(key) ?? 0
    // Its open sessions count too: at its limit it is refused now, not after it held a slot.
    if (arriving + (this.perClient.get(key) ?? 0) >= max) {
      this.log.warn({ session: id, client: ip, key, arriving, limit: max }, 'too many connections from one client: refused')
      return { ...CORE_REPLIES.tooManyConnections(hostname, ip), rule: 'core:max-connections-per-client' }
    }
    this.arriving.set(key, arriving + 1)
    this.arrivalKeys.set(id, key)
  }

  /**
   * As arrive, counted by the primary for every worker: the connection against the listener's
   * smtp.maxClients until it closes, and (`max`: not trusted) against its client's arrivals.
   */
  private async arriveShared(shared: SharedClientCounts, id: string, ip: string, c: ClientConfig, max: number | undefined, listener: string): Promise<ArrivalRefusal | undefined> {
    const key = clientKey(ip, c.smtp.clientIpv6Prefix)
    const held: SharedArrival = { listener: `clients ${listener}`, arriving: max === undefined ? undefined : `arriving ${key}`, pending: true }
    this.sharedArrivals.set(id, held)
    // A trusted client (max undefined) is counted but never refused for smtp.maxClients, as in one process (patches.ts).
    // A client's connections on their way in and its open sessions together: a client at its limit is
    // refused here, before it holds a slot of smtp.maxClients that a flood would keep taken.
    const counts: [string, number, string?][] = [[held.listener, max === undefined ? Number.MAX_SAFE_INTEGER : c.smtp.maxClients], ...(held.arriving ? [[held.arriving, max!, key] as [string, number, string]] : [])]
    const full = await shared.admit(counts).catch(() => -1) // the primary is going away: not the client's fault
    held.pending = false
    if (full < 0 && held.gone) shared.release(...counts.map(([k]) => k))
    if (full >= 0 || held.gone) this.sharedArrivals.delete(id)
    if (full < 0) return undefined
    if (full === 0) {
      this.log.warn({ session: id, client: ip, listener, limit: c.smtp.maxClients }, 'too many connected clients (smtp.maxClients): refused')
      return { ...CORE_REPLIES.tooManyClients(c.hostname), rule: 'core:max-clients' }
    }
    this.log.warn({ session: id, client: ip, key, limit: max }, 'too many connections from one client: refused')
    return { ...CORE_REPLIES.tooManyConnections(c.hostname, ip), rule: 'core:max-connections-per-client' }
  }

  /**
   * The connection `id` is no longer on its way in: its session is counted (admit), or it closed
   * (`gone`: then it no longer counts against smtp.maxClients either).
   */
  settle(id: string, gone = false): void {
    const shared = this.sharedArrivals.get(id)
    if (shared?.pending) shared.gone ||= gone
    else if (shared) {
      if (shared.arriving) this.shared?.release(shared.arriving)
      shared.arriving = undefined
      if (gone) {
        this.sharedArrivals.delete(id)
        this.shared?.release(shared.listener)
      }
    }
    const key = this.arrivalKeys.get(id)
    if (key === undefined) return
    this.arrivalKeys.delete(id)
    const arriving = (this.arriving.get(key) ?? 1) - 1
    if (arriving > 0) this.arriving.set(key, arriving)
    else this.arriving.delete(key)
  }

  /**
   * Counts the session against the client key of `ip` (IPv6: its /`ipv6Prefix` network); the
   * refusal (421, naming the address itself) when that key already has `max` open.
   */
  admit(session: SMTPServerSession, ip: string, max: number, hostname: string, ipv6Prefix: number = DEFAULT_IPV6_PREFIX): Reply | undefined | Promise<Reply | undefined> {
    const key = clientKey(ip, ipv6Prefix)
    if (this.shared) return this.admitShared(this.shared, session, ip, key, max, hostname)
    this.settle(session.id)
    const open = this.perClient.get(key) ?? 0
    if (open >= max) {
      this.log.warn({ session: session.id, client: ip, key, open, limit: max }, 'too many connections from one client: refused')
      return CORE_REPLIES.tooManyConnections(hostname, ip)
    }
    this.perClient.set(key, open + 1)
    this.held.set(session, { key })
  }

  private async admitShared(shared: SharedClientCounts, session: SMTPServerSession, ip: string, key: string, max: number, hostname: string): Promise<Reply | undefined> {
    const held: Held = { key, pending: true }
    this.held.set(session, held)
    // Its arrival is released by the same call: released apart, the primary could for a moment count
    // the client neither arriving nor open, and let one more of a flood take a slot of smtp.maxClients.
    const arrival = this.sharedArrivals.get(session.id)
    const arriving = arrival?.pending ? undefined : arrival?.arriving
    if (arrival) arrival.arriving = arrival.pending ? arrival.arriving : undefined
    this.settle(session.id)
    // The primary is going away: this worker stops anyway; do not refuse for that.
    const ok = (await shared.admit([[key, max]], arriving === undefined ? [] : [arriving]).catch(() => -1)) < 0
    held.pending = false
    if (!ok) {
      held.key = undefined
      this.log.warn({ session: session.id, client: ip, key, limit: max }, 'too many connections from one client: refused')
      return CORE_REPLIES.tooManyConnections(hostname, ip)
    }
    if (held.closed) shared.release(key)
  }

  /** Closes the session (421 4.4.2) once it has lasted `ms`: a client that never finishes. */
  limitTime(session: SMTPServerSession, ms: number, servers: () => SMTPServer[], hostname: string): void {
    const held = this.held.get(session) ?? {}
    this.held.set(session, held)
    held.deadline = Date.now() + ms
    this.servers = servers
    this.hostname = hostname
    // Late by at most a twentieth of the limit (a second at most).
    this.tick = Math.min(1000, Math.max(50, Math.floor(ms / 20)))
    if (!this.sweeper) this.arm()
  }

  /** The session closed: its count and its time limit go. */
  release(session: SMTPServerSession): void {
    this.settle(session.id)
    const held = this.held.get(session)
    if (!held) return
    if (held.pending) held.closed = true
    else if (held.key && this.shared) this.shared.release(held.key)
    else if (held.key) {
      const open = (this.perClient.get(held.key) ?? 1) - 1
      if (open > 0) this.perClient.set(held.key, open)
      else this.perClient.delete(held.key)
    }
    this.held.delete(session)
    if (this.held.size === 0) this.disarm()
  }

  private arm(): void {
    this.sweeper = setTimeout(() => this.sweep(), this.tick)
    this.sweeper.unref()
  }

  private disarm(): void {
    clearTimeout(this.sweeper)
    this.sweeper = undefined
  }

  /** Sends 421 to every session whose time is up (once: it closes, and release() forgets it). */
  private sweep(): void {
    this.sweeper = undefined
    const now = Date.now()
    let pending = false
    const due = new Set<SMTPServerSession>()
    for (const [session, held] of this.held) {
      if (held.deadline === undefined) continue
      if (held.deadline > now) pending = true
      else {
        held.deadline = undefined
        due.add(session)
      }
    }
    if (due.size) {
      const reply = CORE_REPLIES.sessionTimeLimit(this.hostname)
      for (const server of this.servers()) {
        for (const session of sendToSessions(server, due, reply.code, replyText(reply))) this.log.info({ session: session.id, client: session.remoteAddress }, 'session time limit reached: closing')
      }
    }
    if (pending) this.arm()
  }
}
