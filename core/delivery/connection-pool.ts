import crypto from 'node:crypto'
import type { Destination } from './mx.js'
import type { Session, SessionPool, TransactionOptions } from './smtp-session.js'

/**
 * Open connections kept per destination after a transaction, so the next message to the same
 * host skips connect, greeting, EHLO, STARTTLS and AUTH. The key holds everything that makes a
 * connection what it is (host, port, EHLO name, source address, TLS policy, AUTH user, LMTP).
 * A connection carries at most `maxMessages` messages and is closed after `idleMs` without use.
 */
export class ConnectionPool implements SessionPool {
  private readonly idle = new Map<string, Session[]>()
  private closed = false
  opened = 0
  /** Open now: busy in a transaction or idle here (smtp-session.ts counts them). */
  open = 0

  constructor(
    private readonly maxMessages: number,
    private readonly idleMs: number,
  ) {}

  take(key: string): Session | undefined {
    const list = this.idle.get(key)
    while (list?.length) {
      const s = list.pop()!
      clearTimeout(s.idleTimer)
      if (!s.conn.destroyed && !s.desynced) return s
      s.conn.close()
    }
    return undefined
  }

  put(s: Session): void {
    s.onError = undefined
    // Its replies are out of step with its commands: not even QUIT is worth waiting for.
    if (s.desynced) return s.conn.close()
    if (this.closed || s.conn.destroyed || s.messages >= (s.maxMessages ?? this.maxMessages) || this.idleMs <= 0) return s.conn.quit()
    const list = this.idle.get(s.key) ?? []
    list.push(s)
    this.idle.set(s.key, list)
    s.idleTimer = setTimeout(() => {
      this.remove(s)
      s.conn.quit()
    }, this.idleMs)
    s.idleTimer.unref()
  }

  remove(s: Session): void {
    clearTimeout(s.idleTimer)
    const list = this.idle.get(s.key)
    const i = list?.indexOf(s) ?? -1
    if (i >= 0) list!.splice(i, 1)
    if (list && !list.length) this.idle.delete(s.key)
  }

  /**
   * QUITs the idle connections to this address and port (under any name or key); resolves once the
   * server has closed them (at most a second), so a new connection never overlaps them.
   */
  async closeIdleTo(address: string, port: number): Promise<void> {
    const closing: Promise<unknown>[] = []
    for (const list of [...this.idle.values()]) {
      for (const s of [...list]) {
        if (s.address !== address || s.port !== port) continue
        this.remove(s)
        closing.push(new Promise((resolve) => s.conn.once('end', resolve)))
        s.conn.quit()
      }
    }
    if (!closing.length) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([Promise.all(closing), new Promise((resolve) => (timer = setTimeout(resolve, 1000)))])
    clearTimeout(timer)
  }

  /** QUITs every idle connection; later releases close at once. */
  close(): void {
    this.closed = true
    for (const list of this.idle.values()) for (const s of list) {
      clearTimeout(s.idleTimer)
      s.conn.quit()
    }
    this.idle.clear()
  }
}

/** Everything that changes what a connection is; the password only as a hash. */
export function poolKey(dest: Destination, o: TransactionOptions): string {
  const auth = o.auth ? `${o.auth.user}#${crypto.createHash('sha256').update(`${o.auth.user}\0${o.auth.pass}`).digest('hex').slice(0, 16)}` : ''
  return [o.lmtp ? 'lmtp' : 'smtp', dest.name, dest.address, o.socketPath ?? '', o.port, o.helo, o.localAddress ?? '', o.tls ?? 'may', o.implicitTls ? 'implicit' : 'starttls', auth].join('|')
}
