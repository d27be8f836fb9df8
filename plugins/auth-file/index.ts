// auth-file: SMTP AUTH against a users file of scrypt password hashes (format: README.md here).
// Users are managed with `relay user add|remove|list` (cli.ts); the relay picks changes up by itself.
import crypto from 'node:crypto'
import { accept, BUSY, definePlugin, durationAtLeast, passwordChecks, reject, tempfail, z } from '../../core/index.js'
import { register } from './cli.js'
import { UserStore } from './store.js'
import { readUsersFile, SCRYPT_DEFAULTS, verifyPassword, type PasswordHash } from './users.js'

/** From 50 ms to a day, in milliseconds. */
const interval = durationAtLeast(50, '50ms').refine((ms) => ms <= 86_400_000, { message: "expected a duration from '50ms' to a day" })

const options = z
  .object({
    /** The users file. A relative path is taken from the directory of the config file. */
    file: z.string().min(1),
    /** How often the file is also checked by stat (besides watching it). */
    checkInterval: interval.default(2000),
    /** Watch the file for changes (false: the stat check only, for filesystems where watching fails silently). */
    watch: z.boolean().default(true),
  })
  .strict()

type Options = z.output<typeof options>

/**
 * An unknown user is checked against this hash (same parameters as new hashes, and it matches no
 * password), so a wrong name costs the same time as a wrong password and does not tell which it was.
 */
const DUMMY: PasswordHash = { ...SCRYPT_DEFAULTS, salt: crypto.randomBytes(SCRYPT_DEFAULTS.saltBytes), key: crypto.randomBytes(SCRYPT_DEFAULTS.keyBytes) }

// The state (`ctx.state`) is this generation's UserStore. It keeps its own watch rather than
// ctx.watchFile: a missing file at start means "no users" (not a failed start), a removed file
// forgets everyone, and `watch: false` leaves a stat check every `checkInterval`.
export default definePlugin<Options, UserStore>({
  name: 'auth-file',
  options,
  async setup({ options, log, resolvePath, mode }) {
    // `relay check-config`: a file that exists but cannot be used (unreadable, broken) is a problem
    // to report; the relay itself starts with it all the same (no logins until it is fixed).
    if (mode === 'check') await readUsersFile(resolvePath(options.file))
    const store = new UserStore(resolvePath(options.file), log, { checkInterval: options.checkInterval, watch: options.watch })
    await store.start()
    return store
  },
  teardown({ state }) {
    state.close()
  },
  hooks: {
    async auth({ username, password, state: store, log }) {
      const user = store.get(username)
      // A bounded share of the thread pool (core's passwordChecks): a flood gets 454, not a stall.
      const ok = await passwordChecks.run(() => verifyPassword(password, user?.hash ?? DUMMY))
      if (ok === BUSY) {
        log.warn({ user: username }, 'password checks busy (AUTH flood?): AUTH tempfailed')
        return tempfail()
      }
      if (!user || !ok) {
        log.debug({ user: username, known: user !== undefined }, user ? 'wrong password' : 'unknown user')
        return reject()
      }
      // (`accept({ senders })` as docs/hooks.md shows it; spelt out because accept's parameter type lacks `senders`.)
      return { ...accept(), senders: user.senders ?? [username.toLowerCase()] }
    },
  },
  commands: register,
})
