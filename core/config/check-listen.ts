// Two listeners on one address cannot both bind: the second fails with EADDRINUSE at start, after
// the first is up. Checked with the paths (check-paths.ts), by `relay check-config` and before
// `relay start` binds anything. A plugin that binds its own port declares it (`ports`, docs/plugins.md):
// a clash with a listener or another plugin's is refused by check-config, start and reload, before
// any plugin is set up (core/hooks/load-plugins.ts).
import net from 'node:net'
import type { RelayConfig } from './schema.js'
import { hostPortText } from '../net/host-port.js'

export interface ListenIssue {
  path: string
  message: string
}

/**
 * The addresses a host binds, as the kernel compares them: IPv6 in canonical form, an IPv4-mapped
 * IPv6 address as its IPv4 one, `localhost` as both loopback addresses (Node looks it up, and may
 * take either), other names lowercased.
 */
function canonical(host: string): string[] {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase().replace(/\.$/, '')
  if (bare === 'localhost') return ['127.0.0.1', '::1']
  if (!net.isIPv6(bare)) return [bare]
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(bare)
  if (mapped && net.isIPv4(mapped[1]!)) return [mapped[1]!]
  try {
    return [new URL(`http://[${bare}]/`).hostname.slice(1, -1)]
  } catch {
    return [bare]
  }
}

/** The first pair of addresses of two hosts that clash, if any. */
function clashing(as: string[], bs: string[]): [string, string] | undefined {
  for (const a of as) for (const b of bs) if (clash(a, b)) return [a, b]
  return undefined
}

/** Whether two hosts on one port clash: the same address, or a wildcard that takes the other's. */
function clash(a: string, b: string): boolean {
  if (a === b) return true
  // '::' takes every address, IPv4 too (Node listens dual-stack); '0.0.0.0' every IPv4 address.
  if (a === '::' || b === '::') return true
  return (a === '0.0.0.0' && net.isIPv4(b)) || (b === '0.0.0.0' && net.isIPv4(a))
}

const WILDCARD: Record<string, string> = { '::': 'every address', '0.0.0.0': 'every IPv4 address' }

const show = hostPortText

/** An address something binds: `key` is the config key that sets it, `name` the plugin's. */
export interface BoundAddress {
  key: string
  name?: string
  host: string
  port: number
}

const label = (a: BoundAddress) => (a.name ? `${a.key} (${a.name})` : a.key)

/** Each address an earlier one already takes: `listen[1]: 127.0.0.1:2525 is already listen[0]`. */
export function addressIssues(addresses: readonly BoundAddress[]): ListenIssue[] {
  const issues: ListenIssue[] = []
  const hosts = addresses.map((l) => canonical(l.host))
  addresses.forEach((l, i) => {
    // Port 0 takes a free port each time: never a clash.
    if (l.port === 0) return
    for (let j = 0; j < i; j++) {
      const earlier = addresses[j]!
      if (earlier.port !== l.port) continue
      const pair = clashing(hosts[j]!, hosts[i]!)
      if (!pair) continue
      const [a, b] = pair
      const mine = show(l.host, l.port) + (l.name ? ` (${l.name})` : '')
      const theirs = `${label(earlier)} (${show(earlier.host, earlier.port)})`
      const wild = WILDCARD[a] ? earlier.host : WILDCARD[b] ? l.host : undefined
      const message =
        wild !== undefined ? `${mine} clashes with ${theirs}: ${wild} takes ${WILDCARD[canonical(wild)[0]!]} on port ${l.port}`
        : hosts[j]!.join() === hosts[i]!.join() ? `${mine} is already ${label(earlier)}`
        : `${mine} clashes with ${theirs}: both bind ${a} on port ${l.port}`
      issues.push({ path: l.key, message })
      return
    }
  })
  return issues
}

export const listenAddresses = (listen: RelayConfig['listen']): BoundAddress[] => listen.map((l, i) => ({ key: `listen[${i}]`, host: l.host, port: l.port }))

/** Each listener whose address an earlier one already takes. */
export const listenIssues = (listen: RelayConfig['listen']): ListenIssue[] => addressIssues(listenAddresses(listen))

/** The plugins' declared ports (`ports(options)`) that a listener or an earlier plugin already takes. */
export function pluginPortIssues(listen: RelayConfig['listen'], plugins: readonly { at: string; plugin: { name: string }; ports: readonly { host: string; port: number; key: string }[] }[]): ListenIssue[] {
  const ports = plugins.flatMap(({ at, plugin, ports }) => ports.map((p) => ({ key: `${at}.options.${p.key}`, name: plugin.name, host: p.host, port: p.port })))
  // Listener against listener: check-paths.ts says so already.
  return addressIssues([...listenAddresses(listen), ...ports]).filter((i) => !i.path.startsWith('listen['))
}
