// What a hook is shown is its own: each plugin gets its own copy of the stage's session, envelope,
// sender, recipient and message, so what one writes to them reaches neither the next plugin nor the
// core (a plugin that rewrote `ctx.recipient.address` changed the address the core's suppression
// check looked up, and what the next plugin saw). Notes, headers and the plugin's state are shared
// on purpose. Copied field by field: a structuredClone per plugin call costs several microseconds.
import type { Envelope, EnvelopeAddress, QueuedMessageInfo, SessionInfo } from './types.js'

/** `ctx` with its own copies of the stage's objects (ctx is the bus's fresh object for one call). */
export function withOwnCopies<T extends object>(ctx: T): T {
  const c = ctx as Record<string, unknown>
  if (isObject(c.session)) c.session = copySession(c.session as unknown as SessionInfo)
  if (isObject(c.envelope)) c.envelope = copyEnvelope(c.envelope as unknown as Envelope)
  if (isObject(c.sender)) c.sender = copyAddress(c.sender as unknown as EnvelopeAddress)
  if (isObject(c.recipient)) c.recipient = copyAddress(c.recipient as unknown as EnvelopeAddress)
  if (Array.isArray(c.recipients)) c.recipients = c.recipients.slice()
  if (isObject(c.message)) c.message = Object.assign({}, c.message as unknown as QueuedMessageInfo)
  return ctx
}

const isObject = (v: unknown): v is object => typeof v === 'object' && v !== null

function copySession(s: SessionInfo): SessionInfo {
  return Object.assign({}, s, {
    listener: s.listener && Object.assign({}, s.listener),
    tls: s.tls && Object.assign({}, s.tls),
    senders: s.senders && s.senders.slice(),
  })
}

function copyAddress(a: EnvelopeAddress): EnvelopeAddress {
  return { address: a.address, args: isObject(a.args) ? Object.assign({}, a.args) : a.args }
}

function copyEnvelope(e: Envelope): Envelope {
  return { sender: isObject(e.sender) ? copyAddress(e.sender) : e.sender, recipients: Array.isArray(e.recipients) ? e.recipients.map((r) => (isObject(r) ? copyAddress(r) : r)) : e.recipients }
}
