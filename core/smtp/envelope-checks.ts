// The core's own checks of MAIL FROM and RCPT TO, before any hook sees the address: who may start a
// transaction on the listener, address syntax, SMTPUTF8 and parameters. Each returns the refusal (and
// whether it is the stage's or a protocol refusal) or nothing; an accepted address is rewritten in
// place to the form the rest of the relay compares (A-label domain, qualified postmaster).
import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server'
import type { SessionInfo } from '../hooks/types.js'
import { CORE_REPLIES, type Reply } from '../hooks/verdict.js'
import { asciiDomainAddress, hasNonAscii, parseAddress, type ParsedAddress } from '../mail/address.js'
import { parameterRefusal } from './session.js'
import { qualifyPostmaster } from './postmaster.js'
import type { Listener } from './server.js'
import type { RelayConfig } from '../config/schema.js'

export interface EnvelopeRefusal {
  /** 'stage' for a rule of the command itself, 'protocol' for syntax and parameters. */
  kind: 'stage' | 'protocol'
  reply: Reply
}

const smtpUtf8Declared = (mailFrom: SMTPServerAddress) => Boolean(mailFrom.args && 'SMTPUTF8' in mailFrom.args)
const protocol = (reply: Reply): EnvelopeRefusal => ({ kind: 'protocol', reply })

/** Before the helo hook: submission needs AUTH (and TLS first), and MAIL's parameters must be valid. */
export function mailFromAllowed(address: SMTPServerAddress, session: SMTPServerSession, listener: Listener, info: SessionInfo): EnvelopeRefusal | undefined {
  if (listener.role === 'submission' && !info.user) {
    // smtp-server asks for AUTH itself once it is offered; before TLS it is not, so say why.
    const reply = listener.tls === 'starttls' && !info.secure ? CORE_REPLIES.mustStartTls : CORE_REPLIES.authRequired
    return { kind: 'stage', reply }
  }
  // AUTH= (RFC 4954 §5) only where AUTH is on offer.
  const badParameter = parameterRefusal('MAIL FROM', address, session)
  return badParameter ? protocol(badParameter) : undefined
}

/** The sender's syntax; an accepted one gets its domain in ASCII. */
export function senderSyntax(address: SMTPServerAddress): EnvelopeRefusal | undefined {
  if (address.address !== '' && !parseAddress(address.address)) return protocol(CORE_REPLIES.badSenderSyntax)
  address.address = asciiDomainAddress(address.address)
  if (!smtpUtf8Declared(address) && hasNonAscii(address.address)) return protocol(CORE_REPLIES.smtpUtf8Required)
  return undefined
}

/** The recipient's syntax, SMTPUTF8, parameters and count; an accepted one comes back parsed (`postmaster`: the relay's, core/smtp/postmaster.ts; at a literal, of the address the client reached). */
export function recipientChecked(address: SMTPServerAddress, session: SMTPServerSession, config: Pick<RelayConfig, 'postmaster' | 'localDomains' | 'hostname'>, maxRecipients: number): EnvelopeRefusal | (ParsedAddress & { postmaster: boolean }) {
  const postmaster = qualifyPostmaster(address, config, session.localAddress)
  const parsed = parseAddress(address.address)
  if (!parsed) return protocol(CORE_REPLIES.badRecipientSyntax)
  address.address = asciiDomainAddress(address.address)
  const mailFrom = session.envelope.mailFrom
  if (mailFrom && !smtpUtf8Declared(mailFrom) && hasNonAscii(address.address)) return protocol(CORE_REPLIES.smtpUtf8Required)
  const badParameter = parameterRefusal('RCPT TO', address, session)
  if (badParameter) return protocol(badParameter)
  if (session.envelope.rcptTo.length >= maxRecipients) return protocol(CORE_REPLIES.tooManyRecipients)
  return { ...parsed, postmaster }
}
