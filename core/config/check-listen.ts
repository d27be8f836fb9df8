// Two listeners on one address cannot both bind: the second fails with EADDRINUSE at start, after
// the first is up. Checked with the paths (check-paths.ts), by `relay check-config` and before
// `relay start` binds anything. Plugins' own listeners are not known to the core (the plugin API has
// no way to declare the ports a plugin binds), so a clash with one still shows only at start.
import net from 'node:net'
import type { RelayConfig } from './schema.js'
import { hostPortText } from '../net/host-port.js'

export interface ListenIssue {
  path: string
  message: string
}

/** The address as the kernel compares it: IPv6 in canonical form, names lowercased. */
function canonical(host: string): string {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase()
  if (!net.isIPv6(bare)) return bare
  try {
    return new URL(`http://[${bare}]/`).hostname.slice(1, -1)
  } catch {
    return bare
  }
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

/** Each listener whose address an earlier one already takes: `listen[1]: 127.0.0.1:2525 is already listen[0]`. */
export function listenIssues(listen: RelayConfig['listen']): ListenIssue[] {
  const issues: ListenIssue[] = []
  const hosts = listen.map((l) => canonical(l.host))
  listen.forEach((l, i) => {
    // Port 0 takes a free port each time: never a clash.
    if (l.port === 0) return
    for (let j = 0; j < i; j++) {
      const earlier = listen[j]!
      if (earlier.port !== l.port) continue
      const [a, b] = [hosts[j]!, hosts[i]!]
      if (!clash(a, b)) continue
      const mine = show(l.host, l.port)
      const wild = WILDCARD[a] ? earlier.host : l.host
      issues.push({
        path: `listen[${i}]`,
        message: a === b ? `${mine} is already listen[${j}]` : `${mine} clashes with listen[${j}] (${show(earlier.host, earlier.port)}): ${wild} takes ${WILDCARD[canonical(wild)]} on port ${l.port}`,
      })
      return
    }
  })
  return issues
}
