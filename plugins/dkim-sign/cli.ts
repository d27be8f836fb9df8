// dkim-sign's verbs in the relay CLI: `relay dkim keygen`. The core calls `register` for every
// bundled plugin with a cli file; the work is in keygen.ts, loaded only when used.
import type { Command } from 'commander'

/** What the core hands to a plugin's `register`. */
export interface CliEnv {
  loadConfig(file?: string): Promise<unknown>
}

export interface KeygenOptions {
  selector?: string
  type: string
  out: string
}

export function register(program: Command, _env: CliEnv): void {
  const dkim = program.command('dkim').description('DKIM keys for the dkim-sign plugin')
  dkim
    .command('keygen')
    .description('make a DKIM private key and print the DNS TXT record to publish for it')
    .argument('<domain>', 'the signing domain (d=), e.g. example.com')
    .option('--selector <selector>', "the selector (s=); default: 's' and this month, e.g. s202612")
    .option('--type <type>', 'rsa (2048 bits) or ed25519', 'rsa')
    .option('--out <dir>', 'directory for <domain>.<selector>.<type>.pem (created with mode 0700 if missing)', './dkim')
    .action(async (domain: string, opts: KeygenOptions) => (await import('./keygen.js')).keygen(domain, opts))
}
