import net from 'node:net'

/** The default IPv6 grouping: a /64 is what one customer (one host, one LAN) is given. */
export const DEFAULT_IPV6_PREFIX = 64

/**
 * The key a client address counts under for per-client limits (Postfix's
 * smtpd_client_ipv6_prefix_length): an IPv6 address stands for its /`ipv6Prefix` network,
 * written canonically with the length ('2001:db8:1:2::/64'), since one client holds a whole
 * /64 and could otherwise take a fresh address for every connection; an IPv4 address is
 * itself; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is its IPv4 address. Anything that is
 * not an IP address comes back as it is.
 */
export function clientKey(ip: string, ipv6Prefix: number = DEFAULT_IPV6_PREFIX): string {
  if (!Number.isInteger(ipv6Prefix) || ipv6Prefix < 1 || ipv6Prefix > 128) throw new RangeError(`clientKey: ipv6Prefix must be an integer from 1 to 128, not ${ipv6Prefix}`)
  if (typeof ip !== 'string') return ip
  if (net.isIPv4(ip)) return ip
  const groups = parseIpv6(ip)
  if (!groups) return ip
  // ::ffff:0:0/96, the IPv4-mapped block: the client is an IPv4 one.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `${groups[6]! >> 8}.${groups[6]! & 0xff}.${groups[7]! >> 8}.${groups[7]! & 0xff}`
  }
  for (let i = 0; i < 8; i++) {
    const keep = Math.max(0, Math.min(16, ipv6Prefix - i * 16))
    groups[i] = keep === 0 ? 0 : groups[i]! & ((0xffff << (16 - keep)) & 0xffff)
  }
  return `${formatIpv6(groups)}/${ipv6Prefix}`
}

/** The eight 16-bit groups of an IPv6 address (a zone '%eth0' is dropped), or undefined. */
function parseIpv6(ip: string): number[] | undefined {
  const address = ip.replace(/%.*$/, '')
  if (!net.isIPv6(address)) return undefined
  let text = address.toLowerCase()
  // A trailing dotted quad (::ffff:192.0.2.1, 64:ff9b::192.0.2.1) is the last two groups.
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number]
    text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, tail] = text.split('::') as [string, string | undefined]
  const h = head ? head.split(':') : []
  const t = tail ? tail.split(':') : []
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t]
  if (groups.length !== 8) return undefined
  return groups.map((g) => parseInt(g, 16))
}

/** RFC 5952 text: lower case, no leading zeros, the longest run (2+) of zero groups as '::'. */
function formatIpv6(groups: number[]): string {
  let best = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (best < 0) return hex.join(':')
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`
}
