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

// Queue control: through the running relay's admin API (<dataDir>/admin.json), else on the data directory.
const queue = program
  .command('queue')
  .description('inspect and control the mail queue (a running relay through its admin API, else the data directory)')
  .addHelpText('after', '\nExit code: 0 ok, 1 not found or failed, 2 bad config. The admin token: from the running relay\'s <dataDir>/admin.json, else RELAY_ADMIN_TOKEN.')
queue
  .command('list')
  .description('list queued messages (id, received, size, sender, Message-ID, HELD) and under each its recipients with state, attempts, next attempt, last response')
  .option(...configOption)
  .option('--state <state>', 'queued, deferred or held')
  .option('--domain <domain>', 'with a recipient at this domain')
  .option('--sender <address>', "from this sender ('<>': the null sender)")
  .option('--limit <n>', 'at most n messages, oldest first')
  .option('--json', 'print JSON: [{ id, messageId, sender, size, receivedAt, heldAt, recipients: [{ address, state, attempts, nextAttemptAt, lastResponse, category }] }]')
  .action(async (opts) => (await import('./queue.js')).queueList(opts))
queue
  .command('show')
  .description('one message: envelope, each recipient with its attempt history, the header section')
  .argument('<id>', 'queue id')
  .option(...configOption)
  .option('--json', 'print JSON')
  .action(async (id: string, opts) => (await import('./queue.js')).queueShow(id, opts))
queue
  .command('flush')
  .description('retry now: pending recipients (of messages not held) become due at once')
  .option(...configOption)
  .option('--domain <domain>', 'only recipients at this domain')
  .option('--id <id>', 'only this message')
  .option('--json', 'print JSON: { flushed }')
  .action(async (opts) => (await import('./queue.js')).queueFlush(opts))
for (const [verb, description] of [
  ['hold', 'stop delivering a message until it is released'],
  ['release', 'deliver a held message again, at once'],
  ['delete', 'remove a message without a bounce'],
  ['bounce', "give up on a message's pending recipients: a DSN goes to the sender (5.0.0 bounced by the administrator)"],
] as const) {
  queue
    .command(verb)
    .description(description)
    .argument('<id>', 'queue id')
    .option(...configOption)
    .option('--json', 'print JSON')
    .action(async (id: string, opts) => (await import('./queue.js')).queueAction(verb, id, opts))
}
queue
  .command('summary')
  .description('queue size by state and the destination domains with most pending recipients')
  .option(...configOption)
  .option('--json', 'print JSON')
  .action(async (opts) => (await import('./queue.js')).queueSummary(opts))

program
  .command('reload')
  .description('reload the running relay: config, plugins and their options, certificates, user files (as SIGHUP)')
  .option(...configOption)
  .addHelpText('after', '\nThrough the admin API when the relay has one, else SIGHUP to the pid in <dataDir>/relay.pid.\nExit code: 0 reloaded, 1 refused (the reason is printed) or no relay running, 2 bad config.')
  .action(async (opts) => (await import('./reload.js')).reload(opts))

program
  .command('stats')
  .description('reputation figures per sending and destination domain: delivered, deferred, bounced (by category), complaints, rates, warnings')
  .option(...configOption)
  .option('--period <period>', "'hour' or 'day'", 'day')
  .option('--json', 'print JSON: { period, figures: { senders, destinations, warnings, totals }, series }')
  .addHelpText('after', '\nThrough the admin API when the relay runs, else read from the queue. Exit code: 0 ok, 1 failed, 2 bad config or option.')
  .action(async (opts) => (await import('./stats.js')).stats(opts))

const suppression = program.command('suppression').description('addresses refused at RCPT (hard bounces, or added by hand)')
suppression
  .command('list')
  .description('list suppressed addresses with reason, source queue id and expiry')
  .option(...configOption)
  .option('--json', 'print JSON: [{ address, reason, source, createdAt, expiresAt }]')
  .action(async (opts) => (await import('./suppression.js')).suppressionList(opts))
suppression
  .command('add')
  .description('refuse mail to an address (550 5.1.1 at RCPT)')
  .argument('<address>', 'the address to suppress')
  .option(...configOption)
  .option('--reason <text>', 'why (shown in the RCPT reply)')
  .option('--ttl <duration>', "how long, e.g. '30d'; 0: until removed (default: delivery.suppression.ttl)")
  .action(async (address: string, opts) => (await import('./suppression.js')).suppressionAdd(address, opts))
suppression
  .command('remove')
  .description('take mail for a suppressed address again')
  .argument('<address>', 'the address to remove')
  .option(...configOption)
  .action(async (address: string, opts) => (await import('./suppression.js')).suppressionRemove(address, opts))

const tls = program.command('tls').description('TLS certificates')
tls
  .command('selfsigned')
  .description('create a self-signed certificate for development')
  .option('--name <host>', 'host name in the certificate', 'localhost')
  .option('--out <dir>', 'directory to write <name>.key and <name>.crt', './tls')
  .option('--days <n>', 'validity in days', '365')
  .action(async (opts) => (await import('./tls.js')).tlsSelfSigned(opts))

const pluginCmd = program.command('plugin').description('write your own plugins')
pluginCmd
  .command('new')
  .description('create relay-plugin-<name>/: a plugin with one hook, its test (relay-mta/testing), package.json, tsconfig, README')
  .argument('<name>', "plugin name, e.g. 'block-list' (the npm package is relay-plugin-<name>)")
  .option('--dir <dir>', 'where to create the folder', '.')
  .action(async (name: string, opts) => (await import('./plugin-new.js')).pluginNew(name, opts))

// Plugins add their own verbs (`commands` on the plugin object), bundled and third-party alike:
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
