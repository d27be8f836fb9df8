import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerSession } from 'smtp-server'
import type { Envelope, EnvelopeAddress, ListenerRole, Notes, SessionInfo } from '../hooks/types.js'
import { CORE_REPLIES, type Reply } from '../hooks/verdict.js'

export interface ListenerInfo {
  host: string
  port: number
  role: ListenerRole
}

export const unmapIp = (ip: string) => (ip?.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip)

/** smtp-server's sendmail jokes (`WIZ` answered `200 Please pass, oh mighty wizard`): unrecognized, as anywhere else. */
const NOT_OFFERED: readonly string[] = ['WIZ', 'SHELL', 'KILL']

/** RFC 5321 commands the relay knows and does not offer: 502 5.5.1 "not implemented", not 500 "not recognized" (§4.2.4, EXPN §3.5.3). */
export const NOT_IMPLEMENTED: ReadonlySet<string> = new Set(['EXPN', 'TURN', 'ETRN', 'ATRN', 'SEND', 'SOML', 'SAML', 'BDAT'])

/** The commands a session does not offer: AUTH only inside TLS (unless the listener opts in to plaintext AUTH) and with an auth plugin. */
export function disabledCommands(hasAuth: boolean, listener: { tls: string; allowPlaintextAuth: boolean }, secure: boolean): string[] {
  const disabled = [...NOT_OFFERED]
  if (!hasAuth || (!secure && !listener.allowPlaintextAuth)) disabled.push('AUTH')
  if (listener.tls !== 'starttls' || secure) disabled.push('STARTTLS')
  return disabled
}

/** The text of the refusal core/smtp/refusal.ts logged for a session's next reply (core/smtp/patches.ts 15). */
export const REFUSAL_LOGGED = Symbol('relay.refusalLogged')
/** The context of a reply whose sender logs its own line (core/smtp/patches.ts 15). */
export const OWN_LINE = 'relay:own-line'

/** What plugins see of an smtp-server session. */
export function sessionInfo(s: SMTPServerSession, listener: ListenerInfo, trustedNetwork = false): SessionInfo {
  const user = s.user as unknown as AuthenticatedUser | undefined
  const cipher = (s as { tlsOptions?: { name?: string; version?: string } | false }).tlsOptions
  // Each stage's own object, as data and queue get a copy: what a plugin writes to it changes
  // nothing for the core or for later stages.
  return {
    id: s.id,
    remoteAddress: unmapIp(s.remoteAddress),
    remotePort: s.remotePort,
    localAddress: unmapIp(s.localAddress),
    localPort: s.localPort,
    clientHostname: s.clientHostname,
    listener: listenerView(listener),
    helo: s.hostNameAppearsAs || undefined,
    secure: s.secure,
    tls: s.secure && cipher ? { version: cipher.version ?? 'TLS', cipher: cipher.name ?? 'unknown' } : undefined,
    user: user ? user.username : undefined,
    // A copy: a plugin that changes what it was handed must not change whom the session may send as.
    senders: user ? [...user.senders] : undefined,
    trusted: Boolean(user) || trustedNetwork,
  }
}

/**
 * A listener as plugins see it: its address and role only, a copy for each stage. The core's own
 * object (its TLS mode, PROXY senders, plaintext AUTH) was handed out before: a plugin that set
 * `session.listener.proxyProtocol` or `role` changed them for every later session.
 */
const listenerView = (l: ListenerInfo): ListenerInfo => ({ host: l.host, port: l.port, role: l.role })

/** What smtp-server keeps as `session.user` after a successful AUTH. */
export interface AuthenticatedUser {
  username: string
  senders: string[]
}

/**
 * RFC 4616: an authorization identity that is not the user's own asks to act as someone else; the
 * relay has no proxy authorization, so that fails whatever the password.
 */
export function actsAsAnotherIdentity(auth: SMTPServerAuthentication): boolean {
  const { authzid = '', authcid = '' } = auth as { authzid?: string; authcid?: string }
  return authzid !== '' && authcid !== '' && authzid.toLowerCase() !== authcid.toLowerCase()
}

/** What the relay remembers about one SMTP session. */
export interface SessionState {
  /** Notes plugins share (session-long, and per transaction: renewed at each MAIL). */
  notes: SessionNotes
  /** The HELO name the helo hook last approved (the hook runs at the first MAIL after it). */
  heloChecked?: string
  authFailures: number
}

function toAddress(a: SMTPServerAddress | false | undefined): EnvelopeAddress {
  if (!a) return { address: '', args: {} }
  const args: Record<string, string | boolean> = {}
  for (const [k, v] of Object.entries(a.args || {})) args[k.toUpperCase()] = v as string | boolean
  return { address: a.address, args }
}

export function envelopeOf(s: SMTPServerSession): Envelope {
  return { sender: toAddress(s.envelope.mailFrom), recipients: s.envelope.rcptTo.map(toAddress) }
}

export { toAddress }

/** The ESMTP parameters of the extensions the listeners offer: SIZE, 8BITMIME, SMTPUTF8, DSN, AUTH. */
const PARAMETERS = {
  'MAIL FROM': new Set(['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID', 'AUTH']),
  'RCPT TO': new Set(['NOTIFY', 'ORCPT']),
}

/** A parameter of a MAIL or RCPT command that no offered extension defines (RFC 5321 §4.1.1.11: 555). */
export function unsupportedParameter(command: keyof typeof PARAMETERS, a: SMTPServerAddress): string | undefined {
  return a.args ? Object.keys(a.args).find((name) => !PARAMETERS[command].has(name.toUpperCase())) : undefined
}

/** On MAIL/RCPT args (not enumerable): the names of ENVID/ORCPT whose raw value was not xtext (core/smtp/patches.ts). */
export const NOT_XTEXT = Symbol('relay.notXtext')

/**
 * A DSN parameter a strict next hop would refuse (Postfix: 501 5.5.4 Bad ENVID parameter syntax),
 * bouncing mail already taken. smtp-server hands the values xtext-decoded: ENVID must be 1–100
 * printable ASCII characters (RFC 3461 §4.4), ORCPT `addr-type;address` without spaces or control
 * characters, at most 500 (§4.2; RFC 6533 lets it be UTF-8, its utf-8 type escaped as \x{HEX}). Its name, or undefined.
 */
export function badDsnParameter(command: keyof typeof PARAMETERS, a: SMTPServerAddress): 'ENVID' | 'ORCPT' | undefined {
  const args = (a.args || {}) as Record<string, string | boolean | undefined> & { [NOT_XTEXT]?: string[] }
  const name = command === 'MAIL FROM' ? 'ENVID' : 'ORCPT'
  if (args[NOT_XTEXT]?.includes(name)) return name
  if (command === 'MAIL FROM') {
    const envid = args.ENVID
    return envid !== undefined && (typeof envid !== 'string' || !/^[\x21-\x7e]{1,100}$/.test(envid)) ? 'ENVID' : undefined
  }
  const orcpt = args.ORCPT
  if (orcpt === undefined) return undefined
  if (typeof orcpt !== 'string' || orcpt.length > 500 || !/^[A-Za-z0-9-]+;[^\x00-\x20\x7f]+$/.test(orcpt)) return 'ORCPT'
  // RFC 6533 §3: a utf-8 address is utf-8-addr-xtext (or -unitext): '+', '=' and '\' only as \x{HEX}.
  return /^utf-8;/i.test(orcpt) && !UTF8_ADDR.test(orcpt.slice(6)) ? 'ORCPT' : undefined
}

/** RFC 6533's utf-8-addr-unitext (its xtext form is the ASCII subset): QCHAR, UTF-8, or \x{HEX} of a non-ASCII or escaped character. */
const UTF8_ADDR = /^(?:[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\x\{(?:[0-9A-Fa-f]{1,6})\})+$/u

/**
 * The reply refusing a MAIL or RCPT command for its parameters, if one does: any after HELO, a parameter no offered
 * extension defines (AUTH= too where AUTH is not on offer, RFC 4954 §5), or a bad ENVID or ORCPT.
 */
export function parameterRefusal(command: keyof typeof PARAMETERS, a: SMTPServerAddress, session: SMTPServerSession): Reply | undefined {
  // A HELO session has no service extensions (RFC 5321 §2.2.1, RFC 1869 §4): none of their parameters.
  const first = a.args ? Object.keys(a.args)[0] : undefined
  if (first !== undefined && (session as { openingCommand?: string | false }).openingCommand === 'HELO') return CORE_REPLIES.parameterNeedsEhlo(command, first)
  const authOffered = !(session as { disabledCommands?: string[] }).disabledCommands?.includes('AUTH')
  const unknown = unsupportedParameter(command, a) ?? (command === 'MAIL FROM' && !authOffered && a.args && 'AUTH' in a.args ? 'AUTH' : undefined)
  if (unknown) return CORE_REPLIES.unsupportedParameter(command, unknown)
  const bad = badDsnParameter(command, a)
  if (!bad) return undefined
  // A well-formed value that is only too long says so (RFC 3461: ENVID 100 characters, ORCPT 500).
  const value = (a.args as Record<string, unknown>)[bad]
  const most = bad === 'ENVID' ? 100 : 500
  const tooLong = typeof value === 'string' && value.length > most && !(a.args as { [NOT_XTEXT]?: string[] })[NOT_XTEXT]?.includes(bad) && badDsnParameter(command, { ...a, args: { ...a.args, [bad]: value.slice(0, most) } }) === undefined
  return tooLong ? CORE_REPLIES.dsnParameterTooLong(bad, most) : CORE_REPLIES.badDsnParameter(bad)
}

/** A session's notes whose maps are made at first use: an idle session no plugin wrote to holds none. */
export class SessionNotes implements Notes {
  #session?: Map<string, unknown>
  #message?: Map<string, unknown>
  get session(): Map<string, unknown> {
    return (this.#session ??= new Map())
  }
  set session(m: Map<string, unknown>) {
    this.#session = m
  }
  get message(): Map<string, unknown> {
    return (this.#message ??= new Map())
  }
  set message(m: Map<string, unknown>) {
    this.#message = m
  }
  /** A new transaction (MAIL): its notes start empty. */
  newTransaction(): void {
    this.#message = undefined
  }
}
