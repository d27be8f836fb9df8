// auth-sql: AUTH against users in PostgreSQL or SQLite. Stored values are scrypt hashes
// (`scrypt$N$r$p$saltB64$hashB64`), never plain passwords. A database that is down, slow or
// misconfigured gives 454 4.7.0 (try again later) and an error log line, never a crash.
//
//   plugins: [['auth-sql', { driver: 'postgres', url: 'postgres://relay@db/mail' }]]
//   plugins: [['auth-sql', { driver: 'sqlite', file: '/etc/relay/users.db' }]]
//
// Default table (see README.md): relay_users(username text primary key, password_hash text not
// null, senders text).
import { accept, BUSY, definePlugin, reject, tempfail, type Verdict } from '../../core/index.js'
import { postgresBackend, sqliteBackend, type Backend } from './backends.js'
import { PasswordChecker, parseScryptHash } from './hash.js'
import { options, type AuthSqlOptions } from './options.js'
import { parseSenders } from './senders.js'

interface State {
  backend: Backend
  checker: PasswordChecker
  /** Torn down (reload, shutdown): a call still under way gets 454 and reopens nothing. */
  closed?: boolean
}

/** A one-line reason for the log (AggregateError from a refused dual-stack connect has no message). */
function reason(err: unknown): string {
  const e = err as { message?: string; code?: string; errors?: unknown[] }
  return e?.message || e?.code || (e?.errors?.length ? reason(e.errors[0]) : String(err))
}

/** An accepting verdict that carries what the user may send as. */
/** Every password check of the process taken and its line full (an AUTH flood): 454, try later. */
function busy(log: { warn: (o: object, msg: string) => void }, user: string): Verdict {
  log.warn({ user }, 'password checks busy (AUTH flood?): AUTH tempfailed')
  return tempfail()
}

function authenticated(senders: string[] | undefined): Verdict {
  return senders ? { ...accept(), senders } : accept()
}

// Undefined in 'check' mode (check-config, plugin commands): no hook runs there, so no database is opened.
export default definePlugin<AuthSqlOptions, State | undefined>({
  name: 'auth-sql',
  options,
  async setup({ options, log, resolvePath, mode }) {
    if (mode === 'check') return undefined
    // A relative SQLite file is taken from the config file's directory.
    const backend = options.driver === 'postgres' ? await postgresBackend(options, log) : sqliteBackend({ ...options, file: resolvePath(options.file) }, log)
    if (options.driver === 'postgres') {
      // Early word in the log when the database is unreachable; AUTH works once it is back.
      backend.lookup('').then(
        () => log.info('PostgreSQL user database reachable'),
        (err: unknown) => log.warn({ err: reason(err) }, 'PostgreSQL user database not usable yet; AUTH answers 454 until it is'),
      )
    }
    return { backend, checker: new PasswordChecker() }
  },
  async teardown({ state }) {
    if (!state) return
    state.closed = true
    await state.backend.close()
  },
  hooks: {
    async auth({ username, password, options, state, log }) {
      if (!state || state.closed) return tempfail()
      if (username === '' || username.length > 1024 || username.includes('\0')) {
        // No such user can exist (and a NUL would make PostgreSQL fail the query instead).
        return (await state.checker.waste(password)) === BUSY ? busy(log, username) : reject()
      }
      let row
      try {
        row = await state.backend.lookup(username)
      } catch (err) {
        log.error({ err: reason(err), user: username, driver: options.driver }, 'user database failed: AUTH tempfailed')
        return tempfail()
      }
      if (!row) {
        log.debug({ user: username }, 'no such user')
        return (await state.checker.waste(password)) === BUSY ? busy(log, username) : reject()
      }
      const stored = typeof row.password_hash === 'string' ? parseScryptHash(row.password_hash) : undefined
      if (!stored) {
        // Never compared as a plain password; the value itself is not logged.
        log.error({ user: username }, "password_hash is not a supported hash (expected 'scrypt$N$r$p$salt$hash')")
        return (await state.checker.waste(password)) === BUSY ? busy(log, username) : reject()
      }
      let ok: boolean | typeof BUSY
      try {
        ok = await state.checker.verify(password, stored)
      } catch (err) {
        log.error({ err: reason(err), user: username }, 'password check failed')
        return tempfail()
      }
      if (ok === BUSY) return busy(log, username)
      if (!ok) {
        log.debug({ user: username }, 'wrong password')
        return reject()
      }
      return authenticated(parseSenders(row.senders))
    },
  },
})
