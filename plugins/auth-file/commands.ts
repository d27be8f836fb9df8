// `relay user add|remove|list`: edits the auth-file users file. Writes are atomic (temp file, rename,
// mode 0600), so a running relay reads either the old or the new file.
import path from 'node:path'
import { parseAddress } from '../../core/index.js'
import type { CliEnv, UserCommandOptions } from './cli-types.js'
import { hashPassword, isSenderPattern, readUsersFile, userKey, UsersFileError, writeUsersFile, type UsersFileData } from './users.js'

/** A mistake of the person at the keyboard: printed as `relay: <message>`, exit code 2 (usage), or 1 (`exit`: what it names is not there, nothing changed). */
class UsageError extends Error {
  constructor(message: string, readonly exit: 1 | 2 = 2) {
    super(message)
  }
}

export async function runCommand(name: 'userAdd' | 'userRemove' | 'userList', args: unknown[], env: CliEnv): Promise<void> {
  try {
    if (name === 'userList') await userList(args[0] as UserCommandOptions, env)
    else await (name === 'userAdd' ? userAdd : userRemove)(args[0] as string, args[1] as UserCommandOptions, env)
  } catch (err) {
    if (!(err instanceof UsageError || err instanceof UsersFileError)) throw err
    process.stderr.write(`relay: ${err.message}\n`)
    process.exitCode = err instanceof UsageError ? err.exit : 1
  }
}

/**
 * The users file: --file (relative: from the current directory), else the `file` option of the
 * config's auth-file entry (relative: from the config file's directory, as the relay takes it), else
 * ./users.json.
 */
async function usersFile(opts: UserCommandOptions, env: CliEnv): Promise<string> {
  if (opts.file) return path.resolve(opts.file)
  const config = (await env.loadConfig(opts.config)) as { plugins?: unknown[]; configFile?: string; configDir?: string }
  const configDir = config.configDir ?? process.cwd()
  const files = new Set<string>()
  for (const entry of config.plugins ?? []) {
    const [ref, options] = Array.isArray(entry) ? entry : [entry, undefined]
    const isAuthFile =
      ref === 'auth-file' ||
      (typeof ref === 'string' && /(^|[/\\])auth-file([/\\]index\.[cm]?[jt]s)?$/.test(ref)) ||
      (typeof ref === 'object' && ref !== null && (ref as { name?: unknown }).name === 'auth-file')
    const file = (options as { file?: unknown } | undefined)?.file
    if (isAuthFile && typeof file === 'string') files.add(path.resolve(configDir, file))
  }
  if (files.size > 1) throw new UsageError(`the config${config.configFile ? ` (${config.configFile})` : ''} has several auth-file users files: choose one with --file`)
  return [...files][0] ?? path.resolve('users.json')
}

function checkAddress(address: string): string {
  if (!parseAddress(address)) throw new UsageError(`'${address}' is not an email address (a user name is the address it logs in with)`)
  return address.toLowerCase()
}

/** The key of `address` in the file, whatever its case or the spelling of its domain there. */
function findUser(data: UsersFileData, address: string): string | undefined {
  const key = userKey(address)
  return Object.keys(data.users).find((k) => userKey(k) === key)
}

/** Shorter passwords are taken with a warning. */
const MIN_PASSWORD = 12

async function userAdd(address: string, opts: UserCommandOptions, env: CliEnv): Promise<void> {
  const name = checkAddress(address)
  const senders = (opts.sender ?? []).map((s) => s.trim().toLowerCase())
  const bad = senders.find((s) => !isSenderPattern(s))
  if (bad !== undefined) throw new UsageError(`--sender '${bad}': expected an address, a domain, '@domain' or '*'`)
  const file = await usersFile(opts, env)
  // Read before asking for the password: a broken file is reported first, and never overwritten.
  const existing = await readUsersFile(file)
  const password = opts.passwordStdin ? await passwordFromStdin() : await passwordFromTerminal()
  // Taken (the operator decides), but said: AUTH on a public port is guessed at all day.
  if ([...password].length < MIN_PASSWORD) process.stderr.write(`relay: warning: a password of ${[...password].length} characters is easy to guess over SMTP AUTH (rate-limit slows guessing, it does not stop it): use ${MIN_PASSWORD} or more\n`)
  const hash = await hashPassword(password)

  const data: UsersFileData = { users: { ...(existing?.data.users ?? {}) } }
  const key = existing ? findUser(existing.data, name) : undefined
  const entry = { hash, ...(senders.length ? { senders } : key && data.users[key]!.senders ? { senders: data.users[key]!.senders } : {}) }
  if (key) {
    // Keep the user's place in the file (it is meant to be read and edited by hand too).
    data.users = Object.fromEntries(Object.entries(data.users).map(([k, v]) => (k === key ? [name, entry] : [k, v])))
  } else data.users[name] = entry
  await writeUsersFile(file, data)
  const may = entry.senders ? entry.senders.join(', ') : `${name} (its own address)`
  process.stdout.write(`${key ? 'updated' : 'added'} ${name} in ${file}; may send as: ${may}\n`)
}

async function userRemove(address: string, opts: UserCommandOptions, env: CliEnv): Promise<void> {
  const name = address.toLowerCase()
  const file = await usersFile(opts, env)
  const existing = await readUsersFile(file)
  if (!existing) throw new UsageError(`no users file at ${file}`, 1)
  const key = findUser(existing.data, name)
  if (!key) throw new UsageError(`no user ${address} in ${file}`, 1)
  const users = { ...existing.data.users }
  delete users[key]
  await writeUsersFile(file, { users })
  process.stdout.write(`removed ${key} from ${file}\n`)
}

async function userList(opts: UserCommandOptions, env: CliEnv): Promise<void> {
  const file = await usersFile(opts, env)
  const existing = await readUsersFile(file)
  if (!existing) throw new UsageError(`no users file at ${file}`, 1)
  const entries = Object.entries(existing.data.users)
  for (const [name, u] of entries) process.stdout.write(`${name}  may send as: ${u.senders ? u.senders.join(', ') || '(nothing)' : name}\n`)
  process.stdout.write(`${entries.length} user${entries.length === 1 ? '' : 's'} in ${file}\n`)
}

/** The first line of standard input (without its line ending). */
async function passwordFromStdin(): Promise<string> {
  const stdin = process.stdin
  let text = ''
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8')
      if (text.includes('\n')) finish()
    }
    const finish = () => {
      stdin.off('data', onData).off('end', finish).off('error', reject)
      stdin.pause()
      resolve()
    }
    stdin.on('data', onData).once('end', finish).once('error', reject)
  })
  const password = text.split('\n')[0]!.replace(/\r$/, '')
  if (!password) throw new UsageError('no password on standard input (--password-stdin reads its first line)')
  return password
}

/** Asks twice on the terminal, without echo. */
async function passwordFromTerminal(): Promise<string> {
  if (!process.stdin.isTTY) throw new UsageError('standard input is not a terminal: give the password with --password-stdin')
  const promptHidden = hiddenPrompter()
  const first = await promptHidden('Password: ')
  if (!first) throw new UsageError('empty password: nothing changed')
  const again = await promptHidden('Password again: ')
  if (again !== first) throw new UsageError('the passwords differ: nothing changed', 1)
  return first
}

/** Prompts without echo; what was typed after the end of one answer (typed ahead, or pasted) goes to the next. */
function hiddenPrompter(): (prompt: string) => Promise<string> {
  let typeahead = ''
  return (prompt) => promptHidden(prompt, typeahead, (rest) => (typeahead = rest))
}

function promptHidden(prompt: string, typeahead: string, setTypeahead: (rest: string) => void): Promise<string> {
  const stdin = process.stdin
  // Echo off before the prompt shows, so nothing typed after seeing it is echoed.
  stdin.setRawMode(true)
  process.stderr.write(prompt)
  stdin.setEncoding('utf8')
  stdin.resume()
  return new Promise((resolve, reject) => {
    let chars: string[] = []
    const onData = (chunk: string) => {
      const input = [...chunk]
      for (const [i, ch] of input.entries()) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') {
          setTypeahead(input.slice(i + 1).join('').replace(/^\n/, ''))
          return done(() => resolve(chars.join('')))
        }
        if (ch === '\u0003') return done(() => reject(new UsageError('interrupted: nothing changed', 1)))
        if (ch === '\u007f' || ch === '\b') chars = chars.slice(0, -1)
        else if (ch === '\u0015') chars = [] // Ctrl-U
        else if (ch >= ' ') chars.push(ch)
      }
    }
    const done = (settle: () => void) => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write('\n')
      settle()
    }
    stdin.on('data', onData)
    if (typeahead) {
      setTypeahead('')
      onData(typeahead)
    }
  })
}
