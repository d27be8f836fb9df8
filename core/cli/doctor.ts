import pino from 'pino'
import { loadConfig } from '../config/load.js'

export interface DoctorOptions {
  config?: string
  json?: boolean
  /** commander's --no-mta-sts-fetch */
  mtaStsFetch?: boolean
  mtaStsConnect?: string
}

/**
 * `relay doctor <domain>`: checks the DNS of a sending domain against this relay (MX, SPF, DKIM
 * through plugins, DMARC, MTA-STS, TLS-RPT, reverse DNS of the outbound addresses), with the
 * relay's own resolver. Exit code 0 when nothing is an error, 1 otherwise, 2 for bad input.
 */
export async function doctor(domainArg: string, opts: DoctorOptions): Promise<void> {
  const domain = domainArg.trim().toLowerCase().replace(/\.$/, '')
  if (!/^([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(domain)) {
    process.stderr.write(`relay doctor: '${domainArg}' is not a domain name (expected something like example.com)\n`)
    process.exit(2)
  }
  const config = await loadConfig(opts.config)
  const { loadPlugins } = await import('../hooks/load-plugins.js')
  const { createResolver } = await import('../dns/resolver.js')
  const { runDoctor, formatReport } = await import('../doctor/index.js')
  const resolver = createResolver(config)
  // Plugins' own warnings go to stderr, so stdout stays the report (or clean JSON).
  const plugins = await loadPlugins({ config, logger: pino({ level: 'warn' }, pino.destination(2)), resolver })
  let checks
  try {
    checks = await runDoctor(
      {
        domain,
        resolver,
        hostname: config.hostname,
        outboundAddresses: config.delivery.outboundAddresses,
        mtaSts: { fetch: opts.mtaStsFetch !== false, connect: opts.mtaStsConnect, timeoutMs: Math.max(config.dns.timeout, 10_000) },
      },
      plugins,
      config.hookTimeout,
    )
  } finally {
    for (const p of plugins) await Promise.resolve(p.teardown?.()).catch(() => undefined)
  }
  const out = opts.json ? JSON.stringify(checks.map(({ name, status, message, fix }) => ({ name, status, message, fix: fix ?? null })), null, 2) + '\n' : formatReport(checks)
  const code = checks.some((c) => c.status === 'error') ? 1 : 0
  // Exit explicitly (a plugin may leave a handle open), once the report is written.
  await new Promise<void>((resolve) => process.stdout.write(out, () => resolve()))
  process.exit(code)
}
