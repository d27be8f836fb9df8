import { Resolver } from 'node:dns/promises'
import type { RelayConfig } from '../config/schema.js'

/** The one DNS resolver: config `dns.servers` (ip or ip:port), else the system's. */
export function createResolver(config: Pick<RelayConfig, 'dns'>): Resolver {
  const resolver = new Resolver({ timeout: config.dns.timeout, tries: 2 })
  if (config.dns.servers) resolver.setServers(config.dns.servers)
  return resolver
}

/** DNS errors that say the name or record does not exist (as opposed to a failure to find out). */
export function isNotFound(err: unknown): boolean {
  const code = (err as { code?: string }).code
  return code === 'ENOTFOUND' || code === 'ENODATA'
}
