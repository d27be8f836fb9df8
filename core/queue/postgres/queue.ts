// Cluster mode: every node shares one PostgreSQL queue. Claims lease rows with FOR UPDATE SKIP
// LOCKED, so nodes never take the same work; a lease moves the work's next attempt to the lease's
// expiry, so a dead node's work becomes due again for the others on its own.
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import { Readable } from 'node:stream'
import pg from 'pg'
import type { Logger } from 'pino'
import type {
  ClaimOptions, ClaimResult, Complaint, ComplaintResult, CompleteResult, DelayCandidate, Job, MessageDetail, NewMessage, Queue,
  QueueEntry, QueueFilter, QueuedMessage, QueueSummary, RecipientResult, RecipientState, StatsRow, Suppression,
} from '../types.js'
import type { BounceCategory } from '../../hooks/types.js'
import { migrate, quoteSchema } from './schema.js'
import { readChunks, writeBufferChunks, writeFileChunks } from './body.js'

/** Bodies up to this size go inline in the message row; larger ones into body_chunks. */
const INLINE_MAX = 128 * 1024
const HOUR = 3_600_000
const PENDING = `state IN ('queued','deferred')`

export interface PgQueueOptions {
  url: string
  poolSize: number
  schema: string
  /** This node's identity: leases it takes carry it, and `recover` releases only its own. */
  nodeId: string
  /** How long reputation counters and the sent log are kept (default 30 days). */
  retention?: number
  log?: Logger
}

// int8 (counts, epoch ms, row ids) as numbers: every value here is far below 2^53. Only this
// pool's connections parse so; other pg users in the process keep pg's defaults.
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === 20 && format !== 'binary' ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
}

interface MessageRow {
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

const json = (v: unknown) => (v === undefined || v === null ? null : JSON.stringify(v))
const orUndefined = <T>(v: T | null | undefined): T | undefined => (v == null ? undefined : v)
/** A Message-ID without its angle brackets, as complaints quote it. */
const bareMessageId = (id: string | null | undefined) => (id ? id.trim().replace(/^<(.*)>$/, '$1') : null)
/** The domain of an address, lower case; '' for the null sender or no domain. */
const domainOf = (address: string | undefined) => {
  const at = address?.lastIndexOf('@') ?? -1
  return at >= 0 ? address!.slice(at + 1).toLowerCase() : ''
}

/**
 * The URL with `synchronous_commit=on` for this pool's sessions, whatever the server's default: a
 * 250 is given only once the message's commit is on disk.
 */
function durable(url: string): string {
  try {
    const u = new URL(url)
    const options = u.searchParams.get('options')
    u.searchParams.set('options', `${options ? `${options} ` : ''}-c synchronous_commit=on`)
    return u.toString()
  } catch {
    return url
  }
}

/** A connection URL fit for messages and logs. */
function withoutPassword(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return '(queue.url)'
  }
}

function toMessage(m: MessageRow): QueuedMessage {
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

/** The PostgreSQL queue (`queue.driver: 'postgres'`). Tables live in `queue.schema`, made at start. */
export class PgQueue implements Queue {
  private readonly pool: pg.Pool
  /** Schema-qualified prefix for every table name. */
  private readonly s: string
  private readonly nodeId: string
  private readonly retention: number
  private readonly log: Logger | undefined
  /** The migrations; every call waits for them. */
  readonly ready: Promise<void>
  private closed = false
  private prunedAt = 0

  constructor(o: PgQueueOptions) {
    this.s = quoteSchema(o.schema)
    this.nodeId = o.nodeId
    this.retention = o.retention ?? 30 * 86_400_000
    this.log = o.log
    this.pool = new pg.Pool({ connectionString: durable(o.url), max: o.poolSize, types, connectionTimeoutMillis: 10_000 })
    // An idle connection that breaks (PostgreSQL restarted) must not take the process down; the
    // pool replaces it, and queries in flight fail and are retried by their callers.
    this.pool.on('error', (err) => this.log?.warn({ err }, 'queue: PostgreSQL connection lost'))
    this.ready = migrate(this.pool, o.schema).then(
      () => undefined,
      (err: Error) => {
        throw new Error(`queue: PostgreSQL at ${withoutPassword(o.url)}, schema ${o.schema}: ${err.message}`, { cause: err })
      },
    )
    // Failures surface at the first call; this only keeps an unawaited rejection quiet.
    this.ready.catch(() => undefined)
  }

  private async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    if (this.closed) throw new Error('queue is closed')
    await this.ready
    return this.pool.query<R>(text, values)
  }

  /** Runs `fn` in one transaction on one connection. */
  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    if (this.closed) throw new Error('queue is closed')
    await this.ready
    const client = await this.pool.connect()
    let broken: Error | undefined
    try {
      await client.query('BEGIN')
      const result = await fn(client)
      await client.query('COMMIT')
      return result
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => (broken = e))
      throw err
    } finally {
      client.release(broken)
    }
  }

  // --- taking mail in ---------------------------------------------------------------------

  async enqueue(message: NewMessage, leaseUntil?: number): Promise<number[]> {
    const b = message.body
    if ('stored' in b) throw new Error('queue: enqueue needs the body itself (inline or a spool file)')
    const small = 'inline' in b && b.inline.length <= INLINE_MAX
    if (small) return this.insertMessage(this.pool, message, leaseUntil, b.inline, null)

    let stored = 0
    const rowIds = await this.tx(async (c) => {
      if ('file' in b) {
        // The row first (chunks reference it), then the chunks, then its size.
        const ids = await this.insertMessage(c, message, leaseUntil, null, 0)
        stored = await writeFileChunks(c, this.s, message.id, b.file)
        await c.query(`UPDATE ${this.s}.messages SET body_size = $2 WHERE id = $1`, [message.id, stored])
        return ids
      }
      stored = b.inline.length
      const ids = await this.insertMessage(c, message, leaseUntil, null, stored)
      await writeBufferChunks(c, this.s, message.id, b.inline)
      return ids
    })
    if ('file' in b) {
      // The body is in the database now: drop the spool file, and point the caller's copy (which
      // a delivery from memory may still read) at the stored body.
      message.body = { stored }
      await fsp.rm(b.file, { force: true })
    }
    return rowIds
  }

  /** The message row and its recipient rows in one statement; gives the recipients' row ids in order. */
  private async insertMessage(db: pg.Pool | pg.PoolClient, m: NewMessage, leaseUntil: number | undefined, inline: Buffer | null, bodySize: number | null): Promise<number[]> {
    if (this.closed) throw new Error('queue is closed')
    await this.ready
    const { rows } = await db.query<{ id: number }>(
      `WITH m AS (
         INSERT INTO ${this.s}.messages (id, sender, sender_args, message_id, size, headers, body, body_size, received_at, expires_at, meta, delay_notified_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id
       )
       INSERT INTO ${this.s}.recipients (message_id, address, domain, args, state, next_attempt, leased_by, lease_until, updated_at)
       SELECT m.id, t.address, t.domain, t.args, 'queued', $16, $17, $18, $9
       FROM m, unnest($13::text[], $14::text[], $15::jsonb[]) WITH ORDINALITY AS t(address, domain, args, n)
       ORDER BY t.n
       RETURNING id`,
      [
        m.id, m.sender, json(m.senderArgs), m.messageId ?? null, m.size, m.headers, inline, bodySize, m.receivedAt, m.expiresAt, JSON.stringify(m.meta),
        // No delay warning is ever sent for a message from the null sender.
        m.sender === '' ? 0 : null,
        m.recipients.map((r) => r.address), m.recipients.map((r) => r.domain), m.recipients.map((r) => json(r.args)),
        leaseUntil ?? m.receivedAt, leaseUntil ? this.nodeId : null, leaseUntil ?? null,
      ],
    )
    // Identity values are drawn in the order the rows are inserted (ORDER BY t.n).
    return rows.map((r) => r.id).sort((a, b) => a - b)
  }

  // --- delivery ---------------------------------------------------------------------------

  async claim(o: ClaimOptions): Promise<ClaimResult> {
    const domains = Object.keys(o.inFlight)
    const full = domains.filter((d) => (o.inFlight[d] ?? 0) >= o.perDomain)
    // One statement: lock due rows other nodes have not locked, group them into jobs (one per
    // message and domain, in due order) within `limit` and `perDomain`, lease the chosen ones.
    // Rows looked at but not chosen are unlocked when the statement ends.
    const { rows } = await this.query<MessageRow & { domain: string; recipients: { rowId: number; address: string; attempts: number; args: Record<string, string | boolean> | null }[] }>(
      `WITH cand AS MATERIALIZED (
         SELECT r.id, r.message_id, r.domain, r.next_attempt FROM ${this.s}.recipients r
         WHERE r.${PENDING} AND r.next_attempt <= $1 AND r.domain <> ALL($2::text[])
           AND NOT EXISTS (SELECT 1 FROM ${this.s}.messages h WHERE h.id = r.message_id AND h.held_at IS NOT NULL)
         ORDER BY r.next_attempt, r.id
         LIMIT $3
         FOR UPDATE OF r SKIP LOCKED
       ),
       pos AS (SELECT id, message_id, domain, row_number() OVER (ORDER BY next_attempt, id) AS n FROM cand),
       groups AS (SELECT message_id, domain, min(n) AS first FROM pos GROUP BY message_id, domain),
       ranked AS (SELECT message_id, domain, first, row_number() OVER (PARTITION BY domain ORDER BY first) AS in_domain FROM groups),
       chosen AS (
         SELECT g.message_id, g.domain, g.first FROM ranked g
         LEFT JOIN unnest($4::text[], $5::int[]) AS f(domain, busy) ON f.domain = g.domain
         WHERE coalesce(f.busy, 0) + g.in_domain <= $6
         ORDER BY g.first
         LIMIT $7
       ),
       leased AS (
         UPDATE ${this.s}.recipients r SET next_attempt = $8, leased_by = $9, lease_until = $8
         FROM pos p JOIN chosen c ON c.message_id = p.message_id AND c.domain = p.domain
         WHERE r.id = p.id
         RETURNING r.id, r.message_id, r.domain, r.address, r.args, r.attempts, c.first
       ),
       jobs AS (
         SELECT message_id, domain, min(first) AS first,
                json_agg(json_build_object('rowId', id, 'address', address, 'attempts', attempts, 'args', args) ORDER BY id) AS recipients
         FROM leased GROUP BY message_id, domain
       )
       SELECT m.*, j.domain, j.recipients FROM jobs j JOIN ${this.s}.messages m ON m.id = j.message_id ORDER BY j.first`,
      [
        o.now, full, Math.min(Math.max(o.limit, 0) * 8, 5000),
        domains, domains.map((d) => o.inFlight[d] ?? 0), o.perDomain, Math.max(o.limit, 0),
        o.now + o.leaseMs, this.nodeId,
      ],
    )
    const jobs: Job[] = rows.map((row) => ({
      domain: row.domain,
      message: toMessage(row),
      recipients: row.recipients.map((r) => ({ rowId: r.rowId, address: r.address, attempts: r.attempts, args: orUndefined(r.args) })),
    }))
    return { jobs, nextDueAt: await this.nextDue() }
  }

  /** When the next pending recipient of a message that is not held becomes due (leases included). */
  private async nextDue(): Promise<number | undefined> {
    const { rows } = await this.query<{ t: number | null }>(
      `SELECT min(r.next_attempt) AS t FROM ${this.s}.recipients r
       WHERE r.${PENDING} AND NOT EXISTS (SELECT 1 FROM ${this.s}.messages h WHERE h.id = r.message_id AND h.held_at IS NOT NULL)`,
    )
    return orUndefined(rows[0]?.t)
  }

  async complete(queueId: string, results: RecipientResult[], bounce?: NewMessage, suppress?: Suppression[]): Promise<CompleteResult> {
    const now = Date.now()
    const finished = await this.tx(async (c) => {
      // The message row's lock makes completes of one message (its domains, on several nodes)
      // take turns, so the last one sees every other's result and removes the message.
      const { rows: found } = await c.query<{ sender: string; message_id: string | null }>(
        `SELECT sender, message_id FROM ${this.s}.messages WHERE id = $1 FOR UPDATE`,
        [queueId],
      )
      const m = found[0]
      if (m && results.length) {
        await c.query(
          `WITH r AS (
             SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[])
               AS t(id, state, response, remote_host, next_attempt, category)
           ),
           done AS (
             UPDATE ${this.s}.recipients x SET state = r.state, attempts = x.attempts + 1, last_response = r.response,
               remote_host = r.remote_host, next_attempt = r.next_attempt, leased_by = NULL, lease_until = NULL,
               updated_at = $8, category = r.category
             FROM r WHERE x.id = r.id AND x.message_id = $1
             RETURNING x.id, x.domain, x.state, x.last_response, x.remote_host, x.category
           ),
           history AS (
             INSERT INTO ${this.s}.attempts (recipient_id, at, state, response, remote_host, category)
             SELECT id, $8::bigint, state, last_response, remote_host, category FROM done
           ),
           counted AS (
             INSERT INTO ${this.s}.stats AS st (hour, sender_domain, dest_domain, outcome, category, count)
             SELECT $9::bigint, $10::text, domain, state, CASE WHEN state = 'delivered' THEN '' ELSE coalesce(category, '') END, count(*) FROM done
             WHERE $12::text <> ''
             GROUP BY 3, 4, 5
             ON CONFLICT (hour, sender_domain, dest_domain, outcome, category) DO UPDATE SET count = st.count + excluded.count
           )
           INSERT INTO ${this.s}.sent_log (queue_id, message_id, sender, sender_domain, sent_at)
           SELECT $1, $11::text, $12::text, $10::text, $8::bigint WHERE $12::text <> '' AND EXISTS (SELECT 1 FROM done WHERE state = 'delivered')
           ON CONFLICT (queue_id) DO NOTHING`,
          [
            queueId,
            results.map((r) => r.rowId), results.map((r) => r.state), results.map((r) => r.response),
            results.map((r) => r.remoteHost ?? null), results.map((r) => r.nextAttemptAt ?? now), results.map((r) => r.category ?? null),
            // A bounce (null sender) is no sending domain's reputation, nor a message to complain about.
            now, Math.floor(now / HOUR) * HOUR, domainOf(m.sender), bareMessageId(m.message_id), m.sender,
          ],
        )
      }
      if (bounce) await this.insertNew(c, bounce)
      if (suppress?.length) await this.upsertSuppressions(c, suppress, now)
      if (!m) return true
      const { rowCount } = await c.query(
        `DELETE FROM ${this.s}.messages m WHERE id = $1
         AND NOT EXISTS (SELECT 1 FROM ${this.s}.recipients r WHERE r.message_id = $1 AND r.${PENDING})`,
        [queueId],
      )
      return (rowCount ?? 0) > 0
    })
    this.prune(now)
    return { finished }
  }

  /** A message generated here (bounce, delay warning) inside a transaction: inline body, chunked when large. */
  private async insertNew(c: pg.PoolClient, m: NewMessage): Promise<void> {
    if (!('inline' in m.body)) throw new Error('queue: generated messages carry their body inline')
    if (m.body.inline.length <= INLINE_MAX) {
      await this.insertMessage(c, m, undefined, m.body.inline, null)
      return
    }
    await this.insertMessage(c, m, undefined, null, m.body.inline.length)
    await writeBufferChunks(c, this.s, m.id, m.body.inline)
  }

  /** Drops counters and sent-log entries older than `retention`, at most hourly (indexed deletes). */
  private prune(now: number): void {
    if (now - this.prunedAt < HOUR) return
    this.prunedAt = now
    const cut = now - this.retention
    Promise.all([
      this.query(`DELETE FROM ${this.s}.sent_log WHERE sent_at < $1`, [cut]),
      this.query(`DELETE FROM ${this.s}.stats WHERE hour < $1`, [Math.floor(cut / HOUR) * HOUR]),
    ]).catch((err: unknown) => this.log?.warn({ err }, 'queue: pruning old reputation data failed'))
  }

  async recover(now: number): Promise<number> {
    const { rowCount } = await this.query(
      `UPDATE ${this.s}.recipients SET next_attempt = $1, leased_by = NULL, lease_until = NULL
       WHERE leased_by = $2 AND ${PENDING}`,
      [now, this.nodeId],
    )
    return rowCount ?? 0
  }

  openBody(message: QueuedMessage): Readable {
    const b = message.body
    if ('inline' in b) return Readable.from([b.inline], { objectMode: false })
    if ('file' in b) return fs.createReadStream(b.file)
    if (b.stored === 0) return Readable.from([], { objectMode: false })
    return readChunks(this.pool, this.s, message.id, b.stored)
  }

  // --- operators --------------------------------------------------------------------------

  async list(filter: QueueFilter = {}): Promise<QueueEntry[]> {
    const where: string[] = []
    const values: unknown[] = []
    const param = (v: unknown) => `$${values.push(v)}`
    // Held messages are listed as held only; state and domain together: a recipient in that state at that domain.
    const recipient: string[] = []
    if (filter.state === 'held') where.push(`m.held_at IS NOT NULL`)
    else if (filter.state) {
      where.push(`m.held_at IS NULL`)
      recipient.push(`r.state = ${param(filter.state)}`)
    }
    if (filter.domain !== undefined) recipient.push(`r.domain = ${param(filter.domain.toLowerCase())}`)
    if (recipient.length) where.push(`EXISTS (SELECT 1 FROM ${this.s}.recipients r WHERE r.message_id = m.id AND ${recipient.join(' AND ')})`)
    if (filter.sender !== undefined) where.push(`lower(m.sender) = ${param(filter.sender.toLowerCase())}`)
    const limit = filter.limit !== undefined ? `LIMIT ${param(Math.max(0, filter.limit))}` : ''
    const { rows } = await this.query<{
      id: string; message_id: string | null; sender: string; size: number; received_at: number; held_at: number | null
      recipients: { address: string; state: RecipientState; attempts: number; next_attempt: number; last_response: string | null; category: BounceCategory | null }[] | null
    }>(
      `SELECT m.id, m.message_id, m.sender, m.size, m.received_at, m.held_at,
         (SELECT json_agg(json_build_object('address', r.address, 'state', r.state, 'attempts', r.attempts, 'next_attempt', r.next_attempt,
                                            'last_response', r.last_response, 'category', r.category) ORDER BY r.id)
          FROM ${this.s}.recipients r WHERE r.message_id = m.id) AS recipients
       FROM ${this.s}.messages m ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
       ORDER BY m.received_at, m.id ${limit}`,
      values,
    )
    return rows.map((m) => ({
      id: m.id,
      messageId: orUndefined(m.message_id),
      sender: m.sender,
      size: m.size,
      receivedAt: m.received_at,
      heldAt: orUndefined(m.held_at),
      recipients: (m.recipients ?? []).map((r) => ({
        address: r.address,
        state: r.state,
        attempts: r.attempts,
        nextAttemptAt: r.state === 'queued' || r.state === 'deferred' ? r.next_attempt : undefined,
        lastResponse: orUndefined(r.last_response),
        category: orUndefined(r.category),
      })),
    }))
  }

  async show(queueId: string): Promise<MessageDetail | undefined> {
    const now = Date.now()
    const { rows } = await this.query<MessageRow & {
      recipients: {
        id: number; address: string; domain: string; args: Record<string, string | boolean> | null; state: RecipientState; attempts: number
        next_attempt: number; lease_until: number | null; last_response: string | null; remote_host: string | null; category: BounceCategory | null
        history: { at: number; state: 'delivered' | 'deferred' | 'bounced'; response: string; remote_host: string | null; category: BounceCategory | null }[] | null
      }[] | null
    }>(
      `SELECT m.id, m.sender, m.sender_args, m.message_id, m.size, m.headers, m.received_at, m.expires_at, m.meta, m.held_at,
         (SELECT json_agg(json_build_object(
                   'id', r.id, 'address', r.address, 'domain', r.domain, 'args', r.args, 'state', r.state, 'attempts', r.attempts,
                   'next_attempt', r.next_attempt, 'lease_until', r.lease_until, 'last_response', r.last_response,
                   'remote_host', r.remote_host, 'category', r.category,
                   'history', (SELECT json_agg(json_build_object('at', a.at, 'state', a.state, 'response', a.response,
                                                                 'remote_host', a.remote_host, 'category', a.category) ORDER BY a.id)
                               FROM ${this.s}.attempts a WHERE a.recipient_id = r.id)) ORDER BY r.id)
          FROM ${this.s}.recipients r WHERE r.message_id = m.id) AS recipients
       FROM ${this.s}.messages m WHERE m.id = $1`,
      [queueId],
    )
    const m = rows[0]
    if (!m) return undefined
    return {
      id: m.id,
      messageId: orUndefined(m.message_id),
      sender: m.sender,
      senderArgs: orUndefined(m.sender_args),
      size: m.size,
      receivedAt: m.received_at,
      expiresAt: m.expires_at,
      heldAt: orUndefined(m.held_at),
      meta: m.meta,
      headers: m.headers.toString('utf8'),
      recipients: (m.recipients ?? []).map((r) => {
        const pending = r.state === 'queued' || r.state === 'deferred'
        return {
          rowId: r.id,
          address: r.address,
          domain: r.domain,
          args: orUndefined(r.args),
          state: r.state,
          attempts: r.attempts,
          nextAttemptAt: pending ? r.next_attempt : undefined,
          lastResponse: orUndefined(r.last_response),
          category: orUndefined(r.category),
          remoteHost: orUndefined(r.remote_host),
          leased: pending && r.lease_until != null && r.lease_until > now,
          history: (r.history ?? []).map((a) => ({
            at: a.at,
            state: a.state,
            response: a.response,
            remoteHost: orUndefined(a.remote_host),
            category: orUndefined(a.category),
          })),
        }
      }),
    }
  }

  async hold(queueId: string): Promise<boolean> {
    const { rowCount } = await this.query(`UPDATE ${this.s}.messages SET held_at = coalesce(held_at, $2) WHERE id = $1`, [queueId, Date.now()])
    return (rowCount ?? 0) > 0
  }

  async release(queueId: string, now: number): Promise<boolean> {
    // Pending recipients become due, except one a delivery holds right now (it reports itself).
    const { rows } = await this.query<{ n: number }>(
      `WITH m AS (UPDATE ${this.s}.messages SET held_at = NULL WHERE id = $1 AND held_at IS NOT NULL RETURNING id),
       due AS (
         UPDATE ${this.s}.recipients SET next_attempt = $2, leased_by = NULL, lease_until = NULL
         WHERE message_id IN (SELECT id FROM m) AND ${PENDING} AND (lease_until IS NULL OR lease_until <= $2)
       )
       SELECT count(*) AS n FROM m`,
      [queueId, now],
    )
    return (rows[0]?.n ?? 0) > 0
  }

  async remove(queueId: string): Promise<boolean> {
    // Recipients, attempts and body chunks go with it (ON DELETE CASCADE).
    const { rowCount } = await this.query(`DELETE FROM ${this.s}.messages WHERE id = $1`, [queueId])
    return (rowCount ?? 0) > 0
  }

  async flush(filter: { queueId?: string; domain?: string }, now: number): Promise<number> {
    const values: unknown[] = [now]
    const param = (v: unknown) => `$${values.push(v)}`
    const where = [
      `r.${PENDING}`,
      `r.next_attempt > $1`,
      // Not what a delivery holds right now.
      `(r.lease_until IS NULL OR r.lease_until <= $1)`,
      `NOT EXISTS (SELECT 1 FROM ${this.s}.messages h WHERE h.id = r.message_id AND h.held_at IS NOT NULL)`,
    ]
    if (filter.queueId !== undefined) where.push(`r.message_id = ${param(filter.queueId)}`)
    if (filter.domain !== undefined) where.push(`r.domain = ${param(filter.domain.toLowerCase())}`)
    const { rowCount } = await this.query(`UPDATE ${this.s}.recipients r SET next_attempt = $1 WHERE ${where.join(' AND ')}`, values)
    return rowCount ?? 0
  }

  async summary(_now: number): Promise<QueueSummary> {
    const [totals, byDomain] = await Promise.all([
      this.query<{ messages: number; oldest: number | null }>(`SELECT count(*) AS messages, min(received_at) AS oldest FROM ${this.s}.messages`),
      this.query<{ domain: string; state: 'queued' | 'deferred'; held: boolean; n: number }>(
        `SELECT r.domain, r.state, m.held_at IS NOT NULL AS held, count(*) AS n
         FROM ${this.s}.recipients r JOIN ${this.s}.messages m ON m.id = r.message_id
         WHERE r.${PENDING} GROUP BY 1, 2, 3`,
      ),
    ])
    const recipients = { queued: 0, deferred: 0, held: 0 }
    const domains = new Map<string, { domain: string; queued: number; deferred: number; held: number }>()
    for (const row of byDomain.rows) {
      const key = row.held ? 'held' : row.state
      recipients[key] += row.n
      let d = domains.get(row.domain)
      if (!d) domains.set(row.domain, (d = { domain: row.domain, queued: 0, deferred: 0, held: 0 }))
      d[key] += row.n
    }
    const total = (d: { queued: number; deferred: number; held: number }) => d.queued + d.deferred + d.held
    return {
      messages: totals.rows[0]?.messages ?? 0,
      recipients,
      oldestReceivedAt: orUndefined(totals.rows[0]?.oldest),
      domains: [...domains.values()].sort((a, b) => total(b) - total(a) || a.domain.localeCompare(b.domain)).slice(0, 20),
    }
  }

  // --- reputation -------------------------------------------------------------------------

  async stats(since: number): Promise<StatsRow[]> {
    const { rows } = await this.query<{ hour: number; sender_domain: string; dest_domain: string; outcome: StatsRow['outcome']; category: StatsRow['category']; count: number }>(
      `SELECT hour, sender_domain, dest_domain, outcome, category, count FROM ${this.s}.stats WHERE hour >= $1
       ORDER BY hour, sender_domain, dest_domain, outcome, category`,
      [since],
    )
    return rows.map((r) => ({ hour: r.hour, senderDomain: r.sender_domain, destDomain: r.dest_domain, outcome: r.outcome, category: r.category, count: r.count }))
  }

  async recordComplaint(complaint: Complaint): Promise<ComplaintResult> {
    const since = complaint.receivedAt - this.retention
    type Sent = { queue_id: string; sender: string; sender_domain: string }
    const find = async (where: string, value: unknown): Promise<Sent | undefined> =>
      (await this.query<Sent>(`SELECT queue_id, sender, sender_domain FROM ${this.s}.sent_log WHERE ${where} AND sent_at >= $2 ORDER BY sent_at DESC LIMIT 1`, [value, since])).rows[0]
    let sent: Sent | undefined
    if (complaint.queueIds?.length) sent = await find(`queue_id = ANY($1::text[])`, complaint.queueIds)
    if (!sent && complaint.messageId) sent = await find(`message_id = $1`, bareMessageId(complaint.messageId))
    if (!sent && complaint.originalMailFrom) sent = await find(`lower(sender) = $1`, complaint.originalMailFrom.toLowerCase())
    const senderDomain = sent ? sent.sender_domain : domainOf(complaint.originalMailFrom)
    // Nothing to count against when no sending domain can be told.
    if (senderDomain) await this.query(
      `INSERT INTO ${this.s}.stats AS st (hour, sender_domain, dest_domain, outcome, category, count) VALUES ($1, $2, $3, 'complaint', '', 1)
       ON CONFLICT (hour, sender_domain, dest_domain, outcome, category) DO UPDATE SET count = st.count + 1`,
      [Math.floor(complaint.receivedAt / HOUR) * HOUR, senderDomain, domainOf(complaint.originalRcptTo)],
    )
    return { matched: !!sent, queueId: sent?.queue_id, sender: sent?.sender, senderDomain }
  }

  // --- suppressions -----------------------------------------------------------------------

  async bodyFiles(): Promise<string[]> {
    // Bodies live in the database; no spool file belongs to a queued message.
    return []
  }

  async isSuppressed(address: string): Promise<Suppression | undefined> {
    const { rows } = await this.query<SuppressionRow>(
      `SELECT * FROM ${this.s}.suppressions WHERE address = $1 AND (expires_at IS NULL OR expires_at > $2)`,
      [address.toLowerCase(), Date.now()],
    )
    return rows[0] && toSuppression(rows[0])
  }

  async suppress(entries: Suppression[]): Promise<void> {
    if (!entries.length) return
    await this.tx((c) => this.upsertSuppressions(c, entries, Date.now()))
  }

  private async upsertSuppressions(c: pg.PoolClient, entries: Suppression[], now: number): Promise<void> {
    // Expired entries go whenever new ones come (an indexed delete).
    await c.query(`DELETE FROM ${this.s}.suppressions WHERE expires_at IS NOT NULL AND expires_at <= $1`, [now])
    // The last entry for an address wins, as one upsert after another would have it.
    const last = new Map(entries.map((e) => [e.address.toLowerCase(), e]))
    const list = [...last.entries()]
    await c.query(
      `INSERT INTO ${this.s}.suppressions (address, reason, source, created_at, expires_at)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
       ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, source = excluded.source, created_at = excluded.created_at, expires_at = excluded.expires_at`,
      [list.map(([a]) => a), list.map(([, e]) => e.reason), list.map(([, e]) => e.source ?? null), list.map(([, e]) => e.createdAt), list.map(([, e]) => e.expiresAt ?? null)],
    )
  }

  async unsuppress(address: string): Promise<boolean> {
    const { rowCount } = await this.query(`DELETE FROM ${this.s}.suppressions WHERE address = $1`, [address.toLowerCase()])
    return (rowCount ?? 0) > 0
  }

  async listSuppressed(): Promise<Suppression[]> {
    const { rows } = await this.query<SuppressionRow>(
      `SELECT * FROM ${this.s}.suppressions WHERE expires_at IS NULL OR expires_at > $1 ORDER BY created_at, address`,
      [Date.now()],
    )
    return rows.map(toSuppression)
  }

  // --- delay warnings ---------------------------------------------------------------------

  async delayCandidates(receivedBefore: number, limit: number): Promise<DelayCandidate[]> {
    const { rows } = await this.query<MessageRow & {
      recipients: { id: number; address: string; args: Record<string, string | boolean> | null; last_response: string | null; remote_host: string | null; category: BounceCategory | null }[]
    }>(
      `SELECT m.id, m.sender, m.sender_args, m.message_id, m.size, m.headers, m.received_at, m.expires_at, m.meta,
         (SELECT json_agg(json_build_object('id', r.id, 'address', r.address, 'args', r.args, 'last_response', r.last_response,
                                            'remote_host', r.remote_host, 'category', r.category) ORDER BY r.id)
          FROM ${this.s}.recipients r WHERE r.message_id = m.id AND r.state = 'deferred') AS recipients
       FROM ${this.s}.messages m
       WHERE m.delay_notified_at IS NULL AND m.received_at <= $1
         AND EXISTS (SELECT 1 FROM ${this.s}.recipients r WHERE r.message_id = m.id AND r.state = 'deferred')
       ORDER BY m.received_at LIMIT $2`,
      [receivedBefore, limit],
    )
    return rows.map((m) => {
      const { body: _body, ...message } = toMessage({ ...m, body: null, body_size: null })
      return {
        message,
        recipients: m.recipients.map((r) => ({
          rowId: r.id,
          address: r.address,
          args: orUndefined(r.args),
          lastResponse: orUndefined(r.last_response),
          remoteHost: orUndefined(r.remote_host),
          category: orUndefined(r.category),
        })),
      }
    })
  }

  async markDelayNotified(queueId: string, dsn?: NewMessage): Promise<boolean> {
    return this.tx(async (c) => {
      const { rowCount } = await c.query(
        `UPDATE ${this.s}.messages SET delay_notified_at = $2 WHERE id = $1 AND delay_notified_at IS NULL`,
        [queueId, Date.now()],
      )
      const marked = (rowCount ?? 0) > 0
      if (marked && dsn) await this.insertNew(c, dsn)
      return marked
    })
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.ready.catch(() => undefined)
    await this.pool.end()
  }
}
