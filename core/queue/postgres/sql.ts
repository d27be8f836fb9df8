// Small things the PostgreSQL queue's statements share.
import type pg from 'pg'

/** A pool (one statement, its own transaction) or a client inside a transaction. */
export type Db = pg.Pool | pg.PoolClient

export const PENDING = `state IN ('queued','deferred')`
export const HOUR = 3_600_000
/** Bodies up to this size go inline in the message row; larger ones into body_chunks. */
export const INLINE_MAX = 128 * 1024

export const json = (v: unknown) => (v === undefined || v === null ? null : JSON.stringify(v))
/** A Message-ID without its angle brackets, as complaints quote it. */
export const bareMessageId = (id: string | null | undefined) => (id ? id.trim().replace(/^<(.*)>$/, '$1') : null)
/** The domain of an address, lower case; '' for the null sender or no domain. */
export const domainOf = (address: string | undefined) => {
  const at = address?.lastIndexOf('@') ?? -1
  return at >= 0 ? address!.slice(at + 1).toLowerCase() : ''
}
