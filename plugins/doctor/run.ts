// `relay doctor <domain>`, the verb's work (loaded only when the verb runs): checks the DNS of a
// sending domain against this relay (MX, SPF, DKIM through plugins, DMARC, MTA-STS, TLS-RPT,
// reverse DNS of the outbound addresses), with the relay's own DNS servers. Exit code 0 when
// nothing is an error, 1 otherwise, 2 for bad input (a bad config throws a ConfigError: the CLI
// exits 2 for it).
import { Resolver } from 'node:dns/promises'
import type { CommandEnv, RelayConfig } from '../../core/index.js'
import { formatReport, runDoctor } from './report.js'
import { sendPlan } from './send-plan.js'
import type { DoctorCheck } from './types.js'

export interface DoctorOptions {
  config?: string
  json?: boolean
  /** commander's --no-mta-sts-fetch */
  mtaStsFetch?: boolean
  mtaStsConnect?: string
}

const DOMAIN = /^([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/

/** A resolver asking what the relay asks: config `dns.servers` (else the system's), its timeout. */
function relayResolver(config: RelayConfig): Resolver {
  const resolver = new Resolver({ timeout: config.dns.timeout, tries: 2 })
  if (config.dns.servers) resolver.setServers(config.dns.servers)
  return resolver
}

export async function doctor(domainArg: string, opts: DoctorOptions, env: CommandEnv): Promise<void> {
  const domain = domainArg.trim().toLowerCase().replace(/\.$/, '')
  if (!DOMAIN.test(domain)) {
    process.stderr.write(`relay doctor: '${domainArg}' is not a domain name (expected something like example.com)\n`)
    process.exit(2)
  }
  const config = (await env.loadConfig(opts.config)) as RelayConfig
  const resolver = relayResolver(config)
  // The config's plugins, set up in 'check' mode: those with a doctor() add their checks (DKIM).
  const { plugins, close } = await env.loadPlugins(opts.config)
  let checks: DoctorCheck[]
  try {
    checks = await runDoctor(
      {
        domain,
        resolver,
        hostname: config.hostname,
        outboundAddresses: config.delivery.outboundAddresses,
        mtaSts: { fetch: opts.mtaStsFetch !== false, connect: opts.mtaStsConnect, timeoutMs: Math.max(config.dns.timeout, 10_000) },
        // Smarthost routes for the domain, from the routing plugin's options (and the doctor's own).
        send: sendPlan(domain, plugins),
      },
      plugins,
      config.hookTimeout,
    )
  } finally {
    await close().catch(() => undefined)
  }
  // DNS answers (and MTA-STS policies) are anyone's to write: their control characters never reach
  // the terminal (ESC sequences could clear or rewrite it); `?` in the report, escaped in JSON.
  const out = opts.json
    ? JSON.stringify(checks.map(({ name, status, message, fix }) => ({ name, status, message, fix: fix ?? null })), null, 2).replace(/[\x7f-\x9f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) + '\n'
    : formatReport(checks).replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?')
  const code = checks.some((c) => c.status === 'error') ? 1 : 0
  // Exit explicitly (a plugin may leave a handle open), once the report is written.
  await new Promise<void>((resolve) => process.stdout.write(out, () => resolve()))
  process.exit(code)
}
