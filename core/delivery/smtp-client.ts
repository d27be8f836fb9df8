import net from 'node:net'
import type { Readable } from 'node:stream'
import SMTPConnection from 'nodemailer/lib/smtp-connection'
import type { Destination } from './mx.js'

export interface TransactionOptions {
  port: number
  helo: string
  from: string
  to: string[]
  /** Called once per try: the message bytes (headers + body). */
  message: () => Readable
  connectTimeout: number
  commandTimeout: number
  /** Pass ESMTP BODY=8BITMIME when the server offers it. */
  eightBit?: boolean
}

export interface RecipientReply {
  ok: boolean
  code: number
  response: string
}

export type Outcome =
  /** No transaction happened with this host (refused, timed out, greeting/EHLO failed): try the next. */
  | { kind: 'unreachable'; response: string; code?: number; remoteHost: string }
  /** A transaction ran; each recipient has the reply that decides its fate. */
  | { kind: 'done'; replies: Map<string, RecipientReply>; remoteHost: string; tls: boolean }

type SmtpError = Error & { code?: string; responseCode?: number; response?: string; command?: string; recipient?: string; rejectedErrors?: SmtpError[] }

const describe = (err: SmtpError) => (err.response ?? `${err.code ?? 'error'}: ${err.message}`).replace(/\s+/g, ' ').trim()

/** An open connection to one host, reusable for further messages. */
interface Session {
  conn: SMTPConnection
  key: string
  remoteHost: string
  messages: number
  idleTimer?: NodeJS.Timeout
  /** Where the connection's errors and closes go while a transaction runs (else: drop it). */
  onError?: (err: SmtpError) => void
}

/**
 * Open connections kept per destination (address, port, EHLO name) after a transaction, so the
 * next message to the same host skips connect, greeting, EHLO and STARTTLS. A connection carries
 * at most `maxMessages` messages and is closed after `idleMs` without use.
 */
export class ConnectionPool {
  private readonly idle = new Map<string, Session[]>()
  private closed = false
  opened = 0

  constructor(
    private readonly maxMessages: number,
    private readonly idleMs: number,
  ) {}

  take(key: string): Session | undefined {
    const list = this.idle.get(key)
    while (list?.length) {
      const s = list.pop()!
      clearTimeout(s.idleTimer)
      if (!s.conn.destroyed) return s
    }
    return undefined
  }

  put(s: Session): void {
    s.onError = undefined
    if (this.closed || s.conn.destroyed || s.messages >= this.maxMessages || this.idleMs <= 0) return s.conn.quit()
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

/**
 * One SMTP transaction with one host: over a pooled connection when there is one, else a new
 * connection with opportunistic STARTTLS (after a failed handshake, the same host again in plain
 * text, as Postfix does).
 */
export async function transact(dest: Destination, o: TransactionOptions, pool: ConnectionPool): Promise<Outcome> {
  // Keyed by name too: the name is the TLS server name, and what events and DSNs report.
  const key = `${dest.name}|${dest.address}|${o.port}|${o.helo}`
  const pooled = pool.take(key)
  if (pooled) {
    const outcome = await send(pooled, o, pool)
    // The server dropped the idle connection before reading the message: open a new one.
    if (outcome !== 'reconnect') return outcome
  }
  let opened = await open(dest, o, key, false, pool)
  if ('kind' in opened && opened.response.startsWith('ETLS')) opened = await open(dest, o, key, true, pool)
  if ('kind' in opened) return opened
  const outcome = await send(opened, o, pool)
  if (outcome === 'reconnect') return { kind: 'unreachable', response: 'connection closed before the message was sent', remoteHost: opened.remoteHost }
  return outcome
}

function open(dest: Destination, o: TransactionOptions, key: string, ignoreTLS: boolean, pool: ConnectionPool): Promise<Session | Extract<Outcome, { kind: 'unreachable' }>> {
  const remoteHost = `${dest.name}[${dest.address}]:${o.port}`
  return new Promise((resolve) => {
    let settled = false
    const conn = new SMTPConnection({
      host: dest.address,
      port: o.port,
      name: o.helo,
      servername: net.isIP(dest.name) ? undefined : dest.name,
      ignoreTLS,
      opportunisticTLS: true,
      connectionTimeout: o.connectTimeout,
      greetingTimeout: o.connectTimeout,
      socketTimeout: o.commandTimeout,
      tls: { rejectUnauthorized: false, minVersion: 'TLSv1.2' },
      logger: false,
      debug: false,
      allowInternalNetworkInterfaces: true,
    })
    const session: Session = { conn, key, remoteHost, messages: 0 }
    const fail = (err: SmtpError) => {
      if (settled) return
      settled = true
      conn.close()
      // A handshake that fails after STARTTLS surfaces as ETLS or as a socket error mid-upgrade.
      const tlsFailed = err.code === 'ETLS' || conn.upgrading === true || /SSL routines|TLS/.test(err.message)
      resolve({ kind: 'unreachable', response: tlsFailed ? `ETLS: ${describe(err)}` : describe(err), code: err.responseCode, remoteHost })
    }
    // Errors and closes after the connect go to the transaction in progress; an idle pooled
    // connection that fails or is closed by the server just leaves the pool.
    conn.on('error', (err: SmtpError) => (settled ? session.onError ? session.onError(err) : pool.remove(session) : fail(err)))
    conn.on('end', () => {
      const closed = Object.assign(new Error('connection closed by server'), { code: 'ECONNECTION' })
      if (!settled) return fail(closed)
      if (session.onError) session.onError(closed)
      else pool.remove(session)
    })
    // A silent close before the greeting comes to this callback rather than as an 'error' event.
    conn.connect((err?: SmtpError) => {
      if (err) return fail(err)
      settled = true
      pool.opened++
      resolve(session)
    })
  })
}

function send(s: Session, o: TransactionOptions, pool: ConnectionPool): Promise<Outcome | 'reconnect'> {
  const reused = s.messages > 0
  const tls = s.conn.secure
  return new Promise((resolve) => {
    let settled = false
    const stream = o.message()
    const finish = (outcome: Outcome | 'reconnect', keep: 'keep' | 'reset' | 'close') => {
      if (settled) return
      settled = true
      s.onError = undefined
      if (keep === 'keep') pool.put(s)
      else if (keep === 'reset') s.conn.reset((err) => (err ? s.conn.close() : pool.put(s)))
      else s.conn.close()
      resolve(outcome)
    }
    const replies = (err: SmtpError): Map<string, RecipientReply> => {
      const out = new Map<string, RecipientReply>()
      const code = err.responseCode ?? 0
      for (const rcpt of o.to) out.set(rcpt, { ok: false, code, response: code ? describe(err) : `connection lost: ${describe(err)}` })
      for (const r of err.rejectedErrors ?? []) if (r.recipient) out.set(r.recipient, { ok: false, code: r.responseCode ?? 0, response: describe(r) })
      return out
    }
    const fail = (err: SmtpError) => {
      if (reused && !err.responseCode && !stream.readableDidRead) return finish('reconnect', 'close')
      finish({ kind: 'done', replies: replies(err), remoteHost: s.remoteHost, tls }, 'close')
    }
    s.onError = fail
    s.conn.send({ from: o.from, to: o.to, use8BitMime: o.eightBit }, stream, (err, info) => {
      s.messages++
      if (err) {
        const e = err as SmtpError
        // The server refused this message, the connection is fine: RSET and keep it.
        const refused = (e.code === 'EENVELOPE' || e.code === 'EMESSAGE') && e.responseCode && e.responseCode !== 421 && !s.conn.destroyed
        if (refused) return finish({ kind: 'done', replies: replies(e), remoteHost: s.remoteHost, tls }, 'reset')
        return fail(e)
      }
      const out = new Map<string, RecipientReply>()
      for (const rcpt of info.accepted) out.set(rcpt, { ok: true, code: 250, response: info.response })
      for (const r of (info.rejectedErrors ?? []) as SmtpError[]) if (r.recipient) out.set(r.recipient, { ok: false, code: r.responseCode ?? 0, response: describe(r) })
      finish({ kind: 'done', replies: out, remoteHost: s.remoteHost, tls }, 'keep')
    })
  })
}
