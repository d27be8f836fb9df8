// Settings that are valid but that an operator almost certainly did not mean: said at `relay start`
// (a warn log line naming the key) and by `relay check-config` (on stderr), never a refusal.
import path from 'node:path'
import type { RelayConfig } from './schema.js'
import { certificateWarnings, type PathIssue } from './check-paths.js'
import { otherConfigFiles } from './find.js'

const ms = (n: number) => (n % 86_400_000 === 0 ? `${n / 86_400_000}d` : n % 3_600_000 === 0 ? `${n / 3_600_000}h` : n % 60_000 === 0 ? `${n / 60_000}m` : n % 1000 === 0 ? `${n / 1000}s` : `${n}ms`)

export function configWarnings(config: RelayConfig, now = Date.now()): PathIssue[] {
  const out = certificateWarnings(config, now)
  const { hostname, delivery } = config
  // Postfix refuses to start on such a name; next hops may refuse the EHLO.
  if (!hostname.includes('.') && hostname !== 'localhost') {
    out.push({ path: 'hostname', message: `'${hostname}' is not a fully qualified name (the default is the machine's name): mail servers may refuse EHLO ${hostname}; set hostname to this relay's public name, e.g. mail.example.com` })
  }
  if (delivery.delayWarning > 0 && delivery.delayWarning >= delivery.maxQueueLifetime) {
    out.push({ path: 'delivery.delayWarning', message: `${ms(delivery.delayWarning)} is not shorter than delivery.maxQueueLifetime (${ms(delivery.maxQueueLifetime)}): no delay warning is ever sent` })
  }
  if (delivery.attemptTimeout < delivery.connectTimeout) {
    out.push({ path: 'delivery.attemptTimeout', message: `${ms(delivery.attemptTimeout)} is shorter than delivery.connectTimeout (${ms(delivery.connectTimeout)}): an attempt ends before a slow host has connected` })
  }
  // relay-acl lets authenticated users relay; without it (or a plugin of the user's that accepts
  // recipients at rcpt) a submission listener takes mail for localDomains only.
  const submission = config.listen.findIndex((l) => l.role === 'submission')
  const named = config.plugins.map((e) => (Array.isArray(e) ? e[0] : e)).filter((r): r is string => typeof r === 'string')
  const onlyBundled = named.length === config.plugins.length && named.every((n) => !n.includes('/') && !n.includes('\\') && !n.startsWith('.'))
  if (submission >= 0 && onlyBundled && !named.includes('relay-acl')) {
    out.push({ path: `listen[${submission}]`, message: "a submission listener, and no relay-acl in plugins: authenticated users may send only to localDomains (Relaying denied for the rest): add 'relay-acl'" })
  }
  // AUTH in clear text: meant for a development box; a listener others can reach sends passwords over their network.
  config.listen.forEach((l, i) => {
    if (!l.allowPlaintextAuth) return
    if (l.role === 'mx' && !l.auth) out.push({ path: `listen[${i}].allowPlaintextAuth`, message: 'has no effect: auth is false on this listener (no AUTH is offered)' })
    else if (!isLoopback(l.host)) out.push({ path: `listen[${i}].allowPlaintextAuth`, message: `AUTH without TLS on ${l.host}:${l.port}, which other hosts can reach: passwords cross the network in clear text; set tls, or listen on 127.0.0.1` })
  })
  // A domain's jobs never exceed delivery.concurrency.perDomain: a throttle allowing more is cut to it.
  const { perDomain } = delivery.concurrency
  const throttles: [string, { concurrency?: number }][] = [['default', delivery.throttle.default], ...Object.entries(delivery.throttle.domains).map(([d, t]): [string, { concurrency?: number }] => [`domains['${d}']`, t])]
  for (const [where, t] of throttles) {
    if (t.concurrency !== undefined && t.concurrency > perDomain) {
      out.push({ path: `delivery.throttle.${where}.concurrency`, message: `${t.concurrency} is more than delivery.concurrency.perDomain (${perDomain}), which caps every domain: at most ${perDomain} at once; raise perDomain to allow more` })
    }
  }
  // Two config files in one directory: a search reads the first only, and an edit of the other does nothing.
  if (config.configFile) {
    for (const other of otherConfigFiles(config.configFile)) {
      out.push({ path: other, message: `is also in ${path.dirname(config.configFile)} and is not read: ${path.basename(config.configFile)} is the config (remove one)` })
    }
  }
  return out
}

/** A listen host only this machine reaches: 127.0.0.0/8, ::1, localhost. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host) || /^::ffff:127\./i.test(host)
}
