// RFC 2920 §3.2: the replies to a group of pipelined commands leave in one write, as Postfix sends
// them, not one system call and one TCP segment per reply. A read that holds more than one command
// line corks the socket until the parser has dispatched every line of it (the parser's write
// callback, which runs once the last command's handler is done); a reply that the client must see
// before it can go on (STARTTLS's 220, an AUTH challenge, 354, 421, the 221 that ends the session)
// uncorks at once, and so does a socket whose held replies reach its buffer's limit (smtp-server
// waits for a full socket to drain). Used by patch 16 in core/smtp/patches.ts.
import type { Socket } from 'node:net'

/** The connection's socket a parser's replies go to (set when smtp-server makes each parser). */
export const REPLIES_TO = Symbol('relay.parserRepliesTo')
const HELD = Symbol('relay.repliesHeld')
type HoldingSocket = Socket & { [HELD]?: boolean }

/** More than one line in this read: a group of pipelined commands (or their start). */
export function isGroup(chunk: Buffer): boolean {
  const first = chunk.indexOf(10)
  return first !== -1 && chunk.indexOf(10, first + 1) !== -1
}

/** Holds the socket's replies until `release`; false when it holds them already (an outer group does). */
export function holdReplies(socket: Socket): boolean {
  const s = socket as HoldingSocket
  if (s[HELD] || s.destroyed || !s.writable) return false
  s[HELD] = true
  s.cork()
  return true
}

export function releaseReplies(socket: Socket): void {
  const s = socket as HoldingSocket
  if (!s[HELD]) return
  s[HELD] = false
  s.uncork()
}

/** A reply inside a group (250 to MAIL/RCPT/RSET, a refusal of one of them) can wait for the rest. */
export const canWait = (code: number): boolean => code === 250 || code === 251 || code === 252 || (code >= 400 && code !== 421)
