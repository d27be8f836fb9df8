import type { SessionInfo } from '../hooks/types.js'

/** RFC 5322 date-time, e.g. `Sat, 28 Nov 2026 06:01:49 +0000`. */
export function rfc5322Date(date = new Date()): string {
  return date.toUTCString().replace(/GMT$/, '+0000')
}

/** The Received trace field this relay adds (RFC 5321 §4.4). */
export function receivedHeader(o: { session: SessionInfo; hostname: string; protocol: string; queueId: string; recipients: string[]; tls?: string }): string {
  const s = o.session
  const from = `${s.helo ?? 'unknown'} (${s.clientHostname && s.clientHostname !== `[${s.remoteAddress}]` ? `${s.clientHostname} ` : ''}[${s.remoteAddress}])`
  const tls = o.tls ? `\r\n\t(using ${o.tls})` : ''
  const forClause = o.recipients.length === 1 ? `\r\n\tfor <${o.recipients[0]}>` : ''
  return `from ${from}${tls}\r\n\tby ${o.hostname} (Relay) with ${o.protocol} id ${o.queueId}${forClause};\r\n\t${rfc5322Date()}`
}

/** The `Received:` trace fields of a header block: the hops the message has made (RFC 5321 §6.3). */
export function hopCount(headerBlock: string): number {
  // Folded lines start with white space, so only a field's first line can match.
  return headerBlock.match(/^Received[ \t]*:/gim)?.length ?? 0
}
