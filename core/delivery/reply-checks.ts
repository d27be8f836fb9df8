// The checks of a server's replies before nodemailer hands them to the commands waiting for them
// (core/delivery/smtp-session.ts wires them in): a reply nobody asked for or a malformed one would
// make nodemailer read every later reply one command late.

/** Where the transaction stands: before the go-ahead to DATA, message going out, final dot written. */
export type TransactionPhase = 'envelope' | 'message' | 'sent'

/** nodemailer's internals that the checks hook into. */
export interface Internals {
  _responseQueue: unknown[]
  _responsePartial: boolean
  _responseActions: unknown[]
  _destroyed: boolean
  _onData(chunk: Buffer): void
  _processResponse(): unknown
  _actionDATA(str: string, callback: (err: Error | null, info?: unknown) => void): unknown
  _createSendStream(callback: unknown): NodeJS.ReadableStream
  /** The socket (the TLS one after STARTTLS): its idle timeout is nodemailer's socketTimeout. */
  _socket?: { setTimeout(ms: number): void }
}

/**
 * A complete reply as nodemailer queues it (lines joined by \n): every line the same 3-digit code,
 * then ' ' or '-' (or the end). RFC 5321 §4.2.1 defines codes of 2xx to 5xx only: another (600,
 * 0xx, 1xx, 9xx) is no refusal nor acceptance, and read as one it would bounce or deliver by chance.
 */
function malformed(raw: string): boolean {
  const lines = raw.split('\n')
  const code = /^([2-5]\d{2})(?:[ -]|$)/.exec(lines[0]!)?.[1]
  if (!code) return true
  return lines.some((line, i) => (i < lines.length - 1 ? !line.startsWith(`${code}-`) : !(line === code || line.startsWith(`${code} `))))
}

/**
 * What is wrong with the replies queued but not yet handed to their commands, if anything: one
 * malformed, or more of them than commands waiting (nodemailer queues a command's handler before
 * sending it, so a sane server never gets ahead). 421 may come at any time and is not counted.
 */
export function replyProblem(c: Internals, phase: TransactionPhase | undefined): { why: string; kind: 'malformed' | 'surplus' | 'early' } | undefined {
  const queue = c._responseQueue.map(String)
  if (c._responsePartial) queue.pop()
  const replies = queue.filter((r) => r.trim())
  const bad = replies.find(malformed)
  if (bad !== undefined) return { why: `malformed reply: ${bad}`, kind: 'malformed' }
  const counted = replies.filter((r) => !/^421(?:[ -]|$)/.test(r))
  if (counted.length > c._responseActions.length) return { why: `more replies than commands sent (last: ${counted[counted.length - 1]})`, kind: 'surplus' }
  // A success before the final dot went out cannot be the reply to the message.
  const first = counted[0]
  if (phase === 'message' && first !== undefined && /^2/.test(first)) return { why: `${first} before the end of the message`, kind: 'early' }
  return undefined
}
