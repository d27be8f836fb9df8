import net from 'node:net'

export interface ParsedAddress {
  local: string
  /** Lower-cased; an IP literal keeps its brackets. */
  domain: string
}

const DOMAIN = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\uffff-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\uffff-]+)*$/
const QUOTED = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\x80-\uffff]|\\[\x20-\x7e])*"$/

/**
 * Splits an envelope address into local part and domain, or returns undefined when it is not a
 * plain `local@domain` mailbox (RFC 5321 §4.1.2): no source routes, no trailing dots, no bare names.
 */
export function parseAddress(address: string): ParsedAddress | undefined {
  const at = address.lastIndexOf('@')
  if (at <= 0 || at === address.length - 1) return undefined
  const local = address.slice(0, at)
  const domain = address.slice(at + 1)
  if (local.length > 64 || !(DOT_ATOM.test(local) || QUOTED.test(local))) return undefined
  const literal = /^\[(?:IPv6:)?([^\]]+)\]$/i.exec(domain)
  if (literal) return net.isIP(literal[1]!) ? { local, domain: domain.toLowerCase() } : undefined
  // A bare IP (no brackets) is not a domain: its last label would be all digits.
  if (!DOMAIN.test(domain) || !domain.includes('.') || /\.\d+$/.test(domain)) return undefined
  return { local, domain: domain.toLowerCase() }
}
