// DATA (and an injection without SMTP, core/smtp/inject.ts): the message read (to memory or a spool
// file), checked, run through the data and queue hooks, stamped (Received, and Message-ID/Date on
// submission) and written to the queue. The reply is sent only once the message is durable.
import fs from 'node:fs'
import { Readable } from 'node:stream'
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus } from '../hooks/bus.js'
import type { Envelope, HookName, Notes, SessionInfo } from '../hooks/types.js'
import { CORE_REPLIES, replyError, replyFor, replyText, type Reply } from '../hooks/verdict.js'
import type { NewMessage } from '../queue/types.js'
import type { Spool } from '../queue/spool.js'
import type { QueueIntake } from '../queue/intake.js'
import { newQueueId } from '../queue/id.js'
import { parseAddress } from '../mail/address.js'
import { acceptedFields } from '../events/log.js'
import { BareLineEndingError, HeaderTooLargeError, NulByteError, readMessage, type ReceivedData } from './data.js'
import { wrapLongLines } from './long-lines.js'
import { hopCountOf, receivedHeader, rfc5322Date } from '../mail/received.js'
import { convertReceivedTo7bit } from './seven-bit.js'
import { headerMemory, HeaderMemoryError } from './header-memory.js'
import { envelopeOf, type ListenerInfo } from './session.js'
import type { PolicyStages } from './policy-stages.js'
import { postmasterMailbox } from './postmaster.js'
import { hostPortText } from '../net/host-port.js'

/** BODY= values that already announce 8-bit content. */
const EIGHT_BIT_BODY: ReadonlySet<string> = new Set(['8BITMIME', 'BINARYMIME'])

const DROPPED_FIELDS = ['Return-Path', 'Bcc', 'Resent-Bcc', 'Content-Length']

/** What message acceptance uses of the relay. */
export interface AcceptEnv {
  config: RelayConfig
  log: Logger
  spool: Spool
  intake: QueueIntake
  /** Runs the hook stages (the core's policies and the config's plugins). */
  policies: Pick<PolicyStages, 'run' | 'has'>
  /** Tells observers and plugins of the message queued (`accepted`). */
  hooks: Pick<HookBus, 'has' | 'emit'>
}

/** The session the message comes in on. */
export interface Transaction {
  session: SMTPServerSession
  info: SessionInfo
  listener: ListenerInfo
  notes: Notes
  /** The error that refuses the message, after its audit log line (with `detail`) and the `rejected` event. */
  refuse(stage: HookName | 'protocol', reply: Reply, plugin?: string, detail?: Record<string, unknown>): Error
}

/**
 * One message to accept, however it came: SMTP DATA (receiveMessage) or an injection without
 * SMTP (core/smtp/inject.ts). Both go through `acceptMessage`, so they get the same checks.
 */
export interface Submission {
  /** The session as plugins see it (a synthetic one for an injection). */
  info: SessionInfo
  envelope: Envelope
  notes: Notes
  /** Where it came in, kept in the message's meta: `host:port` of the listener, or 'sendmail', 'api'. */
  via: string
  /** The value of the Received field this relay adds. */
  received(queueId: string, recipients: string[]): string
  /** Line-ending and NUL policy for the message bytes (config smtp.bareLineEndings). */
  lineEndings: 'reject' | 'normalize'
  /** The transport saw more than smtp.maxMessageSize (smtp-server answers 552 itself). */
  sizeExceeded?: () => boolean
  refuse: Transaction['refuse']
}

/** Reads and accepts one message; resolves with the 250 reply text, or throws the refusal. */
export async function receiveMessage(env: AcceptEnv, stream: SMTPServerDataStream, tx: Transaction): Promise<string> {
  const { session, info, listener } = tx
  const tls = info.tls ? `${info.tls.version} with cipher ${info.tls.cipher}` : undefined
  // RFC 6531 §3.7.3: a transaction with the SMTPUTF8 parameter is UTF8SMTP(S)(A), not ESMTP….
  const mailArgs = (session.envelope.mailFrom && session.envelope.mailFrom.args) || {}
  const protocol = 'SMTPUTF8' in mailArgs ? session.transmissionType.replace(/^ESMTP/, 'UTF8SMTP') : session.transmissionType
  const submission: Submission = {
    info,
    envelope: envelopeOf(session),
    notes: tx.notes,
    via: hostPortText(listener.host, listener.port),
    received: (queueId, recipients) => receivedHeader({ session: info, hostname: env.config.hostname, protocol, queueId, recipients, tls }),
    lineEndings: env.config.smtp.bareLineEndings,
    sizeExceeded: () => stream.sizeExceeded,
    refuse: tx.refuse,
  }
  return (await acceptMessage(env, stream, submission)).reply
}

/**
 * Reads the message from `source` and accepts it: the checks, the data and queue hooks, Received,
 * the durable write. Resolves with the 250 reply text and the queue id (none when a data hook took
 * the message itself), or throws the refusal.
 */
export async function acceptMessage(env: AcceptEnv, source: Readable, sub: Submission): Promise<{ reply: string; queueId?: string }> {
  const id = newQueueId()
  const started = Date.now()
  const data = await read(env, source, sub, id)
  const discard = async () => {
    if ('file' in data.body) await data.body.file.discard()
  }
  try {
    // The message must not be queued behind a 552 the transport already answered.
    if (sub.sizeExceeded?.()) {
      await discard()
      throw sub.refuse('protocol', CORE_REPLIES.sizeExceeded)
    }
    return await accept(env, id, data, sub, started)
  } catch (err) {
    await discard().catch(() => undefined)
    if ((err as { responseCode?: number }).responseCode) throw err
    env.log.error({ err, session: sub.info.id }, 'queueing message failed')
    throw sub.refuse('queue', outOfStorage(err) ? CORE_REPLIES.noStorage : CORE_REPLIES.queueFailed)
  }
}

async function read(env: AcceptEnv, source: Readable, sub: Submission, id: string): Promise<ReceivedData> {
  const { maxHeaderSize, maxHeaderLines, maxHeaderFieldLines, maxHeaderMemory } = env.config.smtp
  try {
    const headerLimits = { maxBytes: maxHeaderSize, maxLines: maxHeaderLines, maxFieldLines: maxHeaderFieldLines }
    // Long lines stay as they came until the data hook has checked the sender's signatures.
    return await readMessage(source, { spool: env.spool, id, lineEndings: sub.lineEndings, headerLimits, wrap: false, headerBudget: headerMemory.budget(maxHeaderMemory) })
  } catch (err) {
    // The refusal's own log line (msg 'refused') says what was wrong.
    if (err instanceof HeaderTooLargeError) throw sub.refuse('protocol', CORE_REPLIES.headerTooLarge(err.message), 'core:header-too-large', { limit: err.limit, max: err.max })
    if (err instanceof HeaderMemoryError) throw sub.refuse('protocol', CORE_REPLIES.noStorage, 'core:header-memory', { maxHeaderMemory })
    if (err instanceof BareLineEndingError) throw sub.refuse('protocol', CORE_REPLIES.bareLineEnding)
    if (err instanceof NulByteError) throw sub.refuse('protocol', CORE_REPLIES.nulByte)
    // A client that went away gets no reply, so that is no refusal either.
    if ((err as { code?: string }).code === 'ECONNECTION') throw replyError(CORE_REPLIES.readFailed)
    env.log.error({ err, session: sub.info.id }, 'reading message failed')
    throw sub.refuse('protocol', outOfStorage(err) ? CORE_REPLIES.noStorage : writeFailure(err) ? CORE_REPLIES.writeFailed : CORE_REPLIES.readFailed)
  }
}

/** A file the relay writes failed (the spool: a size limit, permissions, a read-only or broken disk), not the client's stream. */
const writeFailure = (err: unknown) => {
  const e = err as { code?: unknown; syscall?: unknown } | null
  return ['EFBIG', 'EROFS', 'EIO', 'EACCES', 'EPERM', 'EMFILE', 'ENFILE'].includes(String(e?.code)) || ['open', 'write', 'fsync', 'fdatasync', 'close', 'rename', 'mkdir'].includes(String(e?.syscall))
}

/** A full disk or quota (the spool file, or SQLite's own SQLITE_FULL): RFC 3463's 4.3.1, as Postfix says it. */
export const outOfStorage = (err: unknown) => ['ENOSPC', 'EDQUOT', 'SQLITE_FULL'].includes(String((err as { code?: string })?.code))

/** Hooks, trace headers, the durable write: resolves only once the message is on disk. */
async function accept(env: AcceptEnv, id: string, data: ReceivedData, sub: Submission, started: number): Promise<{ reply: string; queueId?: string }> {
  const { config, log } = env
  const { info, envelope, notes } = sub
  let { headers } = data
  const size = () => headers.toBuffer().length + data.bodySize

  // RFC 5321 §6.3: a message that has been round this many times is in a loop (ours not counted yet).
  const hops = hopCountOf(headers)
  if (hops > config.smtp.maxHops) throw sub.refuse('protocol', CORE_REPLIES.tooManyHops, undefined, { hops, limit: config.smtp.maxHops })

  // Plugins that scan or sign read the message as it stands: current header fields, then the body.
  if ('file' in data.body) await data.body.file.flushPending()
  // The body as it stands: a queue plugin may have it converted to 7-bit (convertTo7bit).
  const readMessage = () => {
    const body = data.body
    return 'inline' in body
      ? Readable.from([headers.toBuffer(), body.inline], { objectMode: false })
      : Readable.from(
          (async function* () {
            yield headers.toBuffer()
            yield* fs.createReadStream(body.file.path)
          })(),
          { objectMode: false },
        )
  }
  const convertTo7bit = () => convertReceivedTo7bit(data, readMessage, env.spool, id)

  // Each stage gets copies of the session and envelope: what is queued is what MAIL and RCPT
  // accepted, whatever a plugin does to the objects it was shown (headers are the changeable part).
  // (A stage no plugin hooks is skipped: the copies cost more than most hooks do.)
  const d = env.policies.has('data') ? await env.policies.run('data', { session: structuredClone(info), envelope: structuredClone(envelope), headers, size: size(), readMessage, notes }) : undefined
  if (d && d.verdict.action !== 'accept') throw sub.refuse('data', replyFor('data', d.verdict), d.plugin)
  // A plugin took the message itself (e.g. a feedback report counted): 250, nothing queued.
  if (d?.verdict.handled) {
    if ('file' in data.body) await data.body.file.discard()
    return { reply: replyText(replyFor('data', d.verdict)) }
  }
  // RFC 5321 §4.5.3.1.6: no line over 998 octets is queued, signed or sent. Broken only now: the
  // data hook judged the sender's DKIM signatures (DMARC) on the lines as they were signed.
  if (data.longLines) {
    await wrapLongLines(data, readMessage, env.spool, id)
    headers = data.headers
  }

  // Dropped as Postfix's cleanup does (message_drop_headers), after the data hook, which judged the
  // sender's signatures on the message as it came. RFC 5321 §4.4: the final delivery writes
  // Return-Path from the envelope; Bcc names recipients the others must not see; a Content-Length
  // is stale once fields are added.
  for (const name of DROPPED_FIELDS) headers.remove(name)
  if (info.listener.role === 'submission') {
    // Missing or empty (`Message-ID:` with nothing after it): RFC 5322 requires a value.
    const fixes: [string, () => string][] = [['Message-ID', () => `<${id}@${config.hostname}>`], ['Date', rfc5322Date]]
    for (const [name, value] of fixes) {
      if (headers.get(name)?.trim()) continue
      headers.remove(name)
      headers.append(name, value())
    }
  }
  const recipients = envelope.recipients.map((r) => r.address)
  headers.prepend('Received', sub.received(id, recipients))

  const q = env.policies.has('queue') ? await env.policies.run('queue', { session: structuredClone(info), envelope: structuredClone(envelope), headers, size: size(), queueId: id, readMessage, convertTo7bit, notes }) : undefined
  if (q && q.verdict.action !== 'accept') throw sub.refuse('queue', replyFor('queue', q.verdict), q.plugin)

  const headerBytes = headers.toBuffer()
  // The limit holds for the message as queued and sent on, with the fields added here (as Postfix
  // counts them): otherwise a next hop with the same SIZE limit would refuse it after our 250.
  if (headerBytes.length + data.bodySize > config.smtp.maxMessageSize) throw sub.refuse('protocol', CORE_REPLIES.sizeExceeded)
  if ('file' in data.body) await data.body.file.commit()
  const now = Date.now()
  const queued = envelope.recipients.map((r) => ({ address: r.address, domain: parseAddress(r.address)!.domain, args: r.args }))
  // A stranger only reaches local domains: mail for another domain was relayed with the operator's
  // leave (AUTH, trustedNetworks, or a plugin such as relay-acl), so its DSNs are not backscatter.
  // The relay's postmaster (config `postmaster`, maybe in another domain) is as local as they are.
  const postmaster = postmasterMailbox(config).toLowerCase()
  const trusted = info.trusted || queued.some((r) => !config.localDomains.includes(r.domain) && r.address.toLowerCase() !== postmaster)
  const message: NewMessage = {
    id,
    sender: envelope.sender.address,
    // 8-bit bytes travel only with BODY=8BITMIME (RFC 6152 §3), whatever the client declared (none,
    // 7BIT): marked by content here, as Postfix's cleanup does, so delivery need not read it again.
    senderArgs: data.eightBit && !EIGHT_BIT_BODY.has(String(envelope.sender.args?.BODY ?? '').toUpperCase()) ? { ...envelope.sender.args, BODY: '8BITMIME' } : envelope.sender.args,
    recipients: queued,
    headers: headerBytes,
    body: 'file' in data.body ? { file: data.body.file.path } : { inline: data.body.inline },
    size: headerBytes.length + data.bodySize,
    messageId: headers.get('Message-ID'),
    receivedAt: now,
    expiresAt: now + config.delivery.maxQueueLifetime,
    meta: { clientAddress: info.remoteAddress, clientHostname: info.clientHostname, helo: info.helo, listener: sub.via, user: info.user, trusted },
  }
  // Durable before the 250; the queue then announces the new work to delivery.
  await env.intake.enqueue(message)
  // The 'accepted' event's log line (core/events/log.ts logs the others).
  log.info({ event: 'accepted', queueId: id, ...acceptedFields(message, recipients, info), durationMs: now - started }, 'accepted')
  if (env.hooks.has('accepted')) {
    void env.hooks.emit('accepted', { queueId: id, messageId: message.messageId, sender: message.sender, recipients, size: message.size, session: info })
  }
  return { reply: `2.0.0 Ok: queued as ${id}`, queueId: id }
}
