// Bounce intelligence: every failed or deferred attempt gets a category, from its RFC 3463
// enhanced status code and the reply text (remote replies), or from the relay's own local result
// (DNS, TLS, unreachable). Pure functions, no I/O.
import type { BounceCategory } from '../hooks/types.js'

export type { BounceCategory }

export const BOUNCE_CATEGORIES: readonly BounceCategory[] = ['bad-mailbox', 'mailbox-full', 'policy', 'dns', 'tls', 'auth', 'throttled', 'other']

interface StatusRule {
  /** Enhanced status code pattern: `5.1.1`, `*.1.1` (either class), `*.7.*`. */
  status: string
  category: BounceCategory
}

/**
 * Codes that decide on their own, before the text is looked at: a server that says 5.1.1 means
 * "no such mailbox" whatever its text (which may well contain "spam", as in "spamtrap").
 */
const SPECIFIC: StatusRule[] = [
  { status: '*.1.1', category: 'bad-mailbox' }, // bad destination mailbox address
  { status: '*.1.0', category: 'bad-mailbox' }, // other address status
  { status: '*.1.6', category: 'bad-mailbox' }, // destination mailbox has moved
  { status: '*.2.2', category: 'mailbox-full' }, // mailbox full
  { status: '*.1.2', category: 'dns' }, // bad destination system address (ours: NXDOMAIN, no MX/A)
  { status: '*.1.10', category: 'dns' }, // null MX (RFC 7505)
  { status: '*.4.3', category: 'dns' }, // directory server failure (ours: SERVFAIL, timeout)
  { status: '*.4.4', category: 'dns' }, // unable to route (ours: no address for the MX hosts)
  { status: '*.7.5', category: 'tls' }, // cryptographic failure
  { status: '*.5.3', category: 'other' }, // too many recipients: a per-transaction limit, no "slow down" (RFC 5321 §4.5.3.1.10)
  { status: '*.7.10', category: 'tls' }, // encryption needed (RFC 5248)
  { status: '*.7.11', category: 'tls' }, // encryption required for requested authentication mechanism
  { status: '*.7.8', category: 'auth' }, // authentication credentials invalid (RFC 4954)
  { status: '*.7.9', category: 'auth' }, // authentication mechanism too weak (RFC 4954)
]

/** Reply texts, in order; the first match decides. */
const TEXT: { category: BounceCategory; pattern: RegExp; /** only for temporary (4xx) failures */ temporary?: boolean }[] = [
  // Our own wording for a smarthost that refused our credentials (attempt.ts): a configuration
  // error, whatever status the server put on it (454 4.7.0 would otherwise read as "slow down").
  { category: 'auth', pattern: /\bAUTH as .* failed: / },
  { category: 'tls', pattern: /\bETLS\b|\bstarttls\b|\btls\b.*\b(required|failed|handshake|not available|unavailable)|certificate|encryption (is )?(needed|required)/i },
  {
    category: 'throttled',
    temporary: true,
    pattern: /\brate[ -]?limit|\bratelimit|\brate\b.*\b(exceeded|limit)|at a rate|\btoo many\b(?! recipients)|throttl|slow down|greylist|graylist|try again in \d|temporarily (deferred|rate limited)/i,
  },
  { category: 'mailbox-full', pattern: /quota|mailbox (is )?full|mailbox.*\bfull\b|insufficient (system )?storage|storage (is )?full|disk full|out of storage|exceeded storage/i },
  {
    category: 'policy',
    pattern: /\bspam|blocked|block ?list|black ?list|deny ?list|\bpolicy\b|reputation|\brbl\b|dnsbl|spamhaus|listed (at|on|in|by)|banned|virus|malware|phish|dmarc|\bspf\b|\bdkim\b|relay(ing)? (access )?(denied|not permitted|prohibited)|not permitted to relay|unsolicited|content rejected/i,
  },
  {
    category: 'bad-mailbox',
    pattern:
      /user unknown|unknown user|no such (user|mailbox|recipient|account|address|person)|(user|mailbox|recipient|account|address) (does not|doesn't|not) exist|does not exist|mailbox unavailable|mailbox not found|recipient not found|user not found|address not found|unknown (recipient|mailbox|address|local[- ]part)|invalid (recipient|mailbox|address)|not a valid (mailbox|recipient|address)|account (has been )?(disabled|deactivated|closed|suspended)|no mailbox here|undeliverable address|unrouteable address/i,
  },
  { category: 'dns', pattern: /\bENOTFOUND\b|\bSERVFAIL\b|\bNXDOMAIN\b|host (or domain name )?not found|domain (not found|does not exist)|no mx\b|null mx/i },
]

/** Codes that only decide when the text did not. */
const GENERIC: StatusRule[] = [
  { status: '4.7.0', category: 'throttled' }, // "try again later" from most large providers
  { status: '4.2.1', category: 'throttled' }, // mailbox busy / receiving at a rate (Gmail)
  { status: '5.2.1', category: 'bad-mailbox' }, // mailbox disabled, not accepting messages
  { status: '*.1.3', category: 'bad-mailbox' }, // bad destination mailbox address syntax
  { status: '*.7.*', category: 'policy' }, // security or policy status
]

function matches(rule: string, status: string): boolean {
  const r = rule.split('.')
  const s = status.split('.')
  return r.length === 3 && r.every((part, i) => part === '*' || part === s[i])
}

export interface ParsedReply {
  /** Basic SMTP reply code (421, 550, ...), when the text carries one. */
  code?: number
  /** RFC 3463 enhanced status code, when the text carries one. */
  status?: string
}

/**
 * The basic and enhanced codes of a response as the relay records it: `550 5.1.1 text`,
 * `5.1.2 text` (a local result), or `4.4.1 Host x unreachable: 421 4.7.0 text`, where the inner
 * remote reply is the one that tells what happened.
 */
export function parseReply(response: string): ParsedReply {
  const text = response.trim()
  const head = /^(?:([2-5]\d\d)(?:[ -]|$))?\s*(?:([245]\.\d{1,3}\.\d{1,3})\b)?/.exec(text)!
  let code = head[1] ? Number(head[1]) : undefined
  // RFC 3463 §2, as Postfix does: an enhanced code of another class than the reply's is ignored.
  let status = agrees(code, head[2])
  // A connection-level wrapper of ours around what the remote host said.
  if (status === '4.4.1' || status === '4.4.2') {
    // After ": " (the port in `name[ip]:587 ` is no reply code).
    const inner = /:\s+([45]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3})\b)?/.exec(text)
    if (inner) {
      code = Number(inner[1])
      status = agrees(code, inner[2]) ?? status
    }
  }
  return { code, status }
}

/** `status` when its class is the reply code's (or there is no code), else none. */
function agrees(code: number | undefined, status: string | undefined): string | undefined {
  return status && code !== undefined && status[0] !== String(code)[0] ? undefined : status
}

/**
 * The category of a failure (or deferral): specific enhanced codes first (5.1.1 is a bad mailbox
 * whatever the text says), then the reply text, then the broader codes, then the basic code.
 * `status` is the enhanced code the relay already derived, if any (it wins over the text's).
 */
export function classify(response: string, status?: string): BounceCategory {
  const parsed = parseReply(response)
  const enhanced = parsed.status ?? status
  // Microsoft 365 says 5.1.10 (null MX, RFC 7505) for an unknown recipient; our own null MX has no reply code.
  if (parsed.code !== undefined && enhanced && matches('*.1.10', enhanced) && RECIPIENT_NOT_FOUND.test(response)) return 'bad-mailbox'
  // A refusal of the sender says nothing of the recipient's mailbox (Postfix: 5.1.0 Sender address
  // rejected): the other rules decide (5.7.1 is policy), else 'other'.
  return byCodeAndText(response, parsed, enhanced, aboutSender(response, enhanced))
}

const RECIPIENT_NOT_FOUND = /RecipientNotFound|RecipNotFound|recipient not found/i

/** The sender's address (RFC 3463 X.1.7, X.1.8), or a reply text that names the sender as what was refused. */
const SENDER = /\bsender address\b|\bsender'?s (mailbox|address|domain)\b|\b(unknown|invalid|bad|unverified) sender\b|\bsender (unknown|invalid|not (found|known|verified|allowed|permitted))/i

/** The reply refuses the sender, not a recipient. */
export function aboutSender(response: string, status?: string): boolean {
  const enhanced = parseReply(response).status ?? status
  return (enhanced !== undefined && (matches('*.1.7', enhanced) || matches('*.1.8', enhanced))) || SENDER.test(response)
}

function byCodeAndText(response: string, parsed: ParsedReply, enhanced: string | undefined, sender: boolean): BounceCategory {
  const temporary = parsed.code !== undefined ? parsed.code < 500 : enhanced ? enhanced.startsWith('4.') : true
  const applies = (category: BounceCategory) => !(sender && category === 'bad-mailbox')

  if (enhanced) for (const rule of SPECIFIC) if (applies(rule.category) && matches(rule.status, enhanced)) return rule.category
  for (const rule of TEXT) {
    if ((rule.temporary && !temporary) || !applies(rule.category)) continue
    if (rule.pattern.test(response)) return rule.category
  }
  if (enhanced) for (const rule of GENERIC) if (applies(rule.category) && matches(rule.status, enhanced)) return rule.category
  if (parsed.code === 421) return 'throttled'
  return 'other'
}

/**
 * A hard bounce: the mailbox does not exist and the server said so permanently (5xx). Only the
 * reply to that recipient's RCPT (or LMTP's per-recipient reply) can say so: deliver.ts checks which.
 */
export function isHardBounce(category: BounceCategory, response: string, status?: string): boolean {
  if (category !== 'bad-mailbox' || aboutSender(response, status)) return false
  const parsed = parseReply(response)
  if (parsed.code !== undefined) return parsed.code >= 500
  return (parsed.status ?? status ?? '').startsWith('5.')
}

/**
 * A reply that asks the destination (the domain, the host) to slow down: a "throttled" one, but not
 * greylisting (one sender/recipient pair) nor a 4.2.1 to one RCPT (Gmail's "this user is receiving
 * mail at a rate ..."): those are about one mailbox, and pause nobody else.
 */
export function slowsDestination(response: string, status: string | undefined, stage: string | undefined): boolean {
  if (classify(response, status) !== 'throttled' || /gr[ae]ylist/i.test(response)) return false
  return !(stage === 'rcpt' && (status === '4.2.1' || /^(?:\d{3}[ -])+4\.2\.1\b/.test(response)))
}
