import Database from 'better-sqlite3'
import type {
  AttemptRecord,
  ClaimOptions,
  ClaimResult,
  Complaint,
  ComplaintResult,
  DelayCandidate,
  Job,
  MessageDetail,
  NewMessage,
  QueueEntry,
  QueueFilter,
  QueueSummary,
  RecipientResult,
  RecipientState,
  StatsRow,
  Suppression,
} from '../types.js'
import type { BounceCategory } from '../../hooks/types.js'
import { toSuppression, type SuppressionRow } from '../suppression-row.js'

const PENDING = `state IN ('queued','deferred')`
/** For a query on recipients: its message is not held (a primary-key lookup per row). */
const NOT_HELD = `NOT EXISTS (SELECT 1 FROM messages h WHERE h.id = recipients.message_id AND h.held_at IS NOT NULL)`
/** Not leased by a delivery running now (an expired lease is work left by a dead process). */
const NOT_IN_FLIGHT = `(leased = 0 OR next_attempt <= ?)`

/** Schema versions in order; append, never edit (exported for tests that build an older database). */
export const MIGRATIONS: readonly string[] = [
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
  // Operations and reputation: messages held by an operator, each attempt's result per recipient
  // (kept while the message is queued), hourly counters per sending and destination domain, and the
  // log of messages sent (kept \`retention\`) that feedback-loop complaints are matched against.
  `ALTER TABLE messages ADD COLUMN held_at INTEGER;
   CREATE INDEX messages_held ON messages(held_at) WHERE held_at IS NOT NULL;
   CREATE TABLE attempts (
     id INTEGER PRIMARY KEY,
     recipient_id INTEGER NOT NULL,
     message_id TEXT NOT NULL,
     at INTEGER NOT NULL,
     state TEXT NOT NULL,
     response TEXT NOT NULL,
     remote_host TEXT,
     category TEXT
   );
   CREATE INDEX attempts_message ON attempts(message_id);
   CREATE TABLE stats (
     hour INTEGER NOT NULL,
     sender_domain TEXT NOT NULL,
     dest_domain TEXT NOT NULL,
     outcome TEXT NOT NULL,
     category TEXT NOT NULL,
     count INTEGER NOT NULL,
     PRIMARY KEY (hour, sender_domain, dest_domain, outcome, category)
   ) WITHOUT ROWID;
   CREATE TABLE sent_log (
     queue_id TEXT PRIMARY KEY,
     message_id TEXT,
     sender TEXT NOT NULL,
     sender_domain TEXT NOT NULL,
     received_at INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX sent_log_message ON sent_log(message_id) WHERE message_id IS NOT NULL;
   CREATE INDEX sent_log_received ON sent_log(received_at);`,
]

const HOUR = 3_600_000
const hourOf = (t: number) => Math.floor(t / HOUR) * HOUR
/** The domain of an address, lower case ('' when it has none). */
const domainOf = (address: string | undefined) => {
  const a = (address ?? '').trim().replace(/^<|>$/g, '')
  const at = a.lastIndexOf('@')
  return at < 0 ? '' : a.slice(at + 1).toLowerCase()
}
/** A Message-ID as the sent log keeps it: without angle brackets. */
const bareMessageId = (id: string | undefined) => {
  const bare = (id ?? '').trim().replace(/^<|>$/g, '').trim()
  return bare || null
}

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
  held_at?: number | null
  delay_notified_at?: number | null
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
  leased?: number
  last_response: string | null
  remote_host: string | null
  category: BounceCategory | null
}


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
    // The sent log, for matching complaints later (not for bounces: nobody complains to the null sender).
    if (m.sender !== '') {
      this.stmt(`INSERT OR REPLACE INTO sent_log (queue_id, message_id, sender, sender_domain, received_at) VALUES (?,?,?,?,?)`).run(
        m.id, bareMessageId(m.messageId), m.sender, domainOf(m.sender), m.receivedAt,
      )
    }
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
        `SELECT id, message_id, address, domain, args, attempts, leased FROM recipients
         WHERE ${PENDING} AND next_attempt <= ? AND ${NOT_HELD} ${full.length ? `AND domain NOT IN (${full.map(() => '?').join(',')})` : ''}
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
    let takenOver = 0
    const messages = new Map<string, MessageRow | undefined>()
    for (const job of jobs.values()) {
      if (!messages.has(job.messageId)) messages.set(job.messageId, getMessage.get(job.messageId) as MessageRow | undefined)
      const m = messages.get(job.messageId)
      if (!m) continue
      for (const row of job.rows) {
        // Still marked leased while due: its lease ran out without a result (recover() clears the
        // marks of a process that restarted, so what is left belonged to one that died or hung).
        if (row.leased) takenOver++
        lease.run(o.now + o.leaseMs, row.id)
      }
      result.push({
        domain: job.domain,
        message: toMessage(m),
        recipients: job.rows.map((r) => ({ rowId: r.id, address: r.address, attempts: r.attempts, args: parse(r.args) })),
      })
    }
    // ORDER BY + LIMIT walks the due index and stops at the first message not held (MIN() would scan).
    const next = this.stmt(`SELECT next_attempt AS t FROM recipients WHERE ${PENDING} AND ${NOT_HELD} ORDER BY next_attempt LIMIT 1`).get() as { t: number } | undefined
    return { jobs: result, nextDueAt: next?.t, takenOver }
  }

  /** Returns the body file to remove when the message has left the queue. */
  complete(queueId: string, results: RecipientResult[], bounce: NewMessage | undefined, now: number, suppress?: Suppression[]): { finished: boolean; bodyFile?: string } {
    const update = this.stmt(
      `UPDATE recipients SET state = ?, attempts = attempts + 1, last_response = ?, remote_host = ?, next_attempt = ?, leased = 0, updated_at = ?, category = ?
       WHERE id = ? AND message_id = ? RETURNING domain`,
    )
    const history = this.stmt(`INSERT INTO attempts (recipient_id, message_id, at, state, response, remote_host, category) VALUES (?,?,?,?,?,?,?)`)
    const m = this.stmt(`SELECT sender, body_file FROM messages WHERE id = ?`).get(queueId) as { sender: string; body_file: string | null } | undefined
    // Bounces from the null sender are no sending domain's reputation.
    const senderDomain = m && m.sender !== '' ? domainOf(m.sender) : undefined
    for (const r of results) {
      const row = update.get(r.state, r.response, r.remoteHost ?? null, r.nextAttemptAt ?? now, now, r.category ?? null, r.rowId, queueId) as { domain: string } | undefined
      if (!row) continue // removed meanwhile (relay queue remove)
      history.run(r.rowId, queueId, now, r.state, r.response, r.remoteHost ?? null, r.category ?? null)
      if (senderDomain !== undefined) this.count(hourOf(now), senderDomain, row.domain, r.state, r.state === 'delivered' ? '' : (r.category ?? ''))
    }
    if (bounce) this.enqueue(bounce)
    if (suppress?.length) this.suppress(suppress, now)
    const pending = this.stmt(`SELECT COUNT(*) AS n FROM recipients WHERE message_id = ? AND ${PENDING}`).get(queueId) as { n: number }
    if (pending.n > 0) return { finished: false }
    this.deleteMessage(queueId)
    return { finished: true, bodyFile: m?.body_file ?? undefined }
  }

  private deleteMessage(queueId: string): void {
    this.stmt(`DELETE FROM attempts WHERE message_id = ?`).run(queueId)
    this.stmt(`DELETE FROM recipients WHERE message_id = ?`).run(queueId)
    this.stmt(`DELETE FROM messages WHERE id = ?`).run(queueId)
  }

  /** Adds one to a reputation counter. */
  private count(hour: number, senderDomain: string, destDomain: string, outcome: StatsRow['outcome'], category: string): void {
    this.stmt(
      `INSERT INTO stats (hour, sender_domain, dest_domain, outcome, category, count) VALUES (?,?,?,?,?,1)
       ON CONFLICT (hour, sender_domain, dest_domain, outcome, category) DO UPDATE SET count = count + 1`,
    ).run(hour, senderDomain, destDomain, outcome, category)
  }

  recover(now: number): number {
    return this.stmt(`UPDATE recipients SET next_attempt = ?, leased = 0 WHERE leased = 1 AND ${PENDING}`).run(now).changes
  }

  list(filter: QueueFilter = {}): QueueEntry[] {
    const held = this.version >= 3 ? 'held_at' : 'NULL'
    const where: string[] = []
    const params: unknown[] = []
    if (filter.state === 'held') where.push(`${held} IS NOT NULL`)
    if (filter.state === 'queued' || filter.state === 'deferred') {
      // Held messages are listed as held only; with a domain: a recipient in that state there.
      where.push(`${held} IS NULL AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = ?${filter.domain !== undefined ? ' AND r.domain = ?' : ''})`)
      params.push(filter.state)
      if (filter.domain !== undefined) params.push(filter.domain)
    } else if (filter.domain !== undefined) {
      where.push(`EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.domain = ?)`)
      params.push(filter.domain)
    }
    if (filter.sender !== undefined) {
      where.push(`lower(sender) = ?`)
      params.push(filter.sender.toLowerCase())
    }
    const limit = filter.limit !== undefined ? ` LIMIT ${Math.max(0, Math.floor(filter.limit))}` : ''
    const messages = this.db
      .prepare(
        `SELECT id, message_id, sender, size, received_at, ${held} AS held_at FROM messages m ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY received_at, id${limit}`,
      )
      .all(...params) as Pick<MessageRow, 'id' | 'message_id' | 'sender' | 'size' | 'received_at' | 'held_at'>[]
    const columns = `message_id, address, state, attempts, next_attempt, last_response${this.version >= 2 ? ', category' : ''}`
    const byMessage = new Map<string, RecipientRow[]>()
    if (where.length || limit) {
      // A narrowed list: each message's recipients by index, not every recipient in the queue.
      const one = this.stmt(`SELECT ${columns} FROM recipients WHERE message_id = ? ORDER BY id`)
      for (const m of messages) byMessage.set(m.id, one.all(m.id) as RecipientRow[])
    } else {
      for (const r of this.db.prepare(`SELECT ${columns} FROM recipients ORDER BY id`).all() as RecipientRow[]) {
        const list = byMessage.get(r.message_id)
        if (list) list.push(r)
        else byMessage.set(r.message_id, [r])
      }
    }
    return messages.map((m) => ({
      id: m.id,
      messageId: m.message_id ?? undefined,
      sender: m.sender,
      size: m.size,
      receivedAt: m.received_at,
      heldAt: m.held_at ?? undefined,
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

  show(queueId: string, now: number): MessageDetail | undefined {
    const m = this.stmt(`SELECT * FROM messages WHERE id = ?`).get(queueId) as MessageRow | undefined
    if (!m) return undefined
    const recipients = this.stmt(`SELECT * FROM recipients WHERE message_id = ? ORDER BY id`).all(queueId) as RecipientRow[]
    const history = new Map<number, AttemptRecord[]>()
    if (this.version >= 3) {
      const rows = this.stmt(`SELECT recipient_id, at, state, response, remote_host, category FROM attempts WHERE message_id = ? ORDER BY at, id`).all(queueId) as {
        recipient_id: number
        at: number
        state: AttemptRecord['state']
        response: string
        remote_host: string | null
        category: BounceCategory | null
      }[]
      for (const a of rows) {
        const list = history.get(a.recipient_id) ?? []
        list.push({ at: a.at, state: a.state, response: a.response, remoteHost: a.remote_host ?? undefined, category: a.category ?? undefined })
        history.set(a.recipient_id, list)
      }
    }
    const pending = (r: RecipientRow) => r.state === 'queued' || r.state === 'deferred'
    return {
      id: m.id,
      messageId: m.message_id ?? undefined,
      sender: m.sender,
      senderArgs: parse(m.sender_args),
      size: m.size,
      receivedAt: m.received_at,
      expiresAt: m.expires_at,
      heldAt: m.held_at ?? undefined,
      meta: JSON.parse(m.meta),
      headers: Buffer.from(m.headers).toString('utf8'),
      recipients: recipients.map((r) => ({
        rowId: r.id,
        address: r.address,
        domain: r.domain,
        args: parse(r.args),
        state: r.state,
        attempts: r.attempts,
        nextAttemptAt: pending(r) ? r.next_attempt : undefined,
        lastResponse: r.last_response ?? undefined,
        category: r.category ?? undefined,
        remoteHost: r.remote_host ?? undefined,
        leased: pending(r) && r.leased === 1 && r.next_attempt > now,
        history: history.get(r.id) ?? [],
      })),
    }
  }

  hold(queueId: string, now: number): boolean {
    if (this.stmt(`UPDATE messages SET held_at = ? WHERE id = ? AND held_at IS NULL`).run(now, queueId).changes > 0) return true
    return this.stmt(`SELECT 1 FROM messages WHERE id = ?`).get(queueId) !== undefined
  }

  release(queueId: string, now: number): boolean {
    if (this.stmt(`UPDATE messages SET held_at = NULL WHERE id = ? AND held_at IS NOT NULL`).run(queueId).changes === 0) return false
    this.stmt(`UPDATE recipients SET next_attempt = ?, leased = 0 WHERE message_id = ? AND ${PENDING} AND ${NOT_IN_FLIGHT}`).run(now, queueId, now)
    return true
  }

  /** Returns the body file to remove, if the message was there. */
  remove(queueId: string): { removed: boolean; bodyFile?: string } {
    const m = this.stmt(`SELECT body_file FROM messages WHERE id = ?`).get(queueId) as { body_file: string | null } | undefined
    if (!m) return { removed: false }
    this.deleteMessage(queueId)
    return { removed: true, bodyFile: m.body_file ?? undefined }
  }

  flush(filter: { queueId?: string; domain?: string }, now: number): number {
    const where = [PENDING, NOT_IN_FLIGHT, NOT_HELD]
    const params: unknown[] = [now, now]
    if (filter.queueId !== undefined) {
      where.push('message_id = ?')
      params.push(filter.queueId)
    }
    if (filter.domain !== undefined) {
      where.push('domain = ?')
      params.push(filter.domain)
    }
    return this.db.prepare(`UPDATE recipients SET next_attempt = ?, leased = 0 WHERE ${where.join(' AND ')}`).run(...params).changes
  }

  summary(_now: number): QueueSummary {
    const totals = this.stmt(`SELECT COUNT(*) AS n, MIN(received_at) AS oldest FROM messages`).get() as { n: number; oldest: number | null }
    const held = this.version >= 3 ? 'm.held_at IS NOT NULL' : '0'
    const rows = this.stmt(
      `SELECT r.domain AS domain, r.state AS state, ${held} AS held, COUNT(*) AS n FROM recipients r JOIN messages m ON m.id = r.message_id
       WHERE r.${PENDING} GROUP BY 1, 2, 3`,
    ).all() as { domain: string; state: 'queued' | 'deferred'; held: number; n: number }[]
    const recipients = { queued: 0, deferred: 0, held: 0 }
    const domains = new Map<string, QueueSummary['domains'][number]>()
    for (const r of rows) {
      const key = r.held ? 'held' : r.state
      recipients[key] += r.n
      const d = domains.get(r.domain) ?? { domain: r.domain, queued: 0, deferred: 0, held: 0 }
      d[key] += r.n
      domains.set(r.domain, d)
    }
    const total = (d: QueueSummary['domains'][number]) => d.queued + d.deferred + d.held
    return {
      messages: totals.n,
      recipients,
      oldestReceivedAt: totals.oldest ?? undefined,
      domains: [...domains.values()].sort((a, b) => total(b) - total(a) || (a.domain < b.domain ? -1 : 1)).slice(0, 20),
    }
  }

  stats(since: number): StatsRow[] {
    if (this.version < 3) return []
    const rows = this.stmt(`SELECT hour, sender_domain, dest_domain, outcome, category, count FROM stats WHERE hour >= ? ORDER BY hour, sender_domain, dest_domain, outcome, category`).all(
      since,
    ) as { hour: number; sender_domain: string; dest_domain: string; outcome: StatsRow['outcome']; category: StatsRow['category']; count: number }[]
    return rows.map((r) => ({ hour: r.hour, senderDomain: r.sender_domain, destDomain: r.dest_domain, outcome: r.outcome, category: r.category, count: r.count }))
  }

  /** Matches by queue id, then Message-ID, in the sent log; else counts against Original-Mail-From's domain. */
  recordComplaint(c: Complaint): ComplaintResult {
    type Sent = { queue_id: string; sender: string; sender_domain: string }
    let sent: Sent | undefined
    const byQueueId = this.stmt(`SELECT queue_id, sender, sender_domain FROM sent_log WHERE queue_id = ?`)
    for (const id of c.queueIds ?? []) {
      sent = byQueueId.get(id) as Sent | undefined
      if (sent) break
    }
    const messageId = bareMessageId(c.messageId)
    if (!sent && messageId) {
      sent = this.stmt(`SELECT queue_id, sender, sender_domain FROM sent_log WHERE message_id = ? ORDER BY received_at DESC LIMIT 1`).get(messageId) as Sent | undefined
    }
    const result: ComplaintResult = sent
      ? { matched: true, queueId: sent.queue_id, sender: sent.sender, senderDomain: sent.sender_domain }
      : { matched: false, senderDomain: domainOf(c.originalMailFrom) }
    this.count(hourOf(c.receivedAt), result.senderDomain, domainOf(c.originalRcptTo), 'complaint', '')
    return result
  }

  /** Drops reputation counters and sent-log entries older than the retention (indexed deletes). */
  prune(now: number, retentionMs: number): void {
    if (this.version < 3) return
    const before = now - retentionMs
    this.stmt(`DELETE FROM stats WHERE hour < ?`).run(hourOf(before))
    this.stmt(`DELETE FROM sent_log WHERE received_at < ?`).run(before)
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
