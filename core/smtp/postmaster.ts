// RFC 5321 §4.5.1: mail to `postmaster` must be taken. `RCPT TO:<postmaster>` (no domain, §4.1.1.3),
// `<postmaster@hostname>` and `<postmaster@[ip]>` at the address the client connected to (§4.1.3; as
// Postfix takes its own interfaces' literals) are the relay's postmaster: config `postmaster`, else
// the first local domain's, else the hostname's (Postfix appends $myorigin, $myhostname by default).
// This rewrites the address smtp-server keeps in the envelope, so it is a step of the SMTP adapter
// before any check or hook, not a policy (a verdict cannot change an address).
import net from 'node:net'
import type { SMTPServerAddress } from 'smtp-server'
import type { RelayConfig } from '../config/schema.js'
import { addressKey, domainKey } from '../mail/address.js'

type PostmasterConfig = Pick<RelayConfig, 'postmaster' | 'localDomains' | 'hostname'>

/** The mailbox the relay's postmaster mail goes to. */
export const postmasterMailbox = (c: PostmasterConfig): string => c.postmaster ?? `postmaster@${c.localDomains[0] ?? c.hostname.toLowerCase()}`

/** The address literal of the relay's own address `ip` (`[192.0.2.1]`, `[ipv6:2001:db8::1]`), as parseAddress keeps it. */
const ownLiteral = (ip: string | undefined): string | undefined => (ip && net.isIP(ip) ? domainKey(net.isIPv6(ip) ? `[IPv6:${ip}]` : `[${ip}]`) : undefined)

/**
 * Rewrites the relay's postmaster (bare, at the hostname, or at `localAddress` as a literal: the
 * listener's address the client reached) in place; true when it was one.
 */
export function qualifyPostmaster(address: SMTPServerAddress, c: PostmasterConfig, localAddress?: string): boolean {
  if (address.address.toLowerCase() !== 'postmaster' && !atRelayItself(address.address, c, localAddress)) return false
  address.address = postmasterMailbox(c)
  return true
}

/**
 * `postmaster@hostname`, or `postmaster@[ip]` for the relay's own `ip`, in any spelling of the
 * mailbox (`"postmaster"`, `Postmaster`: RFC 5321 §4.1.2) and of the domain or literal. Only
 * postmaster: other local parts there stay foreign.
 */
function atRelayItself(address: string, c: PostmasterConfig, localAddress: string | undefined): boolean {
  const key = addressKey(address)
  if (!key?.startsWith('postmaster@')) return false
  const domain = key.slice('postmaster@'.length)
  return domain === domainKey(c.hostname) || (domain.endsWith(']') && domain === ownLiteral(localAddress))
}

/**
 * Whether `address` is the relay's postmaster as the envelope holds it after qualifyPostmaster: its
 * mailbox, or postmaster at a local domain or the hostname. Mail to it is always taken (RFC 5321
 * §4.5.1): such an address is never suppressed, by a bounce or by hand.
 */
export function isRelayPostmaster(address: string, c: PostmasterConfig): boolean {
  const key = addressKey(address)
  if (!key) return false
  if (key === addressKey(postmasterMailbox(c))) return true
  const at = key.lastIndexOf('@')
  const domain = key.slice(at + 1)
  return key.slice(0, at) === 'postmaster' && (c.localDomains.includes(domain) || domain === domainKey(c.hostname))
}

/**
 * smtp-server dedupes recipients by what the client typed; `<postmaster>` is another spelling of
 * the postmaster mailbox: keep one of them.
 */
export function dropPostmasterTwin(rcpts: SMTPServerAddress[], address: SMTPServerAddress): void {
  const twin = rcpts.findIndex((r) => r !== address && r.address.toLowerCase() === address.address.toLowerCase())
  if (twin >= 0) rcpts.splice(twin, 1)
}
