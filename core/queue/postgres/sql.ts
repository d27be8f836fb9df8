// Small things the PostgreSQL queue's statements share.
import type pg from 'pg'
import type { QueuedMessage } from '../types.js'

/** A pool (one statement, its own transaction) or a client inside a transaction. */
export type Db = pg.Pool | pg.PoolClient

/** What the statements of each concern (operator verbs, reputation, …) need of the queue. */
export interface PgContext {
  /** Schema-qualified prefix for every table name. */
  readonly s: string
  /** This node's identity, which its leases carry. */
  readonly nodeId: string
  /** One statement on the pool, once the migrations are done (fails once the queue is closed). */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string | pg.QueryConfig, values?: unknown[]): Promise<pg.QueryResult<R>>
  /** Runs `fn` in one transaction on one connection. */
  tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T>
}

export const PENDING = `state IN ('queued','deferred')`
/** For a query on messages m (`now`: a parameter): a recipient of m is in flight, or due now, or pending while m is held (its owed DSN waits for the release). */
export const waiting = (s: string, now: string) =>
  `EXISTS (SELECT 1 FROM ${s}.recipients w WHERE w.message_id = m.id AND w.${PENDING} AND (w.leased_by IS NOT NULL OR m.held_at IS NOT NULL OR w.next_attempt <= ${now}))`
/** For a query on messages m: a recipient of m has a DSN owed. */
export const owed = (s: string) => `EXISTS (SELECT 1 FROM ${s}.recipients o WHERE o.message_id = m.id AND o.dsn IS NOT NULL)`
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

export interface MessageRow {
  id: string
  sender: string
  sender_args: Record<string, string | boolean> | null
  message_id: string | null
  size: number
  headers: Buffer
  body: Buffer | null
  body_size: number | null
  received_at: number
  expires_at: number
  meta: QueuedMessage['meta']
  held_at: number | null
}

export const orUndefined = <T>(v: T | null | undefined): T | undefined => (v == null ? undefined : v)

export function toMessage(m: MessageRow): QueuedMessage {
  return {
    id: m.id,
    sender: m.sender,
    senderArgs: orUndefined(m.sender_args),
    messageId: orUndefined(m.message_id),
    size: m.size,
    headers: m.headers,
    body: m.body_size != null ? { stored: m.body_size } : { inline: m.body ?? Buffer.alloc(0) },
    receivedAt: m.received_at,
    expiresAt: m.expires_at,
    meta: m.meta,
  }
}
