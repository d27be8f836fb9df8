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
  message: () => Buffer | Readable
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

/** One try of one SMTP transaction against one address, with opportunistic STARTTLS. */
export async function transact(dest: Destination, o: TransactionOptions): Promise<Outcome> {
  const first = await once(dest, o, false)
  // A failed TLS handshake with 'may' TLS: the same host again without STARTTLS (as Postfix does).
  if (first.kind === 'unreachable' && first.response.startsWith('ETLS')) return once(dest, o, true)
  return first
}

function once(dest: Destination, o: TransactionOptions, ignoreTLS: boolean): Promise<Outcome> {
  const remoteHost = `${dest.name}[${dest.address}]:${o.port}`
  return new Promise<Outcome>((resolve) => {
    let settled = false
    let connected = false
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

    const finish = (outcome: Outcome) => {
      if (settled) return
      settled = true
      if (outcome.kind === 'done') conn.quit()
      else conn.close()
      resolve(outcome)
    }

    const fail = (err: SmtpError, recipients: string[]) => {
      if (!connected) {
        // A handshake that fails after STARTTLS surfaces as ETLS or as a socket error mid-upgrade.
        const tlsFailed = err.code === 'ETLS' || conn.upgrading === true || /SSL routines|TLS/.test(err.message)
        const response = tlsFailed ? `ETLS: ${describe(err)}` : describe(err)
        return finish({ kind: 'unreachable', response, code: err.responseCode, remoteHost })
      }
      const replies = new Map<string, RecipientReply>()
      const code = err.responseCode ?? 0
      for (const rcpt of recipients) replies.set(rcpt, { ok: false, code, response: code ? describe(err) : `connection lost: ${describe(err)}` })
      for (const r of err.rejectedErrors ?? []) {
        if (r.recipient) replies.set(r.recipient, { ok: false, code: r.responseCode ?? 0, response: describe(r) })
      }
      finish({ kind: 'done', replies, remoteHost, tls: conn.secure })
    }

    conn.on('error', (err: SmtpError) => fail(err, o.to))
    conn.on('end', () => fail(Object.assign(new Error('connection closed by server'), { code: 'ECONNECTION' }), o.to))

    conn.connect((err?: SmtpError) => {
      // A silent close before the greeting comes here rather than as an 'error' event.
      if (err) return fail(err, o.to)
      connected = true
      conn.send({ from: o.from, to: o.to, use8BitMime: o.eightBit }, o.message(), (err, info) => {
        if (err) return fail(err as SmtpError, o.to)
        const replies = new Map<string, RecipientReply>()
        for (const rcpt of info.accepted) replies.set(rcpt, { ok: true, code: 250, response: info.response })
        for (const r of (info.rejectedErrors ?? []) as SmtpError[]) {
          if (r.recipient) replies.set(r.recipient, { ok: false, code: r.responseCode ?? 0, response: describe(r) })
        }
        finish({ kind: 'done', replies, remoteHost, tls: conn.secure })
      })
    })
  })
}
