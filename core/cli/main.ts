import 'reflect-metadata'
import { Command } from 'commander'
import { ConfigError } from '../config/load.js'

const program = new Command('relay').description('Relay: a plugin-driven mail transfer agent').showHelpAfterError()
const configOption = ['-c, --config <file>', 'config file (default: searched as relay.config.ts, .relayrc, ...)'] as const

program
  .command('start')
  .description('start the relay')
  .option(...configOption)
  .action(async (opts) => (await import('./start.js')).start(opts))

program
  .command('check-config')
  .description('validate the config and its plugins without starting')
  .option(...configOption)
  .action(async (opts) => (await import('./check-config.js')).checkConfig(opts))

const queue = program.command('queue').description('inspect the mail queue')
queue
  .command('list')
  .description('list queued messages and the state of each recipient')
  .option(...configOption)
  .option('--json', 'print JSON')
  .action(async (opts) => (await import('./queue.js')).queueList(opts))

const tls = program.command('tls').description('TLS certificates')
tls
  .command('selfsigned')
  .description('create a self-signed certificate for development')
  .option('--name <host>', 'host name in the certificate', 'localhost')
  .option('--out <dir>', 'directory to write <name>.key and <name>.crt', './tls')
  .option('--days <n>', 'validity in days', '365')
  .action(async (opts) => (await import('./tls.js')).tlsSelfSigned(opts))

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`relay: ${err.message}\n`)
    process.exit(2)
  }
  process.stderr.write(`relay: ${(err as Error)?.stack ?? String(err)}\n`)
  process.exit(1)
})
