// MTA-STS (RFC 8461) for outbound delivery: the `_mta-sts.<domain>` TXT record names the current
// policy id; the policy itself is fetched from https://mta-sts.<domain>/.well-known/mta-sts.txt
// with a verified certificate. In `enforce` mode only MX hosts matching its `mx:` patterns may be
// used, each with a certificate valid for its name. Policies are cached in memory (per process)
// until their max_age; a restart fetches them again.
import https from 'node:https'
import type { Resolver } from 'node:dns/promises'
import type { Logger } from 'pino'
import { mailauthInternals } from '../mailauth.js'

const { parsePolicy, resolvePolicy, validateMx } = mailauthInternals

export interface StsPolicy {
  id: string
  mode: 'enforce' | 'testing' | 'none'
  mx: string[]
  /** Epoch ms after which the policy is no longer applied. */
  expiresAt: number
}

export interface StsOptions {
  resolver: Resolver
  /** Time limit for the HTTPS fetch (ms). */
  timeoutMs: number
  /** `host:port` to fetch every policy from instead of mta-sts.<domain>:443 (tests). */
  connectTo?: string
  /** CA certificates for the HTTPS fetch (default: the system's). */
  ca?: (string | Buffer)[]
  /** Domains remembered at most (default MAX_CACHED). */
  maxCached?: number
  /** Where a fetched policy, a failed fetch and a testing-mode finding are said (once per refresh). */
  log?: Logger
}

/** The policy to apply now, or none; `note` says why there is none or what went wrong. */
export interface StsLookup {
  policy?: StsPolicy
  note?: string
}

const MAX_POLICY_SIZE = 64 * 1024
/** The TXT record is looked up again at most this often per domain while a policy is cached. */
const RECHECK_MS = 60_000
/** After a failed fetch with no cached policy, deliver as if there were none, and retry the fetch after this. */
const FAILED_FETCH_RETRY_MS = 5 * 60_000
/**
 * Domains remembered at most (as postfix-mta-sts-resolver's cache): recipient domains are whatever
 * senders write, so without a bound a relay sending to ever new domains keeps one entry per domain.
 */
export const MAX_CACHED = 10_000

interface CacheEntry {
  /** A policy that applies until its expiry (mode 'none' is stored too: a fetched "no policy"). */
  policy?: StsPolicy
  /** When the TXT record was last checked. */
  checkedAt: number
  /** Until when a domain with no usable policy is not asked again. */
  quietUntil?: number
  note?: string
}

export class MtaSts {
  private readonly cache = new Map<string, CacheEntry>()
  private readonly inFlight = new Map<string, Promise<StsLookup>>()

  constructor(private readonly o: StsOptions) {}

  /** Domains remembered now. */
  get size(): number {
    return this.cache.size
  }

  /** The policy for a recipient domain (one lookup at a time per domain). */
  lookup(domain: string): Promise<StsLookup> {
    domain = domain.toLowerCase().replace(/\.$/, '')
    if (domain.startsWith('[')) return Promise.resolve({ note: 'address literal' })
    const now = Date.now()
    const cached = this.cache.get(domain)
    if (cached?.policy && cached.policy.expiresAt > now && now - cached.checkedAt < RECHECK_MS) return Promise.resolve({ policy: cached.policy })
    if (cached && !cached.policy && (cached.quietUntil ?? 0) > now) return Promise.resolve({ note: cached.note })
    let p = this.inFlight.get(domain)
    if (!p) {
      p = this.refresh(domain).finally(() => this.inFlight.delete(domain))
      this.inFlight.set(domain, p)
    }
    return p
  }

  private async refresh(domain: string): Promise<StsLookup> {
    const now = Date.now()
    const cached = this.cache.get(domain)
    const valid = cached?.policy && cached.policy.expiresAt > now ? cached.policy : undefined
    const keep = (note: string): StsLookup => {
      this.warn(domain, valid ? `${note}; the cached policy (${valid.mode}) applies until it expires` : `${note}; delivering as without a policy`)
      // RFC 8461 §5.1: a cached, unexpired policy goes on applying when no new one can be had.
      if (valid) {
        this.remember(domain, { policy: valid, checkedAt: now, note })
        return { policy: valid, note }
      }
      this.remember(domain, { checkedAt: now, quietUntil: now + FAILED_FETCH_RETRY_MS, note })
      return { note }
    }

    let id: string | false
    try {
      id = await resolvePolicy(domain, { resolver: (name: string, type: string) => this.o.resolver.resolve(name, type) as Promise<never> })
    } catch (err) {
      return keep(`MTA-STS TXT lookup for ${domain} failed: ${(err as { code?: string }).code ?? (err as Error).message}`)
    }
    // RFC 8461 §3.1: id = 1*32(ALPHA / DIGIT); a record with another is as none.
    if (id && !/^[A-Za-z0-9]{1,32}$/.test(id)) id = false
    if (!id) {
      if (valid) return keep(`no (valid) MTA-STS record at _mta-sts.${domain}`)
      this.remember(domain, { checkedAt: now, quietUntil: now + RECHECK_MS, note: 'no MTA-STS record' })
      return { note: 'no MTA-STS record' }
    }
    if (valid && valid.id === id) {
      this.remember(domain, { policy: valid, checkedAt: now })
      return { policy: valid }
    }

    let text: string
    try {
      text = await this.fetch(domain)
    } catch (err) {
      return keep(`MTA-STS policy fetch for ${domain} failed: ${(err as Error).message}`)
    }
    let parsed: ReturnType<typeof parsePolicy>
    try {
      parsed = parsePolicy(text)
    } catch (err) {
      return keep(`MTA-STS policy of ${domain} is invalid: ${(err as Error).message}`)
    }
    const policy: StsPolicy = {
      id,
      mode: parsed.mode,
      mx: parsed.mx ?? [],
      expiresAt: now + (parsed.maxAge ?? 0) * 1000,
    }
    this.remember(domain, { policy, checkedAt: now })
    this.o.log?.info({ domain, mode: policy.mode, mx: policy.mx, maxAge: parsed.maxAge, id }, `MTA-STS policy of ${domain}: ${policy.mode}`)
    return { policy }
  }

  /** A finding about a domain's policy, at most once a minute per domain (each refresh is). */
  warn(domain: string, message: string): void {
    const now = Date.now()
    const last = this.warned.get(domain)
    if (last !== undefined && now - last < RECHECK_MS) return
    if (this.warned.size >= (this.o.maxCached ?? MAX_CACHED)) this.warned.delete(this.warned.keys().next().value!)
    this.warned.delete(domain)
    this.warned.set(domain, now)
    this.o.log?.warn({ domain, mtaSts: true }, message)
  }

  private readonly warned = new Map<string, number>()

  /**
   * Writes a domain's entry (newest last). Beyond the bound, entries without a policy in force go
   * first (forgetting one costs a TXT lookup), down to 90% so that not every new domain pays for
   * a sweep; then, if every entry holds a policy in force, the oldest written.
   */
  private remember(domain: string, entry: CacheEntry): void {
    const max = this.o.maxCached ?? MAX_CACHED
    this.cache.delete(domain)
    this.cache.set(domain, entry)
    if (this.cache.size <= max) return
    const now = Date.now()
    for (const [k, e] of this.cache) {
      if (this.cache.size <= Math.floor(max * 0.9)) return
      if (k !== domain && !(e.policy && e.policy.mode !== 'none' && e.policy.expiresAt > now)) this.cache.delete(k)
    }
    for (const k of this.cache.keys()) {
      if (this.cache.size <= max) return
      this.cache.delete(k)
    }
  }

  /** GET https://mta-sts.<domain>/.well-known/mta-sts.txt: HTTP 200 only, no redirects, at most 64 KB, verified certificate. */
  private async fetch(domain: string): Promise<string> {
    const servername = `mta-sts.${domain}`
    let host: string
    let port = 443
    if (this.o.connectTo) {
      const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(this.o.connectTo)!
      host = m[1]!
      port = Number(m[2])
    } else {
      let addresses: string[] = []
      try {
        addresses = await this.o.resolver.resolve4(servername)
      } catch {
        addresses = await this.o.resolver.resolve6(servername).catch(() => [])
      }
      if (!addresses.length) throw new Error(`${servername} has no address`)
      host = addresses[0]!
    }
    return fetchPolicyFile({ host, port, servername, timeoutMs: this.o.timeoutMs, ca: this.o.ca })
  }
}

/**
 * GETs https://<servername>/.well-known/mta-sts.txt from host:port (the certificate must be valid
 * for servername): HTTP 200 only, at most 64 KB. Resolves with the body, rejects with the reason.
 */
export function fetchPolicyFile(o: { host: string; port: number; servername: string; timeoutMs: number; ca?: https.RequestOptions['ca'] }): Promise<string> {
  const { host, port, servername, timeoutMs } = o
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host, port, servername, path: '/.well-known/mta-sts.txt', method: 'GET', headers: { host: servername }, agent: false, rejectUnauthorized: true, ca: o.ca, timeout: timeoutMs },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume()
          reject(new Error(`HTTP ${res.statusCode} from https://${servername}/.well-known/mta-sts.txt`))
          return
        }
        // RFC 8461 §3.2: text/plain only (a server that lets users host other content at that path).
        const type = String(res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
        if (type !== 'text/plain') {
          res.resume()
          reject(new Error(`https://${servername}/.well-known/mta-sts.txt is ${type ? `served as ${type.slice(0, 60)}` : 'served without a media type'}, not text/plain`))
          return
        }
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (c: Buffer) => {
          size += c.length
          if (size > MAX_POLICY_SIZE) req.destroy(new Error(`policy larger than ${MAX_POLICY_SIZE} bytes`))
          else chunks.push(c)
        })
        res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
        res.on('error', reject)
      },
    )
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)))
    req.on('error', reject)
    req.on('close', () => clearTimeout(timer))
    req.end()
  })
}

/** Whether an MX host name matches one of the policy's `mx:` patterns (`*.` = exactly one label). */
export function mxAllowed(name: string, policy: StsPolicy): boolean {
  return validateMx(name, { mode: policy.mode, mx: policy.mx }).valid
}
