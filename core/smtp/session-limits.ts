// Per-client connection counting (`smtp.maxConnectionsPerClient`) and the session time limit
// (`smtp.sessionTimeout`), across all listeners.
import type { SMTPServer, SMTPServerSession } from 'smtp-server'
import type { Logger } from 'pino'
import { CORE_REPLIES, replyText, type Reply } from '../hooks/verdict.js'
import { sendToSessions } from './server-internals.js'

/** What a session holds: the address it counts against, when its time is up. */
interface Held {
  ip?: string
  deadline?: number
  /** Counted elsewhere (SharedClientCounts) and not answered yet; `closed` if the session ended meanwhile. */
  pending?: boolean
  closed?: boolean
}

/** Per-client counts kept for several processes (config `workers`: the primary holds them). */
export interface SharedClientCounts {
  /** Counts one for `ip` unless it has `max` open; false: refused. */
  admit(ip: string, max: number): Promise<boolean>
  release(ip: string): void
}

export class SessionLimits {
  /** Open sessions per client address. */
  private readonly perClient = new Map<string, number>()
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

  /** Counts the session against `ip`; the refusal (421) when that address already has `max` open. */
  admit(session: SMTPServerSession, ip: string, max: number, hostname: string): Reply | undefined | Promise<Reply | undefined> {
    if (this.shared) return this.admitShared(this.shared, session, ip, max, hostname)
    const open = this.perClient.get(ip) ?? 0
    if (open >= max) {
      this.log.warn({ session: session.id, client: ip, open, limit: max }, 'too many connections from one client: refused')
      return CORE_REPLIES.tooManyConnections(hostname, ip)
    }
    this.perClient.set(ip, open + 1)
    this.held.set(session, { ip })
  }

  private async admitShared(shared: SharedClientCounts, session: SMTPServerSession, ip: string, max: number, hostname: string): Promise<Reply | undefined> {
    const held: Held = { ip, pending: true }
    this.held.set(session, held)
    let ok: boolean
    try {
      ok = await shared.admit(ip, max)
    } catch {
      ok = true // the primary is going away: this worker stops anyway; do not refuse for that
    }
    held.pending = false
    if (!ok) {
      held.ip = undefined
      this.log.warn({ session: session.id, client: ip, limit: max }, 'too many connections from one client: refused')
      return CORE_REPLIES.tooManyConnections(hostname, ip)
    }
    if (held.closed) shared.release(ip)
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
    const held = this.held.get(session)
    if (!held) return
    if (held.pending) held.closed = true
    else if (held.ip && this.shared) this.shared.release(held.ip)
    else if (held.ip) {
      const open = (this.perClient.get(held.ip) ?? 1) - 1
      if (open > 0) this.perClient.set(held.ip, open)
      else this.perClient.delete(held.ip)
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
