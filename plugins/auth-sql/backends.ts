// The two databases auth-sql reads: PostgreSQL through a small pg.Pool, SQLite through
// better-sqlite3 opened read-only in a child process. Both run one query, prepared once, with the
// user name as its only parameter, and give back the first row (or undefined when there is none).
import { createHash } from 'node:crypto'
import { importOptional, type PluginContext } from '../../core/index.js'
import { DEFAULT_QUERY, type AuthSqlOptions } from './options.js'
import { SqliteProcess } from './sqlite-process.js'
import { NO_HASH_COLUMN, type UserRow } from './sqlite-child.js'

type Logger = PluginContext<unknown>['log']

export type { UserRow }

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
  // Off the event loop (sqlite-process.ts): a slow query or a locked file costs that AUTH a 454 at
  // queryTimeout, never the other sessions their turn.
  const lookups = new SqliteProcess({ file: o.file, query: o.query ?? DEFAULT_QUERY.sqlite, busyTimeout: o.queryTimeout }, o.queryTimeout)
  lookups.lookup().catch((err: Error) => log.error({ err: err.message, file: o.file }, 'cannot open the SQLite user database; AUTH answers 454 until it can'))
  return {
    lookup: (username) => lookups.lookup(username),
    close: async () => lookups.close(),
  }
}
