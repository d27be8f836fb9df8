// Per-client connection counting (`smtp.maxConnectionsPerClient`) and the session time limit
// (`smtp.sessionTimeout`), across all listeners.
import type { SMTPServer, SMTPServerSession } from 'smtp-server'
import type { Logger } from 'pino'
import { CORE_REPLIES, replyText, type Reply } from '../hooks/verdict.js'
import { sendToSession } from './server-internals.js'

export class SessionLimits {
  /** Open sessions per client address. */
  private readonly perClient = new Map<string, number>()
  /** What each session holds: the address it counts against, its time-limit timer. */
  private readonly held = new WeakMap<SMTPServerSession, { ip?: string; timer?: NodeJS.Timeout }>()

  constructor(private readonly log: Logger) {}

  /** Counts the session against `ip`; the refusal (421) when that address already has `max` open. */
  admit(session: SMTPServerSession, ip: string, max: number, hostname: string): Reply | undefined {
    const open = this.perClient.get(ip) ?? 0
    if (open >= max) {
      this.log.warn({ session: session.id, client: ip, open, limit: max }, 'too many connections from one client: refused')
      return CORE_REPLIES.tooManyConnections(hostname, ip)
    }
    this.perClient.set(ip, open + 1)
    this.held.set(session, { ip })
  }

  /** Closes the session (421 4.4.2) once it has lasted `ms`: a client that never finishes. */
  limitTime(session: SMTPServerSession, ms: number, servers: () => SMTPServer[], hostname: string): void {
    const held = this.held.get(session) ?? {}
    this.held.set(session, held)
    held.timer = setTimeout(() => {
      const reply = CORE_REPLIES.sessionTimeLimit(hostname)
      for (const server of servers()) {
        if (sendToSession(server, session, reply.code, replyText(reply))) this.log.info({ session: session.id, client: session.remoteAddress }, 'session time limit reached: closing')
      }
    }, ms)
    held.timer.unref()
  }

  /** The session closed: its count and its timer go. */
  release(session: SMTPServerSession): void {
    const held = this.held.get(session)
    if (!held) return
    clearTimeout(held.timer)
    if (held.ip) {
      const open = (this.perClient.get(held.ip) ?? 1) - 1
      if (open > 0) this.perClient.set(held.ip, open)
      else this.perClient.delete(held.ip)
    }
    this.held.delete(session)
  }
}
