// How an outbound SMTP failure is named: nodemailer's errors as one bounded line, the stage a
// reply answered, and the protocol errors the relay raises itself (reply-checks, smtp-session).
import { oneLineReply } from '../mail/reply.js'

export type SmtpError = Error & { code?: string; responseCode?: number; response?: string; command?: string; recipient?: string; rejectedErrors?: SmtpError[]; protocol?: boolean }

/** The server broke the protocol (a reply out of turn, malformed, or not 354 to DATA): its message says what happened. */
export const protocolError = (why: string): SmtpError => Object.assign(new Error(oneLineReply(`protocol error: ${why}`)), { code: 'EPROTOCOL', protocol: true })

/** An SMTP error as one line (core/mail/reply.ts, bounded): the server's reply when there is one, else the local error. */
export const describeError = (err: SmtpError) => oneLineReply(err.response ?? `${err.code ?? 'error'}: ${withoutOpenSslInternals(err.message.slice(0, 8192))}`)

/** '80AC…:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:…/ssl3_record.c:350:' → 'wrong version number' (it reaches DSNs). */
// The hex run starts where no hex digit precedes it: tried from inside a long run (a server's reply
// of 100,000 hex digits) the pattern took time quadratic in its length, seconds on the event loop.
const withoutOpenSslInternals = (message: string) => message.replace(/(?<![0-9A-F])[0-9A-F]+:error:[0-9A-F]+:SSL routines:[^:]*:([^:]+):[^:\s]*:\d+:?/g, '$1')

export type ReplyStage = 'mail' | 'rcpt' | 'data' | 'lmtp'

/** The stage of nodemailer's error for a command (a recipient's own error after DATA is LMTP's). */
export const stageOf = (err: SmtpError): ReplyStage | undefined =>
  err.command === 'MAIL FROM' ? 'mail' : err.command === 'RCPT TO' ? 'rcpt' : err.command === 'DATA' ? (err.recipient ? 'lmtp' : 'data') : undefined

