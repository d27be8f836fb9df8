// One SMTP (or LMTP) transaction with one host, over a pooled connection or a new one
// (smtp-session.ts), sending what the next hop can take (SMTPUTF8, 8BITMIME or a 7-bit downgrade).
import { hideCredentials } from './hide-credentials.js'
import type { Readable } from 'node:stream'
import type SMTPConnection from 'nodemailer/lib/smtp-connection'
import type { Destination } from './mx.js'
import { scan8bit, sevenBitStream, type EightBitScan } from '../mail/downgrade.js'
import { poolKey, type ConnectionPool } from './connection-pool.js'
import { oneLineReply } from '../mail/reply.js'
// Loaded for its effect: a message's data leaves in one write where the socket allows.
import './one-write.js'
import { openSession, type Outcome, type RecipientReply, type Session, type TransactionOptions, type Unreachable } from './smtp-session.js'
import { describeError, stageOf, type SmtpError } from './smtp-errors.js'

/**
 * One SMTP (or LMTP) transaction with one host: over a pooled connection when there is one, else a
 * new connection. Under TLS policy 'may', STARTTLS is opportunistic and a failed handshake is
 * followed by the same host again in plain text (as Postfix does); under 'encrypt' and 'verify'
 * a connection that does not meet the policy is closed before anything but EHLO was sent.
 */
export async function transact(dest: Destination, o: TransactionOptions, pool: ConnectionPool): Promise<Outcome> {
  // Keyed by name too: the name is the TLS server name, and what events and DSNs report.
  const key = poolKey(dest, o)
  if (o.deadline !== undefined && Date.now() >= o.deadline) return { kind: 'unreachable', response: 'the attempt ran out of time', remoteHost: `${dest.name}[${dest.address}]:${o.port}` }
  const pooled = pool.take(key)
  if (pooled) {
    const outcome = await send(pooled, o, pool)
    // The server dropped the idle connection before reading the message: open a new one.
    if (outcome !== 'reconnect') return outcome
  }
  if (o.capped) await pool.closeIdleTo(dest.address, o.port)
  const mayFallBack = (o.tls ?? 'may') === 'may' && !o.implicitTls && !o.auth
  let opened = await openSession(dest, o, key, false, pool)
  let tlsFallback: string | undefined
  if ('kind' in opened && opened.tlsFailed && mayFallBack) {
    tlsFallback = opened.response
    opened = await openSession(dest, o, key, true, pool)
  }
  if ('kind' in opened) {
    const { tlsFailed: _, ...outcome } = opened
    return outcome
  }
  const outcome = await send(opened, o, pool)
  if (outcome === 'reconnect') return { kind: 'unreachable', response: 'connection closed before the message was sent', remoteHost: opened.remoteHost }
  return tlsFallback !== undefined && outcome.kind === 'done' ? { ...outcome, tlsFallback } : outcome
}

/** The extensions the server offered in its EHLO (LHLO) reply, as nodemailer recorded them. */
const extensionsOf = (conn: SMTPConnection): string[] => (conn as unknown as { _supportedExtensions?: string[] })._supportedExtensions ?? []

/**
 * What the next hop can take decides what is sent (RFC 6531, RFC 6152 §3): without SMTPUTF8 a
 * message that needs it is not sent; without 8BITMIME 8-bit content (found by scanning, whatever
 * BODY= said) goes out converted to 7-bit, or not at all when it cannot be converted; with 8BITMIME
 * it goes as it is, declared BODY=8BITMIME.
 */
async function messageFor(s: Session, o: TransactionOptions): Promise<{ message: () => Readable; eightBit: boolean; smtpUtf8: boolean } | Unreachable> {
  const ext = extensionsOf(s.conn)
  let scan: EightBitScan | undefined
  if (o.smtpUtf8 && !ext.includes('SMTPUTF8')) {
    // RFC 6531 §3.2, as Postfix: a message the client sent with SMTPUTF8 whose envelope and header
    // are ASCII needs none of it (many clients ask on every message): it goes without the parameter.
    scan = [o.from, ...o.to].some((a) => /[^\x00-\x7f]/.test(a)) ? undefined : await scan8bit(o.message())
    if (!scan || scan.headerEightBit) return { kind: 'unreachable', response: `${s.remoteHost} does not support SMTPUTF8 (RFC 6531)`, remoteHost: s.remoteHost, policy: 'smtputf8' }
  }
  const smtpUtf8 = Boolean(o.smtpUtf8) && !scan
  // 8-bit bytes go only with BODY=8BITMIME (RFC 6152 §3): the intake marked 8-bit content so
  // whatever BODY= the client gave (core/smtp/accept.ts).
  if (ext.includes('8BITMIME')) return { message: o.message, eightBit: Boolean(o.eightBit) || Boolean(scan?.eightBit), smtpUtf8 }
  scan ??= await scan8bit(o.message())
  if (!scan.eightBit) return { message: o.message, eightBit: false, smtpUtf8 }
  if (scan.unconvertible) {
    return { kind: 'unreachable', response: `${s.remoteHost} does not support 8BITMIME and the message cannot be converted to 7-bit: ${scan.unconvertible}`, remoteHost: s.remoteHost, policy: '8bitmime' }
  }
  const found = scan
  return { message: () => sevenBitStream(o.message(), found), eightBit: false, smtpUtf8 }
}

async function send(s: Session, o: TransactionOptions, pool: ConnectionPool): Promise<Outcome | 'reconnect'> {
  let what: Awaited<ReturnType<typeof messageFor>>
  try {
    what = await messageFor(s, o)
  } catch (err) {
    // The queued message could not be read: no transaction, the connection stays usable.
    pool.put(s)
    return { kind: 'unreachable', response: `4.3.0 message could not be read: ${(err as Error).message}`, remoteHost: s.remoteHost }
  }
  if ('kind' in what) {
    // Nothing was sent for this message: the connection can carry the next one.
    pool.put(s)
    return what
  }
  s.smtpUtf8 = what.smtpUtf8
  s.rcptDsn = o.dsn?.rcpt
  // RFC 1870: the size as sent (a 7-bit conversion changes it), counted only when the server asks.
  const { offersSize, max } = sizeLimit(s.conn)
  let size = what.message === o.message ? o.size : undefined
  if (size === undefined && offersSize) {
    try {
      size = await byteCount(what.message())
    } catch (err) {
      pool.put(s)
      return { kind: 'unreachable', response: `4.3.0 message could not be read: ${(err as Error).message}`, remoteHost: s.remoteHost }
    }
  }
  if (max > 0 && size !== undefined && size > max) {
    // Postfix's wording; nothing was sent, the connection can carry the next message.
    pool.put(s)
    const response = `552 5.3.4 Message size ${size} exceeds the fixed limit ${max} of ${s.remoteHost}`
    return { kind: 'done', replies: new Map(o.to.map((rcpt) => [rcpt, { ok: false, code: 552, response }])), remoteHost: s.remoteHost, tls: s.tls }
  }
  return transaction(s, o, pool, what.message, what.eightBit, offersSize ? size : undefined)
}

/**
 * The SIZE keyword of the EHLO reply. nodemailer finds "SIZE" anywhere in the reply, the server's
 * name too (250-mx-size.example): its limit is replaced by the keyword's, SIZE= only when offered.
 */
function sizeLimit(conn: SMTPConnection): { offersSize: boolean; max: number } {
  const c = conn as unknown as { _ehloLines?: string[]; _maxAllowedSize?: number }
  const line = (c._ehloLines ?? []).map((l) => /^SIZE(?:\s+(\d+))?\s*$/i.exec(l)).find(Boolean)
  const max = line?.[1] ? Number(line[1]) : 0
  c._maxAllowedSize = max
  return { offersSize: Boolean(line), max }
}

async function byteCount(stream: Readable): Promise<number> {
  let n = 0
  for await (const chunk of stream) n += typeof chunk === 'string' ? Buffer.byteLength(chunk) : (chunk as Buffer).length
  return n
}

function transaction(s: Session, o: TransactionOptions, pool: ConnectionPool, message: () => Readable, eightBit: boolean, size: number | undefined): Promise<Outcome | 'reconnect'> {
  const reused = s.messages > 0
  const tls = s.tls
  if (o.maxMessages !== undefined) s.maxMessages = o.maxMessages
  return new Promise((resolve) => {
    let settled = false
    const stream = message()
    const lmtpReplies = new Map<string, string>()
    s.lmtpReplies = lmtpReplies
    // nodemailer's envelope of the previous message on this connection, until send() makes this one's.
    const envelopeBefore = (s.conn as unknown as { _envelope?: unknown })._envelope
    s.phase = 'envelope'
    const finish = (outcome: Outcome | 'reconnect', keep: 'keep' | 'reset' | 'close') => {
      if (settled) return
      settled = true
      clearTimeout(overdue)
      s.onError = undefined
      s.lmtpReplies = undefined
      if (s.phase === 'sent') (s.conn as unknown as { _socket?: { setTimeout(ms: number): void } })._socket?.setTimeout(s.commandTimeout)
      s.phase = undefined
      // Replies out of step with commands: nothing more is trusted from this connection.
      if (s.desynced) keep = 'close'
      // A smarthost may quote the credentials in any later reply too (`550 user x with password y ...`).
      if (o.auth && outcome !== 'reconnect' && outcome.kind === 'done') for (const r of outcome.replies.values()) r.response = hideCredentials(r.response, o.auth)
      if (keep === 'keep') pool.put(s)
      else if (keep === 'reset') s.conn.reset((err) => (err ? s.conn.close() : pool.put(s)))
      else s.conn.close()
      resolve(outcome)
    }
    const replies = (err: SmtpError): Map<string, RecipientReply> => {
      const out = new Map<string, RecipientReply>()
      if (err.protocol) {
        // A protocol error defers everyone (code 0), whatever the envelope's replies said.
        for (const rcpt of o.to) out.set(rcpt, { ok: false, code: 0, response: err.message })
      } else {
        const code = err.responseCode ?? 0
        const stage = code ? stageOf(err) : undefined
        for (const rcpt of o.to) out.set(rcpt, { ok: false, code, response: code ? describeError(err) : `connection lost: ${describeError(err)}`, stage })
        // What the server already said of single recipients still holds when the transaction fails
        // later: a refusal at RCPT.
        const env = (s.conn as unknown as { _envelope?: { rejectedErrors?: SmtpError[] } })._envelope
        // A refused MAIL FROM decides: the pipelined RCPTs' replies (503 need MAIL) only echo it.
        const rejected = env && env !== envelopeBefore && stage !== 'mail' ? (env.rejectedErrors ?? []) : []
        for (const r of [...rejected, ...(err.rejectedErrors ?? [])]) if (r.recipient && out.has(r.recipient)) out.set(r.recipient, { ok: false, code: r.responseCode ?? 0, response: describeError(r), stage: stageOf(r) })
      }
      // LMTP's replies after DATA hold even after a protocol error (each was checked before it was
      // read): a 250 there is a delivery, retrying it would put the message in the mailbox again.
      for (const [rcpt, reply] of lmtpReplies) {
        if (!out.has(rcpt)) continue
        const ok = reply.startsWith('2')
        out.set(rcpt, { ok, code: Number(reply.slice(0, 3)) || 0, response: oneLineReply(reply), stage: 'lmtp' })
      }
      return out
    }
    const fail = (err: SmtpError) => {
      if (reused && !err.responseCode && !err.protocol && !stream.readableDidRead) return finish('reconnect', 'close')
      // Lost (or timed out) before the final dot went out: the host cannot have taken the message.
      const lostBeforeEnd = !err.responseCode && !err.protocol && s.phase !== 'sent' && !lmtpReplies.size && !attemptOver
      finish({ kind: 'done', replies: replies(err), remoteHost: s.remoteHost, tls, ...(lostBeforeEnd && { lostBeforeEnd }) }, 'close')
    }
    s.onError = fail
    // A server that takes the message (or answers) a byte at a time still ends at the attempt's limit.
    let attemptOver = false
    const overdue = o.deadline === undefined ? undefined : setTimeout(() => {
      attemptOver = true
      fail(Object.assign(new Error('the attempt ran out of time before the server answered'), { code: 'ETIMEDOUT' }))
    }, Math.max(0, o.deadline - Date.now()))
    s.conn.send({ from: o.from, to: o.to, use8BitMime: eightBit, dsn: o.dsn && { ret: o.dsn.ret, envid: o.dsn.envid }, size } as Parameters<SMTPConnection['send']>[0], stream, (err, info) => {
      s.messages++
      if (err) {
        const e = err as SmtpError
        // The server refused this message, the connection is fine: RSET and keep it.
        const refused = (e.code === 'EENVELOPE' || e.code === 'EMESSAGE') && e.responseCode && e.responseCode !== 421 && !s.conn.destroyed
        if (refused) return finish({ kind: 'done', replies: replies(e), remoteHost: s.remoteHost, tls }, 'reset')
        return fail(e)
      }
      const out = new Map<string, RecipientReply>()
      for (const rcpt of info.accepted as string[]) out.set(rcpt, { ok: true, code: 250, response: oneLineReply(lmtpReplies.get(rcpt) ?? info.response) })
      for (const r of (info.rejectedErrors ?? []) as SmtpError[]) if (r.recipient) out.set(r.recipient, { ok: false, code: r.responseCode ?? 0, response: describeError(r), stage: stageOf(r) })
      finish({ kind: 'done', replies: out, remoteHost: s.remoteHost, tls, dsn: extensionsOf(s.conn).includes('DSN') }, 'keep')
    })
  })
}