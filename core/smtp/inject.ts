// A message handed to the relay without SMTP (`relay sendmail` through the maildrop, an HTTP inject
// API): the same acceptance as SMTP DATA (core/smtp/accept.ts), on a synthetic submission session.
// Like Postfix's pickup, the connect/helo/mail/rcpt plugin stages do not run (there is no client to
// judge): the core's envelope checks (syntax, recipient count, sender ownership for a user,
// suppression) stand in for them.
import { Readable } from 'node:stream'
import type { Envelope, HookName, SessionInfo } from '../hooks/types.js'
import type { InjectMessage } from '../hooks/operator.js'
import { CORE_REPLIES, replyError, replyFor, type Reply } from '../hooks/verdict.js'
import { logRefusal } from '../events/log.js'
import { parseAddress } from '../mail/address.js'
import { rfc5322Date } from '../mail/received.js'
import { isCorePolicy } from '../policies/index.js'
import { senderAllowed } from '../policies/sender-ownership.js'
import { acceptMessage, type AcceptEnv } from './accept.js'
import { coreRule } from './core-rules.js'
import type { PolicyStages } from './policy-stages.js'

/** What injection uses of the relay: acceptance's, and the per-recipient core checks (suppression). */
export interface InjectEnv extends AcceptEnv {
  policies: Pick<PolicyStages, 'run' | 'has' | 'recipientPassed'>
}

/** Where an injected message comes from: a local user (the maildrop file's owner) or the admin API. */
export type InjectOrigin = { kind: 'local'; uid?: number } | { kind: 'api' }

const NO_RECIPIENTS: Reply = { code: 554, status: '5.5.1', message: 'No recipients given' }

let sessions = 0

/**
 * Accepts `message` as SMTP DATA would and resolves with its queue id once it is durable; rejects
 * with an Error carrying `responseCode` and the reply text when a check refuses it (after its audit
 * line and the `rejected` event).
 */
export async function injectMessage(env: InjectEnv, message: InjectMessage, origin: InjectOrigin = { kind: 'api' }): Promise<{ queueId: string }> {
  const { config } = env
  const info = syntheticSession(message.user, origin, config.hostname)
  const recipients = message.recipients.map((address) => ({ address, args: {} }))
  const envelope: Envelope = { sender: { address: message.sender, args: {} }, recipients }
  const proto = origin.kind === 'local' ? 'local' : 'HTTP'
  const refuse = (stage: HookName | 'protocol', reply: Reply, plugin?: string, detail?: Record<string, unknown>): Error => {
    const core = isCorePolicy(plugin)
    logRefusal(env.log, {
      session: info, stage: 'data', hook: stage, code: reply.code, status: reply.status, text: reply.message,
      plugin: core ? undefined : plugin, rule: core ? plugin : plugin ? undefined : coreRule(reply), sender: message.sender, recipients: message.recipients, proto, detail,
    })
    if (env.hooks.has('rejected')) void env.hooks.emit('rejected', { session: info, stage, code: reply.code, status: reply.status || undefined, message: reply.message, plugin: core ? undefined : plugin })
    return replyError(reply)
  }

  // The envelope checks SMTP makes at MAIL and RCPT.
  if (message.sender !== '' && !parseAddress(message.sender)) throw refuse('protocol', CORE_REPLIES.badSenderSyntax)
  if (info.user && message.sender !== '' && !senderAllowed(message.sender, info.senders ?? [])) throw refuse('mail', CORE_REPLIES.senderNotOwned(message.sender, info.user), 'core:sender-ownership')
  if (!recipients.length) throw refuse('protocol', NO_RECIPIENTS)
  if (recipients.length > config.smtp.maxRecipients) throw refuse('protocol', CORE_REPLIES.tooManyRecipients)
  const notes = { session: new Map<string, unknown>(), message: new Map<string, unknown>() }
  for (const r of recipients) {
    const parsed = parseAddress(r.address)
    if (!parsed) throw refuse('protocol', CORE_REPLIES.badRecipientSyntax, undefined, { recipient: r.address })
    const isLocal = config.localDomains.includes(parsed.domain)
    const passed = await env.policies.recipientPassed({ session: info, envelope, recipient: r, domain: parsed.domain, isLocal, notes })
    if (passed && passed.verdict.action !== 'accept') throw refuse('rcpt', replyFor('rcpt', passed.verdict), passed.plugin)
  }
  if (message.raw.length > config.smtp.maxMessageSize) throw refuse('protocol', CORE_REPLIES.sizeExceeded)

  const result = await acceptMessage(env, Readable.from([toCrlf(message.raw)], { objectMode: false }), {
    info,
    envelope,
    notes,
    via: origin.kind === 'local' ? 'sendmail' : 'api',
    received: (queueId, rcpts) => injectReceived(config.hostname, origin, info.user, queueId, rcpts),
    lineEndings: config.smtp.bareLineEndings,
    refuse,
  })
  // A data hook that took the message itself queued nothing: there is no queue id to give.
  return { queueId: result.queueId ?? '' }
}

/** The session plugins see for an injection: a trusted submission from the relay's own host. */
function syntheticSession(user: string | undefined, origin: InjectOrigin, hostname: string): SessionInfo {
  return {
    id: `inject-${process.pid}-${++sessions}`,
    remoteAddress: '127.0.0.1',
    remotePort: 0,
    localAddress: '127.0.0.1',
    localPort: 0,
    clientHostname: 'localhost',
    listener: { host: origin.kind === 'local' ? 'sendmail' : 'api', port: 0, role: 'submission' },
    helo: hostname,
    secure: false,
    user,
    // As an AUTH without a backend's list: the user may send as its own address.
    senders: user ? (parseAddress(user) ? [user] : []) : undefined,
    trusted: true,
  }
}

/** The Received field of an injected message, Postfix style: `by host (Relay, from userid 1000)`. */
function injectReceived(hostname: string, origin: InjectOrigin, user: string | undefined, queueId: string, recipients: string[]): string {
  const from =
    origin.kind === 'local' ? `from userid ${origin.uid ?? 'unknown'}` : `from the admin API${user ? ` as ${user.replace(/[^\x21-\x7e]/g, '?')}` : ''}`
  const forClause = recipients.length === 1 ? `\r\n\tfor <${recipients[0]}>` : ''
  return `by ${hostname} (Relay, ${from})\r\n\twith ${origin.kind === 'local' ? 'local' : 'HTTP'} id ${queueId}${forClause};\r\n\t${rfc5322Date()}`
}

/** A local message's lone LFs become CRLF (sendmail input is a Unix text file); CRLFs stay. */
export function toCrlf(raw: Buffer): Buffer {
  const parts: Buffer[] = []
  let start = 0
  for (let i = raw.indexOf(10); i >= 0; i = raw.indexOf(10, i + 1)) {
    if (i > 0 && raw[i - 1] === 13) continue
    parts.push(raw.subarray(start, i), Buffer.from('\r\n'))
    start = i + 1
  }
  if (!parts.length) return raw
  parts.push(raw.subarray(start))
  return Buffer.concat(parts)
}
