import net from 'node:net'
import type { SessionInfo } from '../hooks/types.js'
import type { MessageHeaders } from './headers.js'

/** RFC 5322 date-time, e.g. `Sat, 28 Nov 2026 06:01:49 +0000`. */
export function rfc5322Date(date = new Date()): string {
  return date.toUTCString().replace(/GMT$/, '+0000')
}

const HOST_NAME = /^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?)*\.?$/i

/**
 * A HELO name that can stand as the field's `from` domain: a host name, or an address literal that
 * is one (RFC 5321 §4.1.3: `[192.0.2.1]`, `[IPv6:2001:db8::1]`; not `[300.1.1.1]`, `[::1]`, `[cafe]`).
 */
function isHeloName(helo: string): boolean {
  if (HOST_NAME.test(helo)) return true
  if (!helo.startsWith('[') || !helo.endsWith(']')) return false
  const inside = helo.slice(1, -1)
  return net.isIPv4(inside) || (/^ipv6:/i.test(inside) && net.isIPv6(inside.slice(5)) && !inside.includes('%'))
}

/** Text that is safe inside a comment: printable ASCII, `(`, `)` and `\` escaped, at most 100 characters. */
const commentText = (text: string) => text.slice(0, 100).replace(/[^\x20-\x7e]/g, '?').replace(/[()\\]/g, '\\$&')

/** The Received trace field this relay adds (RFC 5321 §4.4). */
export function receivedHeader(o: { session: SessionInfo; hostname: string; protocol: string; queueId: string; recipients: string[]; tls?: string }): string {
  const s = o.session
  // RFC 5321 §4.1.3: an IPv6 address literal is written [IPv6:…].
  const literal = net.isIPv6(s.remoteAddress) ? `[IPv6:${s.remoteAddress}]` : `[${s.remoteAddress}]`
  const client = `${s.clientHostname && s.clientHostname !== `[${s.remoteAddress}]` ? `${s.clientHostname} ` : ''}${literal}`
  // The client chose its HELO name: one that is no host name (`x(`, `a;b`, spaces, 8-bit bytes)
  // goes into the comment, escaped, so it cannot end the comment or the field early.
  const helo = s.helo ?? 'unknown'
  const from = isHeloName(helo) ? `${helo} (${client})` : `${literal} (helo=${commentText(helo)} ${client})`
  const tls = o.tls ? `\r\n\t(using ${o.tls})` : ''
  const forClause = o.recipients.length === 1 ? `\r\n\tfor <${o.recipients[0]}>` : ''
  return `from ${from}${tls}\r\n\tby ${o.hostname} (Relay) with ${o.protocol} id ${o.queueId}${forClause};\r\n\t${rfc5322Date()}`
}

/** The `Received:` trace fields of a header block: the hops the message has made (RFC 5321 §6.3). */
export function hopCount(headerBlock: string): number {
  // Folded lines start with white space, so only a field's first line can match.
  return headerBlock.match(/^Received[ \t]*:/gim)?.length ?? 0
}

/**
 * hopCount of a header section already parsed: its fields named Received (the same count for a
 * header with no bare CR, which readMessage never leaves), without making a string of the whole header.
 */
export function hopCountOf(headers: MessageHeaders): number {
  let hops = 0
  for (const f of headers.fields) if (f.name.length === 8 && f.name.toLowerCase() === 'received') hops++
  return hops
}
