import 'reflect-metadata'
import { Command } from 'commander'
import { ConfigError, loadConfig } from '../config/load.js'

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

program
  .command('reload')
  .description('reload the running relay: config, plugins and their options, certificates, user files (as SIGHUP)')
  .option(...configOption)
  .addHelpText('after', '\nSIGHUP to the pid in <dataDir>/relay.pid; the relay answers in <dataDir>/reload-result.json.\nExit code: 0 reloaded, 1 refused (the reason is printed), no answer or no relay running, 2 bad config.')
  .action(async (opts) => (await import('./reload.js')).reload(opts))

const tls = program.command('tls').description('TLS certificates')
tls
  .command('selfsigned')
  .description('create a self-signed certificate for development')
  .option('--name <host>', 'host name in the certificate', 'localhost')
  .option('--out <dir>', 'directory to write <name>.key and <name>.crt', './tls')
  .option('--days <n>', 'validity in days', '365')
  .action(async (opts) => (await import('./tls.js')).tlsSelfSigned(opts))

// Plugins add their own verbs (`commands` on the plugin object), bundled and third-party alike
// (`relay queue`, `stats`, `suppression`: plugins/admin; `relay plugin new`: plugins/plugin-kit):
// loaded for a verb the core does not know, and for help.
const verb = process.argv[2]
const coreVerb = verb !== undefined && !verb.startsWith('-') && program.commands.some((c) => c.name() === verb)
if (!coreVerb || process.argv.includes('--help') || process.argv.includes('-h')) {
  const { registerPluginCommands } = await import('./plugin-commands.js')
  await registerPluginCommands(program, process.argv.slice(2))
}

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`relay: ${err.message}\n`)
    process.exit(2)
  }
  process.stderr.write(`relay: ${(err as Error)?.stack ?? String(err)}\n`)
  process.exit(1)
})
