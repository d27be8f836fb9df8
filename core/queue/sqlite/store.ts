import Database from 'better-sqlite3'
import type { ClaimOptions, ClaimResult, DelayCandidate, Job, NewMessage, QueueEntry, RecipientResult, RecipientState, Suppression } from '../types.js'
import type { BounceCategory } from '../../hooks/types.js'

const PENDING = `state IN ('queued','deferred')`

const MIGRATIONS: string[] = [
  `CREATE TABLE messages (
     id TEXT PRIMARY KEY,
     sender TEXT NOT NULL,
     sender_args TEXT,
     message_id TEXT,
     size INTEGER NOT NULL,
     headers BLOB NOT NULL,
     body BLOB,
     body_file TEXT,
     received_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     meta TEXT NOT NULL
   );
   CREATE TABLE recipients (
     id INTEGER PRIMARY KEY,
     message_id TEXT NOT NULL,
     address TEXT NOT NULL,
     domain TEXT NOT NULL,
     args TEXT,
     state TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt INTEGER NOT NULL,
     leased INTEGER NOT NULL DEFAULT 0,
     last_response TEXT,
     remote_host TEXT,
     updated_at INTEGER NOT NULL
   );
   -- A lease moves next_attempt to the lease's expiry, so one index finds both due and abandoned work.
   CREATE INDEX recipients_due ON recipients(next_attempt) WHERE ${PENDING};
   CREATE INDEX recipients_message ON recipients(message_id);`,
  // Bounce intelligence: the failure category per recipient, the delay warning sent once per
  // message (0: never, e.g. for bounces), the suppression list (hard bounces, `relay suppression`).
  `ALTER TABLE recipients ADD COLUMN category TEXT;
   ALTER TABLE messages ADD COLUMN delay_notified_at INTEGER;
   UPDATE messages SET delay_notified_at = 0 WHERE sender = '';
   CREATE INDEX messages_delay ON messages(received_at) WHERE delay_notified_at IS NULL;
   CREATE TABLE suppressions (
     address TEXT PRIMARY KEY,
     reason TEXT NOT NULL,
     source TEXT,
     created_at INTEGER NOT NULL,
     expires_at INTEGER
   );
   CREATE INDEX suppressions_expiry ON suppressions(expires_at) WHERE expires_at IS NOT NULL;`,
]

interface MessageRow {
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
}

interface RecipientRow {
  id: number
  message_id: string
  address: string
  domain: string
  args: string | null
  state: RecipientState
  attempts: number
  next_attempt: number
  last_response: string | null
  remote_host: string | null
  category: BounceCategory | null
}

interface SuppressionRow {
  address: string
  reason: string
  source: string | null
  created_at: number
  expires_at: number | null
}

const toSuppression = (r: SuppressionRow): Suppression => ({
  address: r.address,
  reason: r.reason,
  source: r.source ?? undefined,
  createdAt: r.created_at,
  expiresAt: r.expires_at ?? undefined,
})

const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v))
const parse = <T>(v: string | null): T | undefined => (v == null ? undefined : (JSON.parse(v) as T))

/** The SQLite queue's tables and statements. Runs inside the queue worker (or read-only in the CLI). */
export class SqliteStore {
  readonly db: Database.Database
  /** Schema version (a read-only store may look at a database an older relay wrote). */
  private version: number

  constructor(file: string, { readonly = false } = {}) {
    this.db = new Database(file, { readonly, fileMustExist: readonly })
    this.db.pragma('busy_timeout = 5000')
    if (!readonly) {
      this.db.pragma('journal_mode = WAL')
      // FULL: a commit is on disk before it returns; a 250 must survive power loss, not only a crash.
      this.db.pragma('synchronous = FULL')
      this.migrate()
    }
    this.version = this.db.pragma('user_version', { simple: true }) as number
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!)
        this.db.pragma(`user_version = ${v + 1}`)
      })()
    }
  }

  private stmt = cache(this)

  enqueue(m: NewMessage, leaseUntil?: number): number[] {
    this.stmt(
      `INSERT INTO messages (id, sender, sender_args, message_id, size, headers, body, body_file, received_at, expires_at, meta, delay_notified_at)
       VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
    ).run(
      m.id, m.sender, json(m.senderArgs), m.messageId ?? null, m.size, m.headers,
      'inline' in m.body ? m.body.inline : null, 'file' in m.body ? m.body.file : null,
      m.receivedAt, m.expiresAt, JSON.stringify(m.meta),
      // No delay warning is ever sent for a message from the null sender.
      m.sender === '' ? 0 : null,
    )
    const insert = this.stmt(
      `INSERT INTO recipients (message_id, address, domain, args, state, next_attempt, leased, updated_at) VALUES (?,?,?,?, 'queued', ?, ?, ?)`,
    )
    return m.recipients.map(
      (r) => Number(insert.run(m.id, r.address, r.domain, json(r.args), leaseUntil ?? m.receivedAt, leaseUntil ? 1 : 0, m.receivedAt).lastInsertRowid),
    )
  }

  claim(o: ClaimOptions): ClaimResult {
    const full = Object.keys(o.inFlight).filter((d) => (o.inFlight[d] ?? 0) >= o.perDomain)
    const rows = this.db
      .prepare(
        `SELECT id, message_id, address, domain, args, attempts FROM recipients
         WHERE ${PENDING} AND next_attempt <= ? ${full.length ? `AND domain NOT IN (${full.map(() => '?').join(',')})` : ''}
         ORDER BY next_attempt LIMIT ?`,
      )
      .all(o.now, ...full, Math.min(o.limit * 8, 5000)) as RecipientRow[]

    const jobs = new Map<string, { messageId: string; domain: string; rows: RecipientRow[] }>()
    const perDomain = new Map<string, number>()
    for (const row of rows) {
      const key = `${row.message_id}\u0000${row.domain}`
      const job = jobs.get(key)
      if (job) {
        job.rows.push(row)
        continue
      }
      const busy = (o.inFlight[row.domain] ?? 0) + (perDomain.get(row.domain) ?? 0)
      if (jobs.size >= o.limit || busy >= o.perDomain) continue
      perDomain.set(row.domain, (perDomain.get(row.domain) ?? 0) + 1)
      jobs.set(key, { messageId: row.message_id, domain: row.domain, rows: [row] })
    }

    const lease = this.stmt(`UPDATE recipients SET next_attempt = ?, leased = 1 WHERE id = ?`)
    const getMessage = this.stmt(`SELECT * FROM messages WHERE id = ?`)
    const result: Job[] = []
    const messages = new Map<string, MessageRow | undefined>()
    for (const job of jobs.values()) {
      if (!messages.has(job.messageId)) messages.set(job.messageId, getMessage.get(job.messageId) as MessageRow | undefined)
      const m = messages.get(job.messageId)
      if (!m) continue
      for (const row of job.rows) lease.run(o.now + o.leaseMs, row.id)
      result.push({
        domain: job.domain,
        message: toMessage(m),
        recipients: job.rows.map((r) => ({ rowId: r.id, address: r.address, attempts: r.attempts, args: parse(r.args) })),
      })
    }
    const next = this.stmt(`SELECT MIN(next_attempt) AS t FROM recipients WHERE ${PENDING}`).get() as { t: number | null }
    return { jobs: result, nextDueAt: next.t ?? undefined }
  }

  /** Returns the body file to remove when the message has left the queue. */
  complete(queueId: string, results: RecipientResult[], bounce: NewMessage | undefined, now: number, suppress?: Suppression[]): { finished: boolean; bodyFile?: string } {
    const update = this.stmt(
      `UPDATE recipients SET state = ?, attempts = attempts + 1, last_response = ?, remote_host = ?, next_attempt = ?, leased = 0, updated_at = ?, category = ?
       WHERE id = ? AND message_id = ?`,
    )
    for (const r of results) {
      update.run(r.state, r.response, r.remoteHost ?? null, r.nextAttemptAt ?? now, now, r.category ?? null, r.rowId, queueId)
    }
    if (bounce) this.enqueue(bounce)
    if (suppress?.length) this.suppress(suppress, now)
    const pending = this.stmt(`SELECT COUNT(*) AS n FROM recipients WHERE message_id = ? AND ${PENDING}`).get(queueId) as { n: number }
    if (pending.n > 0) return { finished: false }
    const m = this.stmt(`SELECT body_file FROM messages WHERE id = ?`).get(queueId) as { body_file: string | null } | undefined
    this.stmt(`DELETE FROM recipients WHERE message_id = ?`).run(queueId)
    this.stmt(`DELETE FROM messages WHERE id = ?`).run(queueId)
    return { finished: true, bodyFile: m?.body_file ?? undefined }
  }

  recover(now: number): number {
    return this.stmt(`UPDATE recipients SET next_attempt = ?, leased = 0 WHERE leased = 1 AND ${PENDING}`).run(now).changes
  }

  list(): QueueEntry[] {
    const messages = this.db
      .prepare(`SELECT id, message_id, sender, size, received_at FROM messages ORDER BY received_at, id`)
      .all() as Pick<MessageRow, 'id' | 'message_id' | 'sender' | 'size' | 'received_at'>[]
    const recipients = this.db
      .prepare(`SELECT message_id, address, state, attempts, next_attempt, last_response${this.version >= 2 ? ', category' : ''} FROM recipients ORDER BY id`)
      .all() as RecipientRow[]
    const byMessage = new Map<string, RecipientRow[]>()
    for (const r of recipients) byMessage.set(r.message_id, [...(byMessage.get(r.message_id) ?? []), r])
    return messages.map((m) => ({
      id: m.id,
      messageId: m.message_id ?? undefined,
      sender: m.sender,
      size: m.size,
      receivedAt: m.received_at,
      recipients: (byMessage.get(m.id) ?? []).map((r) => ({
        address: r.address,
        state: r.state,
        attempts: r.attempts,
        nextAttemptAt: r.state === 'queued' || r.state === 'deferred' ? r.next_attempt : undefined,
        lastResponse: r.last_response ?? undefined,
        category: r.category ?? undefined,
      })),
    }))
  }

  isSuppressed(address: string, now: number): Suppression | undefined {
    const row = this.stmt(`SELECT * FROM suppressions WHERE address = ? AND (expires_at IS NULL OR expires_at > ?)`).get(address.toLowerCase(), now) as
      | SuppressionRow
      | undefined
    return row && toSuppression(row)
  }

  suppress(entries: Suppression[], now: number): void {
    // Expired entries go whenever new ones come (an indexed delete).
    this.stmt(`DELETE FROM suppressions WHERE expires_at IS NOT NULL AND expires_at <= ?`).run(now)
    const upsert = this.stmt(
      `INSERT INTO suppressions (address, reason, source, created_at, expires_at) VALUES (?,?,?,?,?)
       ON CONFLICT(address) DO UPDATE SET reason = excluded.reason, source = excluded.source, created_at = excluded.created_at, expires_at = excluded.expires_at`,
    )
    for (const e of entries) upsert.run(e.address.toLowerCase(), e.reason, e.source ?? null, e.createdAt, e.expiresAt ?? null)
  }

  unsuppress(address: string): boolean {
    return this.stmt(`DELETE FROM suppressions WHERE address = ?`).run(address.toLowerCase()).changes > 0
  }

  listSuppressed(now: number): Suppression[] {
    if (this.version < 2) return []
    const rows = this.db
      .prepare(`SELECT * FROM suppressions WHERE expires_at IS NULL OR expires_at > ? ORDER BY created_at, address`)
      .all(now) as SuppressionRow[]
    return rows.map(toSuppression)
  }

  delayCandidates(receivedBefore: number, limit: number): DelayCandidate[] {
    const messages = this.stmt(
      `SELECT id, sender, sender_args, message_id, size, headers, received_at, expires_at, meta FROM messages m
       WHERE delay_notified_at IS NULL AND received_at <= ?
         AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = 'deferred')
       ORDER BY received_at LIMIT ?`,
    ).all(receivedBefore, limit) as MessageRow[]
    const recipients = this.stmt(
      `SELECT id, address, args, last_response, remote_host, category FROM recipients WHERE message_id = ? AND state = 'deferred' ORDER BY id`,
    )
    return messages.map((m) => {
      const { body: _body, ...message } = toMessage({ ...m, body: null, body_file: null })
      return {
        message,
        recipients: (recipients.all(m.id) as RecipientRow[]).map((r) => ({
          rowId: r.id,
          address: r.address,
          args: parse(r.args),
          lastResponse: r.last_response ?? undefined,
          remoteHost: r.remote_host ?? undefined,
          category: r.category ?? undefined,
        })),
      }
    })
  }

  markDelayNotified(queueId: string, dsn: NewMessage | undefined, now: number): boolean {
    const marked = this.stmt(`UPDATE messages SET delay_notified_at = ? WHERE id = ? AND delay_notified_at IS NULL`).run(now, queueId).changes > 0
    if (marked && dsn) this.enqueue(dsn)
    return marked
  }

  bodyFiles(): string[] {
    return (this.db.prepare(`SELECT body_file FROM messages WHERE body_file IS NOT NULL`).all() as { body_file: string }[]).map((r) => r.body_file)
  }

  close(): void {
    this.db.close()
  }
}

function toMessage(m: MessageRow): Job['message'] {
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

/** Prepared statements, made once per SQL text. */
function cache(store: SqliteStore) {
  const statements = new Map<string, Database.Statement>()
  return (sql: string): Database.Statement => {
    let s = statements.get(sql)
    if (!s) statements.set(sql, (s = store.db.prepare(sql)))
    return s
  }
}
