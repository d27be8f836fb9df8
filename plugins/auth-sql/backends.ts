// The two databases auth-sql reads: PostgreSQL through a small pg.Pool, SQLite through
// better-sqlite3 opened read-only. Both run one query, prepared once, with the user name as its
// only parameter, and give back the first row (or undefined when there is none).
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import Database from 'better-sqlite3'
import { importOptional, type PluginContext } from '../../core/index.js'
import { DEFAULT_QUERY, type AuthSqlOptions } from './options.js'

type Logger = PluginContext<unknown>['log']

export interface UserRow {
  password_hash?: unknown
  senders?: unknown
}

export interface Backend {
  /** The user's row; throws when the database cannot answer (→ tempfail). */
  lookup(username: string): Promise<UserRow | undefined>
  close(): Promise<void>
}

/** Rejects when `work` has not settled within `ms`. */
function deadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
  })
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer))
}

const NO_HASH_COLUMN = "the query returns no 'password_hash' column"

type PostgresOptions = Extract<AuthSqlOptions, { driver: 'postgres' }>
type SqliteOptions = Extract<AuthSqlOptions, { driver: 'sqlite' }>

export async function postgresBackend(o: PostgresOptions, log: Logger): Promise<Backend> {
  // Imported here: only the postgres driver needs pg.
  const { default: pg } = await importOptional('pg', "auth-sql's driver 'postgres'", () => import('pg'))
  const text = o.query ?? DEFAULT_QUERY.postgres
  const pool = new pg.Pool({
    connectionString: o.url,
    max: o.poolSize,
    // Waiting for a connection (new or from the pool) and the statement itself are both bounded;
    // the server cancels a statement past statement_timeout, and pg drops a connection whose
    // query failed, so a hung server does not keep pool slots.
    connectionTimeoutMillis: o.queryTimeout,
    statement_timeout: o.queryTimeout,
    query_timeout: o.queryTimeout + 1000,
    idleTimeoutMillis: 30_000,
    application_name: 'relay-auth-sql',
    allowExitOnIdle: true,
  })
  // An idle connection that breaks (server restart) is reported here; without a listener it would
  // be an uncaught 'error' event and end the process.
  pool.on('error', (err) => log.warn({ err: err.message }, 'idle PostgreSQL connection failed; it will be replaced'))
  // A named query is parsed and planned once per connection, then only executed.
  const name = `relay-auth-sql-${createHash('sha256').update(text).digest('hex').slice(0, 16)}`
  return {
    async lookup(username) {
      const res = await deadline(pool.query<UserRow>({ name, text, values: [username] }), o.queryTimeout, 'PostgreSQL query')
      if (!res.fields.some((f) => f.name === 'password_hash')) throw new Error(NO_HASH_COLUMN)
      return res.rows[0]
    },
    async close() {
      await deadline(pool.end(), 5000, 'closing the PostgreSQL pool').catch((err: Error) => log.warn({ err: err.message }, 'PostgreSQL pool did not close cleanly'))
    },
  }
}

export function sqliteBackend(o: SqliteOptions, log: Logger): Backend {
  const text = o.query ?? DEFAULT_QUERY.sqlite
  let db: Database.Database | undefined
  let stmt: Database.Statement<[string], UserRow> | undefined
  let opened: { dev: number; ino: number } | undefined

  const close = () => {
    try {
      db?.close()
    } catch {
      // already closed
    }
    db = stmt = opened = undefined
  }
  const open = () => {
    const st = fs.statSync(o.file)
    // better-sqlite3 is synchronous: a locked database must not hold the event loop for long.
    const d = new Database(o.file, { readonly: true, fileMustExist: true, timeout: Math.min(o.queryTimeout, 1000) })
    try {
      const s = d.prepare<[string], UserRow>(text)
      if (!s.reader) throw new Error('the query returns no rows (expected a SELECT)')
      if (!s.columns().some((c) => c.name === 'password_hash')) throw new Error(NO_HASH_COLUMN)
      db = d
      stmt = s
      opened = { dev: st.dev, ino: st.ino }
    } catch (err) {
      d.close()
      throw err
    }
  }

  try {
    open()
  } catch (err) {
    log.error({ err: (err as Error).message, file: o.file }, 'cannot open the SQLite user database; AUTH answers 454 until it can')
  }

  return {
    async lookup(username) {
      // A file replaced under us (a new database renamed into place) is opened again.
      if (opened) {
        const st = fs.statSync(o.file, { throwIfNoEntry: false })
        if (st && (st.ino !== opened.ino || st.dev !== opened.dev)) close()
      }
      if (!stmt) open()
      try {
        return stmt!.get(username)
      } catch (err) {
        close()
        throw err
      }
    },
    async close() {
      close()
    },
  }
}
