import net from 'node:net'
import { domainToASCII } from 'node:url'

/** Whether `s` holds a character outside US-ASCII (a UTF-8 address part, an internationalized domain). */
export const hasNonAscii = (s: string): boolean => /[^\x00-\x7f]/.test(s)

export interface ParsedAddress {
  /** As given (its case may matter to the mailbox); a quoted local part keeps its quotes. */
  local: string
  /**
   * Lower-cased, an internationalized domain in its ASCII form (A-labels, `xn--…`: what DNS and
   * domain lists compare); an IP literal keeps its brackets (`[192.0.2.1]`, `[ipv6:2001:db8::1]`).
   */
  domain: string
}

const DOMAIN = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\uffff-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\uffff-]+)*$/
// `<` and `>` are qtext to RFC 5321, but the delivery client (nodemailer) refuses an envelope
// address holding one, which would keep the whole message (a sender) or its transaction (a
// recipient) from ever going out: refused here, at the door, instead.
const QUOTED = /^"(?:[\x20\x21\x23-\x3b\x3d\x3f-\x5b\x5d-\x7e\x80-\uffff]|\\[\x20-\x3b\x3d\x3f-\x7e])+"$/
const IPV4_LITERAL = /^\[(\d{1,3}(?:\.\d{1,3}){3})\]$/
const IPV6_LITERAL = /^\[IPv6:([0-9a-f:.]+)\]$/i

/**
 * Splits an envelope address into local part and domain, or returns undefined when it is not a
 * plain `local-part@domain` mailbox (RFC 5321 §4.1.2). Strict on purpose: every address that gets
 * past it names exactly one mailbox in exactly one domain, so a domain check cannot be fooled.
 *
 * - local part: a dot-atom (no leading, trailing or double dots; UTF-8 allowed for SMTPUTF8) or a
 *   non-empty quoted string without `<` or `>` (no next hop could be given it); at most 64 octets
 *   (RFC 5321 §4.5.3.1.1).
 * - domain: letter-digit-hyphen labels of 1-63 characters, at least two of them, at most 253
 *   characters, no trailing dot, the last label not all digits (a bare IP is not a domain); or an
 *   address literal, `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3), and nothing else in
 *   brackets.
 * - the whole address at most 254 octets (a 256-octet path, RFC 5321 §4.5.3.1.3, less `<>`).
 * - refused: bytes that are not UTF-8 (decoded as U+FFFD), a bare name (`postmaster`: the RCPT code handles that one), source routes
 *   (`@a:b@c`), several `@` outside quotes, trailing dots, IP addresses without brackets.
 *
 * Routing inside an accepted local part (`user%host`, `host!user`, `"user@host"`) is syntax RFC
 * 5321 allows; whether to take it is a policy, see `hasRoutingInLocalPart`.
 */
export function parseAddress(address: string): ParsedAddress | undefined {
  // U+FFFD stands where the command had bytes that are not UTF-8: taking the address would send
  // mail to another address than the one the client gave (RFC 6531 §3.3: well-formed UTF-8 only).
  if (Buffer.byteLength(address) > 254 || address.includes('\uFFFD')) return undefined
  const at = address.lastIndexOf('@')
  if (at <= 0 || at === address.length - 1) return undefined
  const local = address.slice(0, at)
  const domain = address.slice(at + 1)
  if (Buffer.byteLength(local) > 64 || !(DOT_ATOM.test(local) || QUOTED.test(local))) return undefined
  if (domain.startsWith('[')) {
    const literal = addressLiteral(domain)
    return literal ? { local, domain: literal.toLowerCase() } : undefined
  }
  // An internationalized domain (smtp-server hands even an A-label client's domain over as Unicode,
  // RFC 5890): checked, and kept, in its ASCII form.
  const ascii = hasNonAscii(domain) ? domainToASCII(domain) : domain
  if (!ascii || !DOMAIN.test(ascii) || !ascii.includes('.') || /\.\d+$/.test(ascii)) return undefined
  return { local, domain: ascii.toLowerCase() }
}

/**
 * An address literal in one spelling, or undefined when `domain` is none: `[192.0.2.1]`,
 * `[IPv6:2001:db8::1]` (RFC 5952 text, however written); an IPv4-mapped one (`[IPv6:::ffff:192.0.2.1]`)
 * is the IPv4 literal, the same host. Lists, suppressions and routes then see one destination.
 */
function addressLiteral(domain: string): string | undefined {
  const v4 = IPV4_LITERAL.exec(domain)
  if (v4) return net.isIPv4(v4[1]!) ? domain : undefined
  const v6 = IPV6_LITERAL.exec(domain)
  if (!v6 || !net.isIPv6(v6[1]!)) return undefined
  const text = new net.SocketAddress({ address: v6[1]!, family: 'ipv6' }).address
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  return mapped ? `[${mapped[1]}]` : `[IPv6:${text}]`
}

/**
 * `address` with its domain in ASCII form (A-labels) when only the domain is internationalized:
 * such mail needs no SMTPUTF8 on the way out (RFC 6531 §3.2), and DNS knows the domain so. An
 * address literal comes back in one spelling (addressLiteral).
 */
export function asciiDomainAddress(address: string): string {
  if (address.endsWith(']')) {
    const at = address.lastIndexOf('@')
    const literal = at > 0 ? addressLiteral(address.slice(at + 1)) : undefined
    if (literal) return `${address.slice(0, at)}@${literal}`
  }
  const parsed = hasNonAscii(address) ? parseAddress(address) : undefined
  if (!parsed || hasNonAscii(parsed.local)) return address
  return `${parsed.local}@${parsed.domain}`
}

/**
 * One spelling per address, for lists that name users and what they may send as: the local part
 * lower-cased (those lists match it case-insensitively) and unquoted when the quotes change
 * nothing, the domain as `parseAddress` keeps it (lower case, A-labels), so `a@bücher.example`,
 * `"A"@XN--BCHER-KVA.example` are one key. Undefined when `address` is not one `parseAddress` takes.
 */
export function addressKey(address: string): string | undefined {
  const parsed = parseAddress(address)
  return parsed && `${unquotedLocal(parsed.local).toLowerCase()}@${parsed.domain}`
}

/** A quoted local part whose text is a dot-atom is that dot-atom (`"bob"`, `"b\\ob"`: bob; RFC 5321 §4.1.2). */
function unquotedLocal(local: string): string {
  if (!local.startsWith('"')) return local
  const text = local.slice(1, -1).replace(/\\(.)/g, '$1')
  return DOT_ATOM.test(text) ? text : local
}

/** A bare domain (or address literal) the way `parseAddress` keeps it, or undefined when it is not one. */
export function domainKey(domain: string): string | undefined {
  return parseAddress(`x@${domain}`)?.domain
}

/**
 * Whether a local part carries sender-specified routing that some mail stores and MTAs downstream
 * act on: the percent hack (`user%other.example`), a UUCP bang path (`other.example!user`) or an
 * `@` inside a quoted local part (`"user@other.example"`). Accepted for a local domain, such an
 * address can carry mail on to a foreign one. The core refuses these for local domains unless
 * `smtp.allowRoutingInLocalPart` (like Postfix's `allow_untrusted_routing = no`).
 */
export function hasRoutingInLocalPart(local: string): boolean {
  // Their full-width and small forms (`％`, `﹗`, `＠`) too: a store that maps widths (PRECIS,
  // RFC 8265) or normalizes with NFKC reads them as the ASCII ones.
  return /[%!@]/.test(hasNonAscii(local) ? local.normalize('NFKC') : local)
}
