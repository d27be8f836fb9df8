// auth-file's verbs in the relay CLI: `relay user add|remove|list`, declared by the plugin object's
// `commands` (index.ts); the work itself is in commands.ts, loaded only when a verb runs.
import type { Command } from 'commander'
import type { CliEnv } from './cli-types.js'

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value]

export function register(program: Command, env: CliEnv): void {
  const user = program.command('user').description('logins of the auth-file plugin (SMTP AUTH users and their password hashes)')
  const fileOptions = (cmd: Command) =>
    cmd
      .option('-f, --file <file>', "users file (default: the `file` option of the config's auth-file plugin, else ./users.json)")
      .option('-c, --config <file>', 'config file to take the users file from (default: searched as for `relay start`)')

  const run = (name: 'userAdd' | 'userRemove' | 'userList') =>
    async (...args: unknown[]) => {
      const commands = await import('./commands.js')
      await commands.runCommand(name, args, env)
    }

  fileOptions(
    user
      .command('add')
      .description('add a user, or set a new password for an existing one (asked twice on a terminal)')
      .argument('<address>', 'the login name: an email address')
      .option('--password-stdin', 'read the password from the first line of standard input')
      .option('--sender <sender>', "an address or domain the user may send as, or '*' (repeatable; default: its own address; replaces the list of an existing user)", collect),
  ).action(run('userAdd'))

  fileOptions(user.command('remove').description('remove a user').argument('<address>', 'the login name')).action(run('userRemove'))

  fileOptions(user.command('list').description('list the users and what they may send as (never the hashes)')).action(run('userList'))
}
