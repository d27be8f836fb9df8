// DNS helpers shared by the doctor's checks. Every query goes through the relay's own resolver
// (config `dns.servers`), so the doctor sees what the relay sees.
import net from 'node:net'
import type { Resolver } from 'node:dns/promises'

/** DNS errors that say the name or record does not exist (as opposed to a failure to find out). */
export function isNotFound(err: unknown): boolean {
  const code = (err as { code?: string } | undefined)?.code
  return code === 'ENOTFOUND' || code === 'ENODATA'
}

/** The TXT records at a name, each record's strings joined; [] when there are none (NXDOMAIN/NODATA). */
export async function txtRecords(resolver: Resolver, name: string): Promise<string[]> {
  try {
    return (await resolver.resolveTxt(name)).map((parts) => parts.join(''))
  } catch (err) {
    if (isNotFound(err)) return []
    throw err
  }
}

/** A and AAAA addresses of a name; [] when it has none. Throws only when neither answer could be had. */
export async function addressesOf(resolver: Resolver, name: string): Promise<string[]> {
  const [a, aaaa] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)])
  if (a.status === 'rejected' && aaaa.status === 'rejected') {
    const hard = [a, aaaa].find((r) => !isNotFound(r.reason))
    if (hard) throw hard.reason
    return []
  }
  return [...(a.status === 'fulfilled' ? a.value : []), ...(aaaa.status === 'fulfilled' ? aaaa.value : [])]
}

/** Whether two textual IP addresses are the same address (IPv6 in any notation). */
export function sameAddress(a: string, b: string): boolean {
  const family = net.isIP(a)
  if (family === 0 || family !== net.isIP(b)) return false
  const list = new net.BlockList()
  list.addAddress(a, family === 4 ? 'ipv4' : 'ipv6')
  return list.check(b, family === 4 ? 'ipv4' : 'ipv6')
}

/** Expands an IPv6 address to its 32 hex digits. */
function ipv6Nibbles(address: string): string {
  let addr = address.toLowerCase()
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(addr)
  if (v4) {
    const o = v4.slice(1).map(Number)
    addr = addr.slice(0, v4.index) + `${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`
  }
  const [head = '', tail] = addr.split('::')
  const h = head ? head.split(':') : []
  const t = tail ? tail.split(':') : []
  const groups = [...h, ...Array<string>(tail === undefined ? 0 : 8 - h.length - t.length).fill('0'), ...t]
  return groups.map((g) => g.padStart(4, '0')).join('')
}

/** The reverse-DNS name of an address: 10.2.0.192.in-addr.arpa, or the ip6.arpa nibble name. */
export function reverseName(ip: string): string {
  if (net.isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`
  return `${ipv6Nibbles(ip).split('').reverse().join('.')}.ip6.arpa`
}

/** Why a lookup failed, for a report line: `SERVFAIL`, `timed out`, ... */
export function describeDnsError(err: unknown): string {
  const code = (err as { code?: string }).code
  switch (code) {
    case 'ESERVFAIL':
      return 'the DNS server answered SERVFAIL'
    case 'ETIMEOUT':
      return 'the DNS query timed out'
    case 'ECONNREFUSED':
      return 'the DNS server refused the connection'
    case 'EREFUSED':
      return 'the DNS server refused the query'
    default:
      return (err as Error)?.message ?? String(err)
  }
}

/**
 * The relay's resolver in the function form mailauth takes (`(name, type) => records`), with the
 * shapes of `dns.promises.resolve` (TXT as arrays of strings, MX as { exchange, priority }).
 */
export function mailauthResolver(resolver: Resolver): (name: string, type: string) => Promise<any> {
  return (name, type) => resolver.resolve(name, type as 'TXT')
}

/** The fix for a failed lookup: the relay's resolvers, or the zone's name servers, are not answering. */
export function dnsFix(resolver: Resolver, name: string): string {
  return `make sure the DNS servers the relay uses (${resolver.getServers().join(', ')}) answer, and that the name servers of ${name} do`
}
