// mailauth takes DNS as a function `(name, type) => Promise<records>` with the shapes of
// `dns.promises.resolve` (TXT: string[][], MX: { exchange, priority }[], A/AAAA/PTR/CNAME:
// string[]). It treats errors with code ENOTFOUND/ENODATA as "no such record" and anything else
// (ESERVFAIL, ETIMEOUT, ECONNREFUSED, ...) as a temporary error. The relay's Resolver (config
// `dns.servers`) gives exactly those shapes and codes, so the adapter only makes sure every
// failure is an Error with a code.
import type { Resolver } from 'node:dns/promises'

export type MailauthResolver = (name: string, type: string) => Promise<any>

const TYPES = new Set(['A', 'AAAA', 'TXT', 'MX', 'PTR', 'CNAME', 'NS'])

export function mailauthResolver(resolver: Resolver): MailauthResolver {
  return async (name: string, type: string) => {
    const rrtype = type.toUpperCase()
    if (!TYPES.has(rrtype)) {
      const err = new Error(`unsupported DNS record type ${type}`) as Error & { code: string }
      err.code = 'ENOTIMP'
      throw err
    }
    try {
      return await resolver.resolve(name.replace(/\.$/, ''), rrtype)
    } catch (err) {
      if (err instanceof Error && typeof (err as { code?: unknown }).code === 'string') throw err
      const wrapped = new Error(`DNS ${rrtype} ${name} failed: ${String((err as Error)?.message ?? err)}`) as Error & { code: string }
      wrapped.code = 'ESERVFAIL'
      throw wrapped
    }
  }
}
