// The admin plugin's CLI verbs: `relay queue ...`, `relay stats`, `relay suppression ...`. Through
// the running relay's admin API (<dataDir>/admin.json) when it has one, else on the queue itself
// (env.openQueue). Each verb's code is imported when it runs, so `relay --help` does not load it.
import type { BulkAction, CommandEnv, Plugin } from '../../core/index.js'

type Program = Parameters<NonNullable<Plugin['commands']>>[0]

const configOption = ['-c, --config <file>', 'config file (default: searched as relay.config.ts, .relayrc, ...)'] as const

export function adminCommands(program: Program, env: CommandEnv): void {
  queueCommands(program, env)

  program
    .command('stats')
    .description('reputation figures per sending and destination domain: delivered, deferred, bounced (by category), complaints, rates, warnings')
    .option(...configOption)
    .option('--period <period>', "'hour' or 'day'", 'day')
    .option('--json', 'print JSON: { period, figures: { senders, destinations, warnings, totals }, series }')
    .addHelpText('after', '\nThrough the admin API when the relay runs, else read from the queue. Exit code: 0 ok, 1 failed, 2 bad config or option.')
    .action(async (opts) => (await import('./cli/stats.js')).stats(env, opts))

  const suppression = program.command('suppression').description('addresses refused at RCPT (hard bounces, or added by hand)')
  suppression
    .command('list')
    .description('list suppressed addresses with reason, source queue id and expiry')
    .option(...configOption)
    .option('--json', 'print JSON: [{ address, reason, source, createdAt, expiresAt }]')
    .action(async (opts) => (await import('./cli/suppression.js')).suppressionList(env, opts))
  suppression
    .command('add')
    .description('refuse mail to an address (550 5.1.1 at RCPT)')
    .argument('<address>', 'the address to suppress')
    .option(...configOption)
    .option('--reason <text>', 'why (shown in the RCPT reply)')
    .option('--ttl <duration>', "how long, e.g. '30d'; 0: until removed (default: delivery.suppression.ttl)")
    .action(async (address: string, opts) => (await import('./cli/suppression.js')).suppressionAdd(env, address, opts))
  suppression
    .command('remove')
    .description('take mail for a suppressed address again')
    .argument('<address>', 'the address to remove')
    .option(...configOption)
    .action(async (address: string, opts) => (await import('./cli/suppression.js')).suppressionRemove(env, address, opts))
}

function queueCommands(program: Program, env: CommandEnv): void {
  const queue = program
    .command('queue')
    .description('inspect and control the mail queue (a running relay through its admin API, else the data directory)')
    .addHelpText('after', "\nExit code: 0 ok, 1 not found or failed, 2 bad config or usage. The admin token: from the running relay's <dataDir>/admin.json, else RELAY_ADMIN_TOKEN.")
  queue
    .command('list')
    .description('list queued messages (id, received, size, sender, Message-ID, HELD) and under each its recipients with state, attempts, next attempt, last response')
    .option(...configOption)
    .option('--state <state>', 'queued, deferred or held')
    .option('--domain <domain>', 'with a recipient at this domain')
    .option('--sender <address>', "from this sender ('<>': the null sender)")
    .option('--limit <n>', 'at most n messages, oldest first')
    .option('--json', 'print JSON: [{ id, messageId, sender, size, receivedAt, heldAt, recipients: [{ address, state, attempts, nextAttemptAt, lastResponse, category }] }]')
    .action(async (opts) => (await import('./cli/queue.js')).queueList(env, opts))
  queue
    .command('show')
    .description('one message: envelope, each recipient with its attempt history, the header section')
    .argument('<id>', 'queue id')
    .option(...configOption)
    .option('--json', 'print JSON')
    .action(async (id: string, opts) => (await import('./cli/queue.js')).queueShow(env, id, opts))
  // postsuper-style: one id, ALL, - (ids on stdin), or a filter; a count, and --dry-run.
  const actions: [BulkAction, string][] = [
    ['hold', 'stop delivering messages until they are released'],
    ['release', 'deliver held messages again, at once'],
    ['flush', 'retry now: pending recipients (of messages not held) become due at once (no id and no filter: all)'],
    ['delete', 'remove messages without a bounce'],
    ['bounce', "give up on messages' pending recipients: a DSN goes to each sender (5.0.0 bounced by the administrator)"],
  ]
  for (const [verb, description] of actions) {
    const cmd = queue
      .command(verb)
      .description(description)
      .argument('[id]', 'a queue id, ALL (every message), or - (queue ids on stdin)')
      .option(...configOption)
      .option('--domain <domain>', verb === 'flush' ? 'messages with a recipient at this domain (flush: only those recipients)' : 'messages with a recipient at this domain')
      .option('--sender <address>', "messages from this sender ('<>': the null sender)")
      .option('--state <state>', 'messages with a queued or deferred recipient, or held ones')
      .option('--older-than <duration>', "messages received longer ago than this, e.g. '30m', '4h', '5d'")
      .option('--dry-run', 'list the messages it would act on; change nothing')
      .option('--json', 'print JSON (with a filter: { action, dryRun, matched, done })')
    if (verb === 'flush') cmd.option('--id <id>', 'only this message (as `flush <id>`)')
    cmd.addHelpText('after', '\nWith ALL, - or a filter it prints how many messages it changed; one id alone keeps the one-message output.')
    cmd.action(async (id: string | undefined, opts) => (await import('./cli/queue-bulk.js')).queueBulkVerb(env, verb, id, opts))
  }
  queue
    .command('cat')
    .description('print the message as queued: header section and body (like postcat -q)')
    .argument('<id>', 'queue id')
    .option(...configOption)
    .option('--header-only', 'only the header section')
    .option('--body-only', 'only the body')
    .option('--raw', 'the bytes as queued even on a terminal (there control characters print as ? otherwise; to a pipe it is always raw)')
    .action(async (id: string, opts) => (await import('./cli/queue-cat.js')).queueCat(env, id, opts))
  queue
    .command('backup')
    .description('copy the SQLite queue (online backup of the database, then the spool files it refers to) into a new directory')
    .argument('<dir>', 'where to write the backup (created; must be empty)')
    .option(...configOption)
    .option('--json', 'print JSON: { dir, messages, spoolFiles, leftOut }')
    .addHelpText('after', '\nSafe while the relay runs. The PostgreSQL queue: use pg_dump (this verb exits 1).')
    .action(async (dir: string, opts) => (await import('./cli/queue-backup.js')).queueBackup(env, dir, opts))
  queue
    .command('restore')
    .description("restore a queue backup into a new data directory (the config's dataDir, or --data-dir); refuses one that is not empty")
    .argument('<dir>', 'a directory written by `relay queue backup`')
    .option(...configOption)
    .option('--data-dir <dir>', "restore here instead of the config's dataDir")
    .option('--json', 'print JSON: { dataDir, messages, spoolFiles }')
    .action(async (dir: string, opts) => (await import('./cli/queue-backup.js')).queueRestore(env, dir, opts))
  queue
    .command('summary')
    .description('queue size by state and the destination domains with most pending recipients')
    .option(...configOption)
    .option('--age', 'pending recipients by destination domain and age in minutes, like qshape (T 5 10 20 ... 1280 1280+)')
    .option('--json', 'print JSON')
    .action(async (opts) => (await import('./cli/queue-cat.js')).queueSummaryAge(env, opts))
}
