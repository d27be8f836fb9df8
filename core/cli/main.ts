import 'reflect-metadata'
import { Command, Option, type CommanderError } from 'commander'
import type { ConfigError } from '../config/load.js'
import { packageVersion } from './version.js'
import { errorText } from '../error-text.js'

// A reader that stops early (`relay queue list | head -1`) ends the command quietly, as it would end
// any Unix tool: no EPIPE stack trace. Not for `start`, whose log goes to stdout.
if (process.argv[2] !== 'start') {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err
    process.exit(0)
  })
}

// sendmail(1)'s options (-t -i -oi -f ...) are not commander's: `relay sendmail` gets its arguments as given.
if (process.argv[2] === 'sendmail') process.exit(await (await import('./sendmail.js')).sendmail(process.argv.slice(3)))

// An error's text may quote a stranger's (a remote reply, a file's line): no ESC sequence reaches the terminal.
const say = (text: string) => process.stderr.write(`relay: ${text}\n`.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?'))

const program = new Command('relay')
  .description('Relay: a plugin-driven mail transfer agent')
  .version(packageVersion(), '-V, --version', 'print the version of Relay')
  .showHelpAfterError()
  .addHelpText('after', '\nThe config: --config <file>, else $RELAY_CONFIG, else relay.config.* (or .relayrc*) in the current directory, else /etc/relay/relay.config.*.')
const configOption = ['-c, --config <file>', 'config file (default: $RELAY_CONFIG, else relay.config.* in the current directory, else in /etc/relay/)'] as const

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
  .addHelpText('after', '\nSIGHUP to the pid in <dataDir>/relay.pid; the relay answers in <dataDir>/reload-result.json.\nExit code: 0 reloaded, 1 refused (the reason is printed), no answer, no relay running or not permitted (another user\'s relay), 2 bad config or usage.')
  .action(async (opts) => (await import('./reload.js')).reload(opts))

const config = program.command('config').description('the effective config')
config
  .command('show')
  .description('print the effective config: every setting with its default filled in, secrets redacted (like postconf)')
  .option(...configOption)
  .option('-n, --changed', 'only the settings that differ from the defaults (postconf -n)')
  .addOption(new Option('-d, --defaults', 'the defaults alone, as with an empty config (postconf -d)').conflicts('changed'))
  .option('--json', 'as JSON')
  .action(async (opts) => (await import('./config-show.js')).configShow(opts))

program
  .command('sendmail')
  .description('sendmail-compatible submission for cron and scripts: [-t] [-i] [-f sender] [recipients...], the message on stdin (docs/sendmail.md)')

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
// loaded for a verb the core does not know (only the bundled plugins whose commands.json names it;
// `relay queue --help` only the one that declares queue). The top-level help lists the bundled
// plugins' verbs from those manifests and imports only the config's own plugins.
const verb = process.argv[2]
const isCoreVerb = (v: string | undefined) => v !== undefined && !v.startsWith('-') && program.commands.some((c) => c.name() === v)
const versionOnly = verb === '--version' || verb === '-V'
// `relay start --help` and `relay help start` need no plugin.
if (!versionOnly && !isCoreVerb(verb === 'help' ? process.argv[3] : verb)) {
  const { registerPluginCommands } = await import('./plugin-commands.js')
  const problems = await registerPluginCommands(program, process.argv.slice(2))
  // A verb still unknown may be one of a plugin that could not be loaded: say why, not only 'unknown command'.
  const asked = verb === 'help' ? process.argv[3] : verb
  if (asked !== undefined && !asked.startsWith('-') && !isCoreVerb(asked)) for (const p of problems) say(p)
}

// Usage errors (unknown verb or option, a missing or extra argument, a group without its verb) exit
// 2, as the config errors do: exit 1 is "not found or failed", which a script must tell from a typo.
// Set on every command, the plugins' included (a subcommand does not ask its parent).
const usageExit = (err: CommanderError) => process.exit(err.exitCode === 0 ? 0 : 2)
const everyCommand = (c: Command): Command[] => [c, ...c.commands.flatMap(everyCommand)]
for (const c of everyCommand(program)) c.exitOverride(usageExit)

// A verb still waiting when nothing is left that could end the wait (a promise that never settles,
// in a config or plugin module or a plugin's verb) would otherwise end with exit 0 and no word.
let settled = false
process.on('beforeExit', () => {
  if (settled) return
  say('the command did not finish: what it waited for can never happen (a promise that never settles, in the config file, a plugin module or a plugin\'s command)')
  process.exit(1)
})
program.parseAsync(process.argv).then(() => (settled = true), (err: unknown) => {
  settled = true
  // A config problem is the operator's to fix: the message names it; a stack trace would bury it.
  // By name, not instanceof: `relay --version` and a core verb's help then load no config code (zod
  // and the schema are a third of a verb's start-up).
  if ((err as Error)?.name === 'ConfigError' || (err as Error)?.name === 'PluginError') {
    say((err as Partial<ConfigError>).terminalText ?? (err as Error).message)
    process.exit(2)
  }
  // A failure the verb named (`kind`: no access to the data directory, ...) is said, not traced.
  // The queue database's own state (a corrupt file: an SQLITE_ code) is said too, as the queue verbs
  // do, and a failed system call (ENOENT: no such file or directory, mkdir '/proc/x') by Node's message.
  const code = (err as { code?: unknown })?.code
  const system = typeof (err as { syscall?: unknown })?.syscall === 'string' && typeof code === 'string'
  const named = typeof (err as { kind?: unknown })?.kind === 'string' || (typeof code === 'string' && code.startsWith('SQLITE_')) || system
  say(named ? errorText(err) : err instanceof Error && err.stack ? err.stack : errorText(err))
  process.exit(1)
})
