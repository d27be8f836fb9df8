import net from 'node:net'
import type { Resolver } from 'node:dns/promises'

export interface Destination {
  /** MX (or A/AAAA fallback) host name, for logs and TLS SNI. */
  name: string
  address: string
  /** MX preference, when the host came from an MX record. */
  preference?: number
}

export type Resolution =
  | { ok: true; hosts: Destination[] }
  /** permanent: the domain cannot receive mail (bounce); otherwise try again later. */
  | { ok: false; permanent: boolean; status: string; message: string }

const notFound = (err: unknown) => ['ENOTFOUND', 'ENODATA'].includes((err as { code?: string }).code ?? '')
const nxdomain = (err: unknown) => (err as { code?: string }).code === 'ENOTFOUND'

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j]!, items[i]!]
  }
  return items
}

/**
 * A and AAAA of a name (IPv4 first). What one family found is used when the other's lookup failed
 * (servers that mishandle AAAA queries, RFC 4074); NODATA on both is an empty list; a failure
 * throws only when nothing was found.
 */
async function addresses(resolver: Resolver, name: string): Promise<string[]> {
  const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)])
  const out: string[] = []
  let failure: unknown
  for (const r of [v4, v6]) {
    if (r.status === 'fulfilled') out.push(...r.value)
    else if (!notFound(r.reason)) failure ??= r.reason
  }
  if (!out.length && failure !== undefined) throw failure
  return out
}

/**
 * MX host names with addresses kept per destination, best first (delivery.maxHostsPerAttempt then
 * picks addresses). A name without addresses (NXDOMAIN, no A/AAAA, an IP address) takes no place:
 * dead names at a better preference must not crowd out a working backup.
 */
export const MAX_MX_NAMES = 10
/** MX host names looked up at most per destination, whatever they answer: DNS work stays bounded. */
export const MAX_MX_LOOKUPS = 25

/**
 * Where mail for `domain` goes (RFC 5321 §5): MX hosts by preference, random among equals, each
 * with its addresses; no MX → the domain's own A/AAAA; null MX (RFC 7505) or NXDOMAIN → permanent;
 * a DNS timeout or SERVFAIL → temporary.
 */
export async function resolveDestination(resolver: Resolver, domain: string): Promise<Resolution> {
  // Node's resolver keeps no cache: without one every delivery job would ask DNS again. Answers
  // that found hosts are kept briefly; failures are always asked again.
  let state = destinationCache.get(resolver)
  if (!state) destinationCache.set(resolver, (state = { answers: new Map(), asking: new Map() }))
  const { answers, asking } = state
  const hit = answers.get(domain)
  if (hit && hit.until > Date.now()) return reshuffled(hit.resolution)
  // Jobs for one destination that start together (a burst of mail to one domain) share one lookup.
  const pending = asking.get(domain)
  if (pending) return pending.then(reshuffled)
  const lookup = lookupDestination(resolver, domain).then((resolution) => {
    answers.delete(domain)
    if (resolution.ok) {
      // The answer asked for longest ago goes first (a Map keeps insertion order): expired ones
      // (each kept as long, so the oldest expire first) and, at the cap, the oldest.
      dropExpired(answers, Date.now())
      if (answers.size >= MAX_CACHED_DESTINATIONS) answers.delete(answers.keys().next().value!)
      answers.set(domain, { until: Date.now() + DESTINATION_TTL_MS, resolution })
    }
    return resolution
  })
  asking.set(domain, lookup)
  return lookup.finally(() => asking.delete(domain))
}

/** Drops the entries past their time from the front of `cache` (entries in the order they expire). */
export function dropExpired(cache: Map<string, { until: number }>, now: number): void {
  for (const [key, entry] of cache) {
    if (entry.until > now) return
    cache.delete(key)
  }
}

const DESTINATION_TTL_MS = 30_000
const MAX_CACHED_DESTINATIONS = 10_000

/** A shared answer still spreads load: MX hosts of equal preference come in a new random order. */
const reshuffled = (r: Resolution): Resolution => (r.ok ? { ok: true, hosts: reshuffle(r.hosts) } : r)

function reshuffle(hosts: Destination[]): Destination[] {
  const groups = new Map<number | undefined, Map<string, Destination[]>>()
  for (const h of hosts) {
    const byName = groups.get(h.preference) ?? new Map<string, Destination[]>()
    byName.set(h.name, [...(byName.get(h.name) ?? []), h])
    groups.set(h.preference, byName)
  }
  return [...groups.values()].flatMap((byName) => shuffle([...byName.values()]).flat())
}
const destinationCache = new WeakMap<Resolver, { answers: Map<string, { until: number; resolution: Resolution }>; asking: Map<string, Promise<Resolution>> }>()

async function lookupDestination(resolver: Resolver, domain: string): Promise<Resolution> {
  const literal = /^\[(?:ipv6:)?([^\]]+)\]$/i.exec(domain)
  if (literal && net.isIP(literal[1]!)) return { ok: true, hosts: [{ name: literal[1]!, address: literal[1]! }] }

  let mx: { exchange: string; priority: number }[]
  try {
    mx = await resolver.resolveMx(domain)
  } catch (err) {
    if (nxdomain(err)) return { ok: false, permanent: true, status: '5.1.2', message: `Domain ${domain} does not exist (NXDOMAIN)` }
    if (!notFound(err)) return dnsFailure(domain, 'MX', err)
    mx = []
  }

  if (mx.some((r) => r.exchange === '' || r.exchange === '.')) {
    return { ok: false, permanent: true, status: '5.1.10', message: `Domain ${domain} does not accept mail (null MX)` }
  }

  if (mx.length === 0) {
    try {
      const ips = await addresses(resolver, domain)
      if (ips.length) return { ok: true, hosts: ips.map((address) => ({ name: domain, address })) }
      return { ok: false, permanent: true, status: '5.1.2', message: `Domain ${domain} has no MX, A or AAAA record` }
    } catch (err) {
      if (nxdomain(err)) return { ok: false, permanent: true, status: '5.1.2', message: `Domain ${domain} does not exist (NXDOMAIN)` }
      return dnsFailure(domain, 'A/AAAA', err)
    }
  }

  const byPreference = new Map<number, string[]>()
  for (const r of mx) byPreference.set(r.priority, [...(byPreference.get(r.priority) ?? []), r.exchange.replace(/\.$/, '')])
  // Best first, random among equals; mxHosts bounds the lookups: a domain publishing hundreds of MX
  // records (or names that time out) cannot make one attempt ask DNS hundreds of times.
  const names = [...byPreference.keys()].sort((a, b) => a - b).flatMap((p) => shuffle(byPreference.get(p)!))

  // An MX record names a host, never an address (RFC 1035 §3.3.9, RFC 5321 §5.1): such targets are skipped.
  const { hosts, lastError, asked } = await mxHosts(resolver, names)
  const preferenceOf = new Map(mx.map((r) => [r.exchange.replace(/\.$/, ''), r.priority]))
  for (const h of hosts) h.preference = preferenceOf.get(h.name)
  if (hosts.length) return { ok: true, hosts }
  if (lastError && !notFound(lastError)) return dnsFailure(domain, 'MX host address', lastError)
  // RFC 5321 §5.1: MX records none of which is usable "MUST be reported as an error" (Postfix: 5.4.4).
  const why = asked.every((n) => net.isIP(n)) ? 'they are IP addresses, not host names' : 'no such hosts'
  const shown = asked.slice(0, MAX_MX_NAMES)
  const more = names.length > shown.length ? `, ... ${names.length} in all, ${asked.length} looked up` : ''
  return { ok: false, permanent: true, status: '5.4.4', message: `No address found for the MX hosts of ${domain} (${shown.join(', ')}${more}): ${why}` }
}

/**
 * The addresses of MX host names in order until MAX_MX_NAMES of them answered with some (a name
 * that times out or fails counts too: it cost a lookup and may work next time), or MAX_MX_LOOKUPS
 * were asked. Names that do not exist or have no address take no place (Postfix's
 * smtp_mx_address_limit counts addresses found, not names).
 */
async function mxHosts(resolver: Resolver, names: string[]): Promise<{ hosts: Destination[]; lastError?: unknown; asked: string[] }> {
  const hosts: Destination[] = []
  const asked: string[] = []
  let lastError: unknown
  let counted = 0
  for (const name of names) {
    if (counted >= MAX_MX_NAMES || asked.length >= MAX_MX_LOOKUPS) break
    asked.push(name)
    if (net.isIP(name)) continue
    try {
      const found = await addresses(resolver, name)
      for (const address of found) hosts.push({ name, address })
      if (found.length) counted++
    } catch (err) {
      // addresses() throws only a failure (NXDOMAIN, NODATA: an empty list), and such a name may answer next time.
      counted++
      lastError ??= err
    }
  }
  return { hosts, lastError, asked }
}

/** Each name's addresses in order (IP addresses stand for themselves); failures are skipped. */
async function hostsFor(resolver: Resolver, names: string[]): Promise<{ hosts: Destination[]; lastError?: unknown }> {
  const hosts: Destination[] = []
  let lastError: unknown
  for (const name of names) {
    if (net.isIP(name)) {
      hosts.push({ name, address: name })
      continue
    }
    // RFC 6761 §6.3: localhost names are the loopback, without DNS (the relay's resolver asks DNS
    // servers, not /etc/hosts): a smarthost at localhost:2525 (stunnel, a local filter) just works.
    if (/^(?:[^.]+\.)*localhost\.?$/i.test(name)) {
      hosts.push({ name, address: '127.0.0.1' }, { name, address: '::1' })
      continue
    }
    try {
      for (const address of await addresses(resolver, name)) hosts.push({ name, address })
    } catch (err) {
      lastError = err
    }
  }
  return { hosts, lastError }
}

function dnsFailure(domain: string, what: string, err: unknown): Resolution {
  const code = (err as { code?: string }).code ?? 'error'
  return { ok: false, permanent: false, status: '4.4.3', message: `DNS ${what} lookup for ${domain} failed: ${code}` }
}

/** Addresses of route hosts (names or IPs) given by a deliver hook. */
export async function resolveHosts(resolver: Resolver, names: string[]): Promise<Resolution> {
  const { hosts, lastError } = await hostsFor(resolver, names)
  if (hosts.length) return { ok: true, hosts }
  return dnsFailure(names.join(','), 'route host', lastError ?? Object.assign(new Error('no address'), { code: 'ENODATA' }))
}
