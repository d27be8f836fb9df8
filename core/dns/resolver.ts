import { Resolver } from 'node:dns/promises'
import type { RelayConfig } from '../config/schema.js'

/**
 * Called with the query type and error code of each lookup that failed to get an answer (metrics):
 * SERVFAIL, a timeout, REFUSED, a connection error. An answer that the name or record does not
 * exist (NXDOMAIN, NODATA) is an answer, not a failure: a relay sees many, and alerts on them would
 * be noise.
 */
export type DnsFailureListener = (type: string, code: string) => void

/**
 * The one DNS resolver: config `dns.servers` (ip or ip:port), else the system's. With `onFailure`,
 * every failed lookup (see DnsFailureListener) is reported, whoever makes it (core, plugins,
 * mailauth share this object).
 */
export function createResolver(config: Pick<RelayConfig, 'dns'>, onFailure?: DnsFailureListener): Resolver {
  const resolver = new Resolver({ timeout: config.dns.timeout, tries: 2 })
  if (config.dns.servers) resolver.setServers(config.dns.servers)
  waitFullTimeout(resolver, config.dns.timeout)
  if (onFailure) reportFailures(resolver, onFailure)
  return resolver
}

/** The query methods of a Resolver and the record type each asks for. */
const QUERY_TYPES: Record<string, string> = {
  resolve4: 'A', resolve6: 'AAAA', resolveAny: 'ANY', resolveCaa: 'CAA', resolveCname: 'CNAME',
  resolveMx: 'MX', resolveNaptr: 'NAPTR', resolveNs: 'NS', resolvePtr: 'PTR', resolveSoa: 'SOA',
  resolveSrv: 'SRV', resolveTxt: 'TXT', reverse: 'PTR',
}
const KNOWN_TYPES = new Set(Object.values(QUERY_TYPES))

/**
 * c-ares (1.32 on: Node 20.17+, 22, 24) adapts each server's timeout to the answer times it has
 * seen: after many fast answers (names in the server's cache, the common case for a relay) a query
 * whose answer takes a second or more failed with ETIMEOUT in about 2 s, whatever `dns.timeout`
 * says, and the mail was deferred. A query that timed out before `timeoutMs` is asked again on a
 * resolver of its own with no such history, which waits `timeoutMs` for it.
 */
function waitFullTimeout(resolver: Resolver, timeoutMs: number): void {
  const methods = resolver as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>
  for (const method of [...Object.keys(QUERY_TYPES), 'resolve']) {
    const original = methods[method]!.bind(resolver)
    methods[method] = (...args: unknown[]) => {
      const started = Date.now()
      return original(...args).catch((err: unknown) => {
        if ((err as { code?: unknown }).code !== 'ETIMEOUT' || Date.now() - started >= timeoutMs) throw err
        const patient = new Resolver({ timeout: timeoutMs, tries: 1 })
        patient.setServers(resolver.getServers())
        return (patient as unknown as typeof methods)[method]!(...args)
      })
    }
  }
}

/**
 * Wraps the instance's query methods. Node's `resolve(name, type)` dispatches to internal
 * functions, not to these instance methods, so a lookup is never counted twice.
 */
function reportFailures(resolver: Resolver, onFailure: DnsFailureListener): void {
  const methods = resolver as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>
  const wrap = (method: string, typeOf: (args: unknown[]) => string) => {
    const original = methods[method]!.bind(resolver)
    methods[method] = (...args: unknown[]) =>
      original(...args).catch((err: unknown) => {
        const code = (err as { code?: unknown }).code
        // An answer that there is no such name or record, or a query the relay cancelled itself: no failure.
        if (!isNotFound(err) && code !== 'ECANCELLED') onFailure(typeOf(args), typeof code === 'string' ? code : 'unknown')
        throw err
      })
  }
  for (const [method, type] of Object.entries(QUERY_TYPES)) wrap(method, () => type)
  wrap('resolve', (args) => {
    const type = typeof args[1] === 'string' ? args[1].toUpperCase() : 'A'
    return KNOWN_TYPES.has(type) ? type : 'other'
  })
}

/**
 * DNS errors that say the name or record does not exist (as opposed to a failure to find
 * out): NXDOMAIN (ENOTFOUND) and a name without a record of the type asked for (ENODATA).
 */
export function isNotFound(err: unknown): boolean {
  const code = (err as { code?: string }).code
  return code === 'ENOTFOUND' || code === 'ENODATA'
}

/** What changes the resolver for everyone who shares it: a plugin's `ctx.resolver` refuses these. */
const SHARED_STATE = new Set(['setServers', 'setLocalAddress', 'cancel'])
const views = new WeakMap<Resolver, Resolver>()

/**
 * The relay's resolver as plugins get it (`ctx.resolver`): every query, but not `setServers`,
 * `setLocalAddress` or `cancel`, which would reroute or cancel the lookups of the core (MX, SPF)
 * and of every other plugin. A plugin that wants other servers makes a Resolver of its own.
 */
function refuseWrite(prop: string | symbol): never {
  throw new TypeError(`ctx.resolver.${String(prop)} cannot be changed: the relay's resolver is shared by the core and every plugin; make a Resolver of your own (node:dns/promises)`)
}

export function pluginResolver(resolver: Resolver): Resolver {
  let view = views.get(resolver)
  if (!view) {
    view = new Proxy(resolver, {
      get(target, prop) {
        if (typeof prop === 'string' && SHARED_STATE.has(prop)) {
          return () => {
            throw new Error(`ctx.resolver.${prop}: the relay's resolver is shared (config dns.servers); make a Resolver of your own (node:dns/promises) for other servers`)
          }
        }
        const value: unknown = Reflect.get(target, prop, target)
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      },
      // Nothing of it can be replaced or added to: a plugin's resolveMx would be the core's too.
      set: (_, prop) => refuseWrite(prop),
      defineProperty: (_, prop) => refuseWrite(prop),
      deleteProperty: (_, prop) => refuseWrite(prop),
      setPrototypeOf: () => refuseWrite('prototype'),
    })
    views.set(resolver, view)
  }
  return view
}
