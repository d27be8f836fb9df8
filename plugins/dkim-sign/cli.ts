// dkim-sign's verbs in the relay CLI: `relay dkim keygen`, declared by the plugin object's `commands`
// (index.ts); the work is in keygen.ts, loaded only when the verb runs.
import type { Command } from 'commander'
import type { CliEnv, KeygenOptions } from './cli-types.js'

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
