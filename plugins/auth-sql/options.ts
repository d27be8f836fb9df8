import { z } from '../../core/index.js'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/** '5s', '500ms', '1m', or a number of seconds → milliseconds (> 0). */
export const duration = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const m = typeof value === 'number' ? [String(value), String(value), 's'] : /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value)
  const ms = m ? Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!) : NaN
  if (!(ms > 0) || !Number.isFinite(ms)) {
    ctx.addIssue({ code: 'custom', message: `expected a positive duration like '5s' or '500ms', got ${JSON.stringify(value)}` })
    return z.NEVER
  }
  return ms
})

const common = {
  /**
   * SQL with exactly one parameter, the user name (`$1` for postgres, `?` for sqlite), returning
   * the column `password_hash` and optionally `senders`. Default: the `relay_users` table.
   */
  query: z.string().trim().min(1).optional(),
  /** Longest wait for the database (connect + query); then AUTH gets 454 4.7.0. */
  queryTimeout: duration.default(5000),
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
      /** Path of the database file (opened read-only; relative to the relay's working directory). */
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
