// auth-file: SMTP AUTH against a users file of scrypt password hashes (format: README.md here).
// Users are managed with `relay user add|remove|list` (cli.ts); the relay picks changes up by itself.
import crypto from 'node:crypto'
import path from 'node:path'
import { accept, definePlugin, durationAtLeast, reject, z } from '../../core/index.js'
import { UserStore } from './store.js'
import { SCRYPT_DEFAULTS, verifyPassword, type PasswordHash } from './users.js'

/** From 50 ms to a day, in milliseconds. */
const interval = durationAtLeast(50, '50ms').refine((ms) => ms <= 86_400_000, { message: "expected a duration from '50ms' to a day" })

const options = z
  .object({
    /** The users file. A relative path is taken from the relay's current directory, not the config's. */
    file: z.string().min(1),
    /** How often the file is also checked by stat (besides watching it). */
    checkInterval: interval.default(2000),
    /** Watch the file for changes (false: the stat check only, for filesystems where watching fails silently). */
    watch: z.boolean().default(true),
  })
  .strict()

/**
 * An unknown user is checked against this hash (same parameters as new hashes, and it matches no
 * password), so a wrong name costs the same time as a wrong password and does not tell which it was.
 */
const DUMMY: PasswordHash = { ...SCRYPT_DEFAULTS, salt: crypto.randomBytes(SCRYPT_DEFAULTS.saltBytes), key: crypto.randomBytes(SCRYPT_DEFAULTS.keyBytes) }

// One store per plugin entry (its options object), so two entries may read two files.
const stores = new WeakMap<object, UserStore>()

export default definePlugin({
  name: 'auth-file',
  options,
  async setup({ options, log }) {
    const store = new UserStore(path.resolve(options.file), log, { checkInterval: options.checkInterval, watch: options.watch })
    await store.start()
    stores.set(options, store)
    return () => store.close()
  },
  hooks: {
    async auth({ username, password, options, log }) {
      const store = stores.get(options)
      if (!store) throw new Error('auth-file: the users file was not loaded (setup did not run)')
      const user = store.get(username)
      const ok = await verifyPassword(password, user?.hash ?? DUMMY)
      if (!user || !ok) {
        log.debug({ user: username, known: user !== undefined }, user ? 'wrong password' : 'unknown user')
        return reject()
      }
      // (`accept({ senders })` as docs/hooks.md shows it; spelt out because accept's parameter type lacks `senders`.)
      return { ...accept(), senders: user.senders ?? [username.toLowerCase()] }
    },
  },
})
