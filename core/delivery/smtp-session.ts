// One connection to one host (SMTP or LMTP over nodemailer's SMTPConnection): connect (TCP, a unix
// socket, implicit TLS), greeting and EHLO, STARTTLS under the TLS policy, the loop check on the
// names the server gives, AUTH. What a transaction needs of it, and what it reports, is typed here.
import net from 'node:net'
import type tls from 'node:tls'
import type { Readable } from 'node:stream'
import SMTPConnection from 'nodemailer/lib/smtp-connection'
import type { Destination } from './mx.js'
import { peerNames } from './loop.js'
import { readEhloKeywordsOnly } from './ehlo-keywords.js'
import { addEnvelopeParams, type EnvelopeNeeds } from './envelope-params.js'
import { replyProblem, type Internals, type TransactionPhase } from './reply-checks.js'
import { oneLineReply } from '../mail/reply.js'
import { hideCredentials } from './hide-credentials.js'
import { describeError, protocolError, type ReplyStage, type SmtpError } from './smtp-errors.js'

/**
 * 'may': STARTTLS when offered, plain text after a failed handshake; 'encrypt': TLS required,
 * certificate not checked; 'verify': TLS required with a certificate valid for the host name.
 */
export type TlsPolicy = 'may' | 'encrypt' | 'verify'

/** The TLS of a connection, as delivery events report it. */
export interface TlsInfo {
  version: string
  cipher: string
  /** The certificate chains to a trusted CA and is valid for the host name. */
  verified: boolean
}

export interface TransactionOptions {
  port: number
  helo: string
  from: string
  to: string[]
  /** Called once per try: the message bytes (headers + body). */
  message: () => Readable
  connectTimeout: number
  commandTimeout: number
  /** The wait for the reply to the final dot (else commandTimeout). */
  dataDoneTimeout?: number
  /** When (epoch ms) the attempt ends: a connection still busy then is closed, what is unanswered is deferred. */
  deadline?: number
  /** Pass ESMTP BODY=8BITMIME when the server offers it. */
  eightBit?: boolean
  /**
   * RFC 3461 parameters passed on when the server offers DSN: RET, ENVID on MAIL; on each RCPT its
   * recipient's own NOTIFY, ORCPT (`rcpt`, by address; envelope-params.ts writes them).
   */
  dsn?: { ret?: string; envid?: string; rcpt?: EnvelopeNeeds['rcptDsn'] }
  /** Default 'may'. */
  tls?: TlsPolicy
  /** TLS from the first byte (port 465) instead of STARTTLS. */
  implicitTls?: boolean
  /** SMTP AUTH once the connection is encrypted (never in plain text). */
  auth?: { user: string; pass: string }
  /** Local address to connect from. */
  localAddress?: string
  /** Speak LMTP (LHLO, one reply per recipient after the message). */
  lmtp?: boolean
  /** Connect to this unix socket instead of `dest.address`:`port`. */
  socketPath?: string
  /** CA certificates to verify against (default: the system's). */
  ca?: (string | Buffer)[]
  /** Messages per connection for this destination (per-destination throttle), else the pool's. */
  maxMessages?: number
  /**
   * The host's address has a connection limit (a host throttle's concurrency): before a new
   * connection, idle ones to that address (kept for another of its names) are closed, so the
   * connections open to it stay within the limit, not only the transactions.
   */
  capped?: boolean
  /** Loop detection: a server that greets or answers EHLO with this name is this relay (loop.ts). */
  ownHostname?: string
  /**
   * The message needs SMTPUTF8 (RFC 6531: UTF-8 addresses, or the client asked for it): MAIL FROM
   * carries the parameter, and a server that does not offer the extension gets nothing.
   */
  smtpUtf8?: boolean
  /**
   * The message's size in bytes (RFC 1870): MAIL FROM carries SIZE= when the server offers SIZE,
   * and a message over the server's limit is not sent. Absent: counted from `message` when needed.
   */
  size?: number
}

export interface RecipientReply {
  ok: boolean
  code: number
  response: string
  /**
   * What the reply answered: 'rcpt' this recipient's RCPT, 'lmtp' LMTP's reply for this recipient
   * after the message; 'mail' and 'data' (DATA, end of data) speak of the whole transaction.
   */
  stage?: ReplyStage
}

export type Outcome =
  /**
   * No transaction happened with this host (refused, timed out, greeting/EHLO failed): try the next.
   * `policy`: the connection came up but did not meet the TLS policy, or AUTH failed, or the server
   * named itself with `ownHostname` ('loop': closed with QUIT before MAIL FROM). `silent`: not a
   * byte came from the host (refused, unreachable, timed out before the greeting). `greeting`: the
   * host's greeting was not 220 (its code in `code`). `notTried`: no connection was made (this
   * relay's own throttle had no slot for the host in time).
   */
  | { kind: 'unreachable'; response: string; code?: number; remoteHost: string; policy?: 'tls' | 'auth' | 'loop' | NextHopLacks; silent?: boolean; greeting?: boolean; notTried?: boolean }
  /** A transaction ran; each recipient has the reply that decides its fate. `dsn`: the server offers DSN (RFC 3461). */
  /** `tlsFallback`: STARTTLS failed under TLS policy 'may' and the message went in plain text; why it failed. */
  /** `lostBeforeEnd`: the connection failed (no reply) before the message's final dot was written: the host cannot have taken it. */
  | { kind: 'done'; replies: Map<string, RecipientReply>; remoteHost: string; tls: TlsInfo | false; dsn?: boolean; tlsFallback?: string; lostBeforeEnd?: boolean }

export type Unreachable = Extract<Outcome, { kind: 'unreachable' }>

/** Replies and blank lines a server may have queued beyond the commands waiting, before it is a protocol error. */
const MAX_UNASKED_LINES = 100

/**
 * What the server cannot take (no MAIL FROM was sent): 'smtputf8', the message needs SMTPUTF8 and
 * it is not offered; '8bitmime', 8-bit content that cannot be made 7-bit and 8BITMIME not offered.
 */
export type NextHopLacks = 'smtputf8' | '8bitmime'


const STARTTLS_ACTION = (SMTPConnection.prototype as unknown as { _actionSTARTTLS?: unknown })._actionSTARTTLS

/** An open connection to one host, reusable for further messages. */
export interface Session extends EnvelopeNeeds {
  conn: SMTPConnection
  key: string
  remoteHost: string
  /** The host's address and port (a unix socket: its path, port 0). */
  address: string
  port: number
  messages: number
  /** Per-destination messages per connection (else the pool's). */
  maxMessages?: number
  tls: TlsInfo | false
  idleTimer?: NodeJS.Timeout
  /** Where the connection's errors and closes go while a transaction runs (else: drop it). */
  onError?: (err: SmtpError) => void
  /** LMTP: the reply to the message for each recipient, of the transaction in progress. */
  lmtpReplies?: Map<string, string>
  /**
   * The server sent a reply no command was waiting for, or a malformed one: later replies cannot
   * be matched to commands, so the connection is never reused.
   */
  desynced?: boolean
  /** The transaction in progress: before the go-ahead to DATA, message going out, final dot written. */
  phase?: TransactionPhase
  /** The socket's idle timeout between commands (the wait after the final dot is longer: dataDoneTimeout). */
  commandTimeout: number
}

/** Where an open connection reports to its pool (connection-pool.ts). */
export interface SessionPool {
  /** Connections opened so far. */
  opened: number
  /** Connections open now (in a transaction or idle in the pool), for metrics. */
  open: number
  /** An idle connection failed or was closed by the server: it leaves the pool. */
  remove(s: Session): void
}

function connectUnix(path: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(Object.assign(new Error(`connect to ${path} timed out`), { code: 'ETIMEDOUT' }))
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.removeAllListeners('error')
      resolve(socket)
    })
    socket.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

function tlsOf(conn: SMTPConnection): TlsInfo | false {
  const sock = (conn as unknown as { _socket?: tls.TLSSocket })._socket
  if (!conn.secure || !sock || typeof sock.getProtocol !== 'function') return false
  return { version: sock.getProtocol() ?? 'unknown', cipher: sock.getCipher()?.name ?? 'unknown', verified: sock.authorized === true }
}

/**
 * Opens a connection to `dest` and makes it ready for MAIL FROM (greeting, EHLO, STARTTLS, AUTH), or
 * says why not. `tlsFailed`: the TLS handshake failed (under 'may' the caller tries again in plain text).
 */
export async function openSession(dest: Destination, o: TransactionOptions, key: string, ignoreTLS: boolean, pool: SessionPool): Promise<Session | (Unreachable & { tlsFailed?: boolean })> {
  const remoteHost = o.socketPath ? `unix:${o.socketPath}` : `${dest.name}[${dest.address}]:${o.port}`
  const policy = o.tls ?? 'may'
  let connection: net.Socket | undefined
  if (o.socketPath) {
    try {
      connection = await connectUnix(o.socketPath, o.connectTimeout)
    } catch (err) {
      return { kind: 'unreachable', response: describeError(err as SmtpError), remoteHost }
    }
  }
  return new Promise((resolve) => {
    let settled = false
    const conn = new SMTPConnection({
      host: o.socketPath ? 'localhost' : dest.address,
      port: o.port,
      name: o.helo,
      servername: o.socketPath || net.isIP(dest.name) ? undefined : dest.name,
      secure: Boolean(o.implicitTls),
      ignoreTLS,
      opportunisticTLS: policy === 'may',
      requireTLS: policy !== 'may' && !o.implicitTls,
      lmtp: Boolean(o.lmtp),
      localAddress: o.localAddress,
      connection,
      connectionTimeout: o.connectTimeout,
      greetingTimeout: o.connectTimeout,
      socketTimeout: o.commandTimeout,
      // Verification is decided below from the handshake's result, so that 'may' still reports it.
      tls: { rejectUnauthorized: false, minVersion: 'TLSv1.2', ca: o.ca },
      logger: false,
      debug: false,
      allowInternalNetworkInterfaces: true,
    } as ConstructorParameters<typeof SMTPConnection>[0])
    const session: Session = { conn, key, remoteHost, address: o.socketPath ?? dest.address, port: o.socketPath ? 0 : o.port, messages: 0, tls: false, commandTimeout: o.commandTimeout }
    readEhloKeywordsOnly(conn) // before peerNames, which reads the server's name from the whole reply
    const names = o.ownHostname ? peerNames(conn) : undefined
    addEnvelopeParams(conn, session)
    const internals = conn as unknown as Internals
    // Did the host send anything at all? (undefined: not known, nodemailer's internals differ)
    let heard: boolean | undefined
    // Replies are checked before nodemailer hands them to the commands waiting (see replyProblem).
    const onData = internals._onData
    const processResponse = internals._processResponse
    if (typeof onData === 'function' && typeof processResponse === 'function') {
      // Held while nodemailer files a chunk's replies, so they can be checked first (set once: no
      // delete, which would turn the connection object into a slow dictionary).
      let holding = false
      let asked = false
      heard = false
      internals._processResponse = function (this: Internals) {
        if (!holding) return processResponse.call(this)
        asked = true
      }
      internals._onData = function (this: Internals, chunk) {
        heard = true
        holding = true
        asked = false
        try {
          onData.call(this, chunk)
        } finally {
          holding = false
        }
        if (!asked || this._destroyed) return
        // Lines no command waits for pile up here (nodemailer drops an empty one per tick): a server
        // sending blank lines without end held the event loop and hundreds of MB. A sane one sends none.
        if (this._responseQueue.length > this._responseActions.length + MAX_UNASKED_LINES) return protocolFailure(`more than ${MAX_UNASKED_LINES} lines no command waits for (blank lines, or replies nobody asked for)`)
        const problem = replyProblem(this, session.phase)
        // Plain text where the handshake should be (or injected after 220 to STARTTLS): a failed negotiation.
        if (problem && !settled && STARTTLS_ACTION && this._responseActions[0] === STARTTLS_ACTION) return fail(Object.assign(new Error(`plain text after the reply to STARTTLS (${oneLineReply(problem.why)})`), { code: 'ETLS' }))
        // After the final dot the first reply is the server's answer to the message: let it decide.
        if (problem && !(problem.kind === 'surplus' && session.phase === 'sent')) return protocolFailure(problem.why)
        if (problem) session.desynced = true
        this._processResponse()
      }
    }
    // nodemailer takes a 2xx to DATA as the go-ahead and would send the message as commands.
    const actionDATA = internals._actionDATA
    if (typeof actionDATA === 'function') {
      internals._actionDATA = function (this: Internals, str, callback) {
        if (/^[345]/.test(str)) return actionDATA.call(this, str, callback)
        session.desynced = true
        callback(protocolError(`${str} in reply to DATA (expected 354)`))
      }
    }
    const createSendStream = internals._createSendStream
    if (typeof createSendStream === 'function') {
      internals._createSendStream = function (this: Internals, callback) {
        const stream = createSendStream.call(this, callback)
        session.phase = 'message'
        // Ends once the final dot is written: what the server says from then on answers the message.
        stream.once('end', () => {
          if (session.phase !== 'message') return
          session.phase = 'sent'
          // RFC 5321 §4.5.3.2.6: the reply to the dot may take longer than any other (the server
          // scans the message); put back to commandTimeout when the transaction ends.
          if (o.dataDoneTimeout !== undefined && o.dataDoneTimeout !== o.commandTimeout) internals._socket?.setTimeout(o.dataDoneTimeout)
        })
        return stream
      }
    }
    if (o.lmtp) {
      // nodemailer reports LMTP's per-recipient replies only for refusals; keep every one.
      const c = conn as unknown as { _actionLMTPStream?: (rcpt: string, final: boolean, str: string, cb: unknown) => unknown }
      const original = c._actionLMTPStream
      if (typeof original === 'function') {
        c._actionLMTPStream = function (this: unknown, rcpt, final, str, cb) {
          session.lmtpReplies?.set(rcpt, String(str))
          return original.call(this, rcpt, final, str, cb)
        }
      }
    }
    // A reply out of turn or malformed: nothing more is read from this connection.
    const protocolFailure = (why: string) => {
      session.desynced = true
      if (!settled) return result({ kind: 'unreachable', response: protocolError(why).message, remoteHost })
      if (session.onError) return session.onError(protocolError(why))
      pool.remove(session)
      conn.close()
    }
    const result = (r: Unreachable & { tlsFailed?: boolean }) => {
      if (settled) return
      settled = true
      // Whatever the server said before the session was ready may quote the credentials (AUTH's reply above all).
      if (o.auth) r = { ...r, response: hideCredentials(r.response, o.auth) }
      clearTimeout(overdue)
      conn.close()
      resolve(r)
    }
    // The attempt's time limit holds through a greeting, EHLO or handshake trickled a byte at a time.
    const overdue = o.deadline === undefined ? undefined : setTimeout(() => result({ kind: 'unreachable', response: 'the attempt ran out of time before the connection was ready', remoteHost }), Math.max(0, o.deadline - Date.now()))
    const fail = (err: SmtpError) => {
      // A handshake that fails surfaces as ETLS, or as a socket error mid-upgrade or on an implicit-TLS connect.
      const tlsFailed = err.code === 'ETLS' || conn.upgrading === true || (!err.responseCode && /SSL routines|TLS|certificate|handshake/.test(err.message))
      const required = policy !== 'may' || Boolean(o.implicitTls)
      let why = describeError(err)
      if (err.code === 'ETLS' && err.command === 'STARTTLS' && err.response) {
        const ehlo = (conn as unknown as { _plaintextEhlo?: string | false })._plaintextEhlo
        why = typeof ehlo === 'string' && !/[ -]STARTTLS\b/im.test(ehlo) ? `STARTTLS not offered (${why})` : `STARTTLS refused: ${why}`
      }
      result({
        kind: 'unreachable',
        response: tlsFailed ? `TLS ${o.implicitTls ? 'handshake' : 'negotiation'} failed: ${why}` : why,
        code: tlsFailed ? undefined : err.responseCode,
        remoteHost,
        tlsFailed,
        policy: tlsFailed && required ? 'tls' : undefined,
        silent: heard === false && !tlsFailed && !err.responseCode ? true : undefined,
        greeting: err.command === 'CONN' && err.responseCode !== undefined ? true : undefined,
      })
    }
    // Errors and closes after the connect go to the transaction in progress; an idle pooled
    // connection that fails or is closed by the server just leaves the pool.
    conn.on('error', (err: SmtpError) => (settled ? session.onError ? session.onError(err) : pool.remove(session) : fail(err)))
    conn.on('end', () => {
      const closed = Object.assign(new Error('connection closed by server'), { code: 'ECONNECTION' })
      if (!settled) return fail(closed)
      // After a 421 nodemailer closes (this event) and only then hands the reply to send()'s
      // callback: let the reply speak first, so the failure keeps its 421 (a throttling signal).
      const onError = session.onError
      if (onError) setImmediate(() => onError(closed))
      else pool.remove(session)
    })
    const ready = () => {
      if (settled) return
      settled = true
      clearTimeout(overdue)
      pool.opened++
      // Counted until the connection ends, however it ends (QUIT, idle timeout, error, server close).
      pool.open++
      conn.once('end', () => pool.open--)
      resolve(session)
    }
    // A silent close before the greeting comes to this callback rather than as an 'error' event.
    conn.connect((err?: SmtpError) => {
      if (err) return fail(err)
      if (settled) return
      const own = o.ownHostname?.toLowerCase()
      if (names?.some((n) => n.toLowerCase() === own)) {
        // This is us (behind a NAT or a port forward): nothing but EHLO went over the connection.
        settled = true
        clearTimeout(overdue)
        conn.quit()
        return resolve({ kind: 'unreachable', response: `${remoteHost} greeted with my own hostname ${o.ownHostname}`, remoteHost, policy: 'loop' })
      }
      session.tls = tlsOf(conn)
      // The policy is checked before anything but EHLO went over the connection.
      if (policy !== 'may' && !session.tls) return result({ kind: 'unreachable', response: `TLS required (${policy}) but the connection is not encrypted`, remoteHost, policy: 'tls' })
      if (policy === 'verify' && session.tls && !session.tls.verified) {
        const why = (conn as unknown as { _socket?: tls.TLSSocket })._socket?.authorizationError
        return result({ kind: 'unreachable', response: `TLS certificate of ${o.socketPath ?? dest.name} not verified: ${String(why ?? 'unknown reason')}`, remoteHost, policy: 'tls' })
      }
      if (!o.auth) return ready()
      if (!session.tls) return result({ kind: 'unreachable', response: 'AUTH refused: credentials are never sent over a connection that is not encrypted', remoteHost, policy: 'tls' })
      conn.login({ user: o.auth.user, pass: o.auth.pass }, (authErr?: SmtpError | null) => {
        if (!authErr) return ready()
        // Never names the account (for SES, the access key ID): result() hides it. Wording matched by classify.ts.
        result({ kind: 'unreachable', response: `AUTH as the configured user failed: ${describeError(authErr)}`, code: authErr.responseCode, remoteHost, policy: 'auth' })
      })
    })
  })
}
