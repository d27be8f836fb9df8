// doctor: `relay doctor <domain>`, a bundled plugin that only adds a CLI verb (no hooks). It works
// whether or not it is in the config. The checks are loaded when the verb runs, so `relay --help`
// and the other verbs do not pay for them. Checks: report.ts; the verb's work: run.ts.
import { definePlugin } from '../../core/index.js'
import { options } from './options.js'
import type { DoctorOptions } from './run.js'

export default definePlugin({
  name: 'doctor',
  // Optional, per sending domain: what DNS alone cannot tell about a smarthost provider (README).
  options,
  hooks: {},
  commands(program, env) {
    program
      .command('doctor')
      .description("check a sending domain's DNS against this relay: MX, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, reverse DNS")
      .argument('<domain>', 'the domain you send mail as, e.g. example.com')
      .option('-c, --config <file>', 'config file (default: searched as relay.config.ts, .relayrc, ...)')
      .option('--json', 'print the checks as JSON: [{ name, status, message, fix }]')
      .option('--no-mta-sts-fetch', 'check the MTA-STS DNS record only, do not fetch the policy over HTTPS')
      .option('--mta-sts-connect <host:port>', 'fetch the MTA-STS policy from here instead of mta-sts.<domain>:443 (the certificate is still checked for mta-sts.<domain>)')
      .addHelpText('after', '\nExit code: 0 when no check is an error, 1 when one is, 2 for a bad domain or config.')
      .action(async (domain: string, opts: DoctorOptions) => (await import('./run.js')).doctor(domain, opts, env))
  },
})
