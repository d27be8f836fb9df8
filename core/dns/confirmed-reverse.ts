// The client's name from reverse DNS, forward-confirmed (FCrDNS): a PTR record is written by whoever
// holds the address and may name any host (`mail.google.com`); a name counts only when its own A or
// AAAA records lead back to the client, as Postfix does (otherwise `unknown[ip]`).
import net from 'node:net'
import type { Resolver } from 'node:dns/promises'

/** PTR names looked up forward, at most (Postfix checks a few too). */
const MAX_NAMES = 5

/** An IP address in one spelling: IPv6 canonical, an IPv4-mapped one as its IPv4 address. */
function canonicalIp(ip: string): string {
  if (!net.isIPv6(ip)) return ip
  const v6 = new net.SocketAddress({ address: ip, family: 'ipv6' }).address
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(v6)?.[1] ?? v6
}

/** The PTR names of `ip` whose addresses include `ip`, in PTR order (none: an empty list). */
export async function confirmedReverse(resolver: Pick<Resolver, 'reverse' | 'resolve4' | 'resolve6'>, ip: string): Promise<string[]> {
  const address = canonicalIp(ip)
  const family = net.isIP(address)
  if (family === 0) return []
  const names = (await resolver.reverse(address)).slice(0, MAX_NAMES)
  const confirmed = await Promise.all(
    names.map(async (name) => {
      const found = await (family === 4 ? resolver.resolve4(name) : resolver.resolve6(name)).catch(() => [] as string[])
      return found.some((a) => canonicalIp(a) === address) ? name : undefined
    }),
  )
  return confirmed.filter((n): n is string => n !== undefined)
}
