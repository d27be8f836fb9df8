// Small things the SQLite store's statements share: SQL fragments, row shapes and conversions.
import type Database from 'better-sqlite3'
import type { Job, RecipientState } from '../types.js'
import type { BounceCategory } from '../../hooks/types.js'

/** The open database as the store's statements use it. */
export interface Sqlite {
  readonly db: Database.Database
  /** Schema version (a read-only store may look at a database an older relay wrote). */
  readonly version: number
  /** A prepared statement, made once per SQL text. */
  stmt(sql: string): Database.Statement
}

/** Prepared statements, made once per SQL text. */
export function statementCache(db: Database.Database): (sql: string) => Database.Statement {
  const statements = new Map<string, Database.Statement>()
  return (sql) => {
    let s = statements.get(sql)
    if (!s) statements.set(sql, (s = db.prepare(sql)))
    return s
  }
}

export const PENDING = `state IN ('queued','deferred')`
/** For a query on recipients: its message is not held (a primary-key lookup per row). */
export const NOT_HELD = `NOT EXISTS (SELECT 1 FROM messages h WHERE h.id = recipients.message_id AND h.held_at IS NOT NULL)`
/** Not leased by a delivery running now (an expired lease is work left by a dead process). */
export const NOT_IN_FLIGHT = `(leased = 0 OR next_attempt <= ?)`
/**
 * For a query on messages m (parameter: now): a recipient of m is in flight, or due now, or pending
 * while m is held (its owed DSN waits for the release, as the rest of it does).
 */
export const WAITING = `EXISTS (SELECT 1 FROM recipients w WHERE w.message_id = m.id AND w.${PENDING} AND (w.leased = 1 OR m.held_at IS NOT NULL OR w.next_attempt <= ?))`

const HOUR = 3_600_000
export const hourOf = (t: number) => Math.floor(t / HOUR) * HOUR
/** The domain of an address, lower case ('' when it has none). */
export const domainOf = (address: string | undefined) => {
  const a = (address ?? '').trim().replace(/^<|>$/g, '')
  const at = a.lastIndexOf('@')
  return at < 0 ? '' : a.slice(at + 1).toLowerCase()
}
/** A Message-ID as the sent log keeps it: without angle brackets. */
export const bareMessageId = (id: string | undefined) => {
  const bare = (id ?? '').trim().replace(/^<|>$/g, '').trim()
  return bare || null
}

export interface MessageRow {
  id: string
  sender: string
  sender_args: string | null
  message_id: string | null
  size: number
  headers: Buffer
  body: Buffer | null
  body_file: string | null
  received_at: number
  expires_at: number
  meta: string
  held_at?: number | null
  delay_notified_at?: number | null
}

export interface RecipientRow {
  id: number
  message_id: string
  address: string
  domain: string
  args: string | null
  state: RecipientState
  attempts: number
  next_attempt: number
  leased?: number
  last_response: string | null
  remote_host: string | null
  category: BounceCategory | null
  updated_at?: number
}

export const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v))
export const parse = <T>(v: string | null): T | undefined => (v == null ? undefined : (JSON.parse(v) as T))

export function toMessage(m: MessageRow): Job['message'] {
  return {
    id: m.id,
    sender: m.sender,
    senderArgs: parse(m.sender_args),
    messageId: m.message_id ?? undefined,
    size: m.size,
    headers: m.headers,
    body: m.body_file ? { file: m.body_file } : { inline: m.body ?? Buffer.alloc(0) },
    receivedAt: m.received_at,
    expiresAt: m.expires_at,
    meta: JSON.parse(m.meta),
  }
}
