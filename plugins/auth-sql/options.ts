import { timerAtLeast, z } from '../../core/index.js'

const common = {
  /**
   * SQL with exactly one parameter, the user name (`$1` for postgres, `?` for sqlite), returning
   * the column `password_hash` and optionally `senders`. Default: the `relay_users` table.
   */
  query: z.string().trim().min(1).optional(),
  /** Longest wait for the database (connect + query); then AUTH gets 454 4.7.0. */
  queryTimeout: timerAtLeast(1, '1ms').default(5000),
}

export const options = z.discriminatedUnion('driver', [
  z
    .object({
      driver: z.literal('postgres'),
      /** Connection string, e.g. 'postgres://relay@db.example.com/mail'. */
      url: z.string().min(1),
      /** Connections kept to PostgreSQL. */
      poolSize: z.number().int().min(1).max(100).default(4),
      ...common,
    })
    .strict(),
  z
    .object({
      driver: z.literal('sqlite'),
      /** Path of the database file (opened read-only; relative to the config file's directory). */
      file: z.string().min(1),
      ...common,
    })
    .strict(),
])

export type AuthSqlOptions = z.output<typeof options>

export const DEFAULT_QUERY = {
  postgres: 'SELECT password_hash, senders FROM relay_users WHERE username = $1',
  sqlite: 'SELECT password_hash, senders FROM relay_users WHERE username = ?',
} as const
