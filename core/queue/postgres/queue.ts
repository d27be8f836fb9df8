// Cluster mode: every node shares one PostgreSQL queue. Claims lease rows with FOR UPDATE SKIP
// LOCKED, so nodes never take the same work; a lease moves the work's next attempt to the lease's
// expiry, so a dead node's work becomes due again for the others on its own.
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import { Readable } from 'node:stream'
import pg from 'pg'
import type { Logger } from 'pino'
import type {
  ClaimOptions, ClaimResult, Complaint, ComplaintResult, CompleteResult, DelayCandidate, HeartbeatResult, Job, MessageDetail, NewMessage, Queue,
  QueueEntry, QueueFilter, QueuedMessage, QueueSummary, RecipientResult, RecipientState, StatsRow, Suppression,
} from '../types.js'
import type { BounceCategory } from '../../hooks/types.js'
import { migrate, quoteSchema } from './schema.js'
import { readChunks, writeBufferChunks, writeFileChunks } from './body.js'
import { GroupCommit } from './batch.js'
import { insertGenerated, insertMessages, newRow, type NewRow } from './insert.js'
import { completeMany, type CompleteItem } from './complete.js'
import { upsertSuppressions } from './suppressions.js'
import { bareMessageId, domainOf, HOUR, INLINE_MAX, PENDING } from './sql.js'
import { toSuppression, type SuppressionRow } from '../suppression-row.js'

/**
 * Group commit: up to 200 enqueues (or completes, or look-ups) in one statement or transaction;
 * one batch of each kind at a time per node, so the next fills while one waits for its fsync.
 * (Measured: two at a time gave smaller batches and less throughput.)
 */
const BATCH = { maxBatch: 200, maxInFlight: 1 }

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


const orUndefined = <T>(v: T | null | undefined): T | undefined => (v == null ? undefined : v)

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
  /** Small-bodied enqueues, written many to a statement. */
  private readonly enqueues = new GroupCommit<NewRow, number[]>(async (rows) => {
    await this.ready
    return insertMessages(this.pool, this.s, this.nodeId, rows)
  }, BATCH)
  private readonly completes = new GroupCommit<CompleteItem, boolean>(
    (items) => this.session((c) => completeMany(c, this.s, this.nodeId, items, Date.now(), (lost) => this.lostResults(lost)), true),
    BATCH,
  )
  /** Heartbeats go through a connection of their own, so busy delivery work never delays them. */
  private beats: pg.Pool | undefined
  private readonly url: string
  /** Suppression look-ups (one per RCPT), many addresses to a query. */
  private readonly lookups = new GroupCommit<string, Suppression | undefined>(async (addresses) => {
    await this.ready
    const { rows } = await this.pool.query<SuppressionRow>({
      name: `relay-suppressed-${this.s}`,
      text: `SELECT * FROM ${this.s}.suppressions WHERE address = ANY($1::text[]) AND (expires_at IS NULL OR expires_at > $2)`,
      values: [addresses, Date.now()],
    })
    const found = new Map(rows.map((r) => [r.address, toSuppression(r)]))
    return addresses.map((a) => found.get(a))
  }, BATCH)

  constructor(o: PgQueueOptions) {
    this.s = quoteSchema(o.schema)
    this.url = o.url
    this.nodeId = o.nodeId
    this.retention = o.retention ?? 30 * 86_400_000
    this.log = o.log
    // Pipelined: a transaction's statements go out together, not one round trip each (complete.ts).
    this.pool = new pg.Pool({ connectionString: durable(o.url), max: o.poolSize, types, connectionTimeoutMillis: 10_000, pipeline: true })
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

  private async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string | pg.QueryConfig, values?: unknown[]): Promise<pg.QueryResult<R>> {
    if (this.closed) throw new Error('queue is closed')
    await this.ready
    return typeof text === 'string' ? this.pool.query<R>(text, values) : this.pool.query<R>(text)
  }

  /** Runs `fn` in one transaction on one connection. */
  private tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.session(async (c) => {
      await c.query('BEGIN')
      const result = await fn(c)
      await c.query('COMMIT')
      return result
    })
  }

  /**
   * Runs `fn` on one connection, for a transaction it begins and commits itself (to send BEGIN and
   * COMMIT along with its statements); whatever it left open is rolled back if it fails.
   * `draining`: a batch accepted before close.
   */
  private async session<T>(fn: (c: pg.PoolClient) => Promise<T>, draining = false): Promise<T> {
    if (this.closed && !draining) throw new Error('queue is closed')
    await this.ready
    const client = await this.pool.connect()
    let broken: Error | undefined
    try {
      return await fn(client)
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
    if (this.closed) throw new Error('queue is closed')
    if ('inline' in b && b.inline.length <= INLINE_MAX) return this.enqueues.add(newRow(message, leaseUntil, b.inline, null))

    // Large bodies go into body_chunks in a transaction of their own, a chunk at a time.
    let stored = 0
    const rowIds = await this.tx(async (c) => {
      if ('file' in b) {
        // The row first (chunks reference it), then the chunks, then its size.
        const [ids] = await insertMessages(c, this.s, this.nodeId, [newRow(message, leaseUntil, null, 0)])
        stored = await writeFileChunks(c, this.s, message.id, b.file)
        await c.query(`UPDATE ${this.s}.messages SET body_size = $2 WHERE id = $1`, [message.id, stored])
        return ids
      }
      stored = b.inline.length
      const [ids] = await insertMessages(c, this.s, this.nodeId, [newRow(message, leaseUntil, null, stored)])
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

  // --- delivery ---------------------------------------------------------------------------

  async claim(o: ClaimOptions): Promise<ClaimResult> {
    const domains = Object.keys(o.inFlight)
    const full = domains.filter((d) => (o.inFlight[d] ?? 0) >= o.perDomain)
    // One statement: lock due rows other nodes have not locked, group them into jobs (one per
    // message and domain, in due order) within `limit` and `perDomain`, lease the chosen ones.
    // Rows looked at but not chosen are unlocked when the statement ends. The same statement tells
    // when the next pending work is due (a lease moves it to the lease's expiry), on a row of its
    // own when no job was claimed.
    const { rows } = await this.query<MessageRow & { next_due: number | null; domain: string | null; taken_over: number | null; recipients: { rowId: number; address: string; attempts: number; args: Record<string, string | boolean> | null }[] }>({
      // Prepared once per connection: it runs after every delivery.
      name: `relay-claim-${this.s}`,
      text: `WITH cand AS MATERIALIZED (
         SELECT r.id, r.message_id, r.domain, r.next_attempt, r.leased_by FROM ${this.s}.recipients r
         WHERE r.${PENDING} AND r.next_attempt <= $1 AND r.domain <> ALL($2::text[])
           AND NOT EXISTS (SELECT 1 FROM ${this.s}.messages h WHERE h.id = r.message_id AND h.held_at IS NOT NULL)
         ORDER BY r.next_attempt, r.id
         LIMIT $3
         FOR UPDATE OF r SKIP LOCKED
       ),
       pos AS (SELECT id, message_id, domain, leased_by, row_number() OVER (ORDER BY next_attempt, id) AS n FROM cand),
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
         -- p.leased_by is the owner before this lease: set while due means its lease ran out.
         RETURNING r.id, r.message_id, r.domain, r.address, r.args, r.attempts, c.first, p.leased_by AS prev_owner
       ),
       jobs AS (
         SELECT message_id, domain, min(first) AS first, (count(*) FILTER (WHERE prev_owner IS NOT NULL))::int AS taken_over,
                json_agg(json_build_object('rowId', id, 'address', address, 'attempts', attempts, 'args', args) ORDER BY id) AS recipients
         FROM leased GROUP BY message_id, domain
       ),
       next AS (
         -- The statement sees the rows as they were before its lease: leased rows count at the lease's expiry.
         SELECT least(
           (SELECT min(r.next_attempt) FROM ${this.s}.recipients r
            WHERE r.${PENDING} AND NOT EXISTS (SELECT 1 FROM leased l WHERE l.id = r.id)
              AND NOT EXISTS (SELECT 1 FROM ${this.s}.messages h WHERE h.id = r.message_id AND h.held_at IS NOT NULL)),
           (SELECT $8::bigint WHERE EXISTS (SELECT 1 FROM leased))
         ) AS next_due
       )
       SELECT n.next_due, m.*, j.domain, j.taken_over, j.recipients
       FROM next n LEFT JOIN (jobs j JOIN ${this.s}.messages m ON m.id = j.message_id) ON true
       ORDER BY j.first`,
      values: [
        o.now, full, Math.min(Math.max(o.limit, 0) * 8, 5000),
        domains, domains.map((d) => o.inFlight[d] ?? 0), o.perDomain, Math.max(o.limit, 0),
        o.now + o.leaseMs, this.nodeId,
      ],
    })
    const jobs: Job[] = rows.filter((row) => row.domain !== null).map((row) => ({
      domain: row.domain!,
      message: toMessage(row),
      recipients: row.recipients.map((r) => ({ rowId: r.rowId, address: r.address, attempts: r.attempts, args: orUndefined(r.args) })),
    }))
    return { jobs, nextDueAt: orUndefined(rows[0]?.next_due), takenOver: rows.reduce((n, row) => n + (row.taken_over ?? 0), 0) }
  }

  async complete(queueId: string, results: RecipientResult[], bounce?: NewMessage, suppress?: Suppression[]): Promise<CompleteResult> {
    if (this.closed) throw new Error('queue is closed')
    // Checked here, so a bad bounce fails this caller only, not the batch it would join.
    if (bounce && !('inline' in bounce.body)) throw new Error('queue: generated messages carry their body inline')
    const finished = await this.completes.add({ queueId, results, bounce, suppress })
    this.prune(Date.now())
    return { finished }
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

  /** Results of attempts whose recipients another node took over while this one was taken for dead. */
  private lostResults(items: CompleteItem[]): void {
    this.log?.warn(
      { messages: items.map((i) => i.queueId), recipients: items.reduce((n, i) => n + i.results.length, 0) },
      'queue: results not recorded: another node took these recipients over (this node was declared dead, or they already had a result); its attempt decides',
    )
  }

  async heartbeat(now: number, deadAfterMs: number): Promise<HeartbeatResult> {
    if (this.closed) throw new Error('queue is closed')
    await this.ready
    this.beats ??= this.beatPool()
    // One statement, on the database's clock: this node's beat, the nodes silent for longer than
    // deadAfter (removed: only one live node takes each over), and their pending leased work made
    // due now. Leases stay marked with the dead holder, so the claim that takes them counts them
    // as taken over. Rows are locked in id order, as complete locks them.
    const { rows } = await this.beats.query<{ was_missing: boolean; dead: HeartbeatResult['dead'] | null }>({
      name: `relay-heartbeat-${this.s}`,
      text: `WITH clock AS MATERIALIZED (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS t),
       beat AS (
         INSERT INTO ${this.s}.nodes AS n (node_id, beat_at, started_at) SELECT $1, t, t FROM clock
         ON CONFLICT (node_id) DO UPDATE SET beat_at = excluded.beat_at
         RETURNING (n.xmax = 0) AS inserted
       ),
       dead AS (
         DELETE FROM ${this.s}.nodes d USING clock WHERE d.node_id <> $1 AND d.beat_at < clock.t - $2::bigint
         RETURNING d.node_id, clock.t - d.beat_at AS silent
       ),
       held AS (
         SELECT r.id FROM ${this.s}.recipients r JOIN dead ON r.leased_by = dead.node_id
         WHERE r.${PENDING} ORDER BY r.id FOR UPDATE OF r
       ),
       released AS (
         UPDATE ${this.s}.recipients r SET next_attempt = least(r.next_attempt, $3), lease_until = least(r.lease_until, $3)
         FROM held WHERE r.id = held.id
         RETURNING r.leased_by
       )
       SELECT (SELECT inserted FROM beat) AS was_missing,
         (SELECT json_agg(json_build_object('nodeId', d.node_id, 'silentMs', d.silent,
                                            'recipients', (SELECT count(*) FROM released x WHERE x.leased_by = d.node_id)) ORDER BY d.node_id)
          FROM dead d) AS dead`,
      values: [this.nodeId, Math.max(0, Math.round(deadAfterMs)), now],
    })
    return { wasMissing: rows[0]?.was_missing ?? false, dead: rows[0]?.dead ?? [] }
  }

  private beatPool(): pg.Pool {
    // A beat that cannot finish well within deadAfter is no beat: time limits on both sides.
    const pool = new pg.Pool({
      connectionString: durable(this.url), max: 1, types, connectionTimeoutMillis: 10_000, statement_timeout: 10_000, query_timeout: 15_000, keepAlive: true,
    })
    pool.on('error', (err) => this.log?.warn({ err }, 'queue: PostgreSQL heartbeat connection lost'))
    return pool
  }

  async recover(now: number): Promise<number> {
    // Rows locked in id order, as a heartbeat taking this node over at the same moment locks them.
    const { rowCount } = await this.query(
      `UPDATE ${this.s}.recipients SET next_attempt = $1, leased_by = NULL, lease_until = NULL
       WHERE id IN (SELECT id FROM ${this.s}.recipients WHERE leased_by = $2 AND ${PENDING} ORDER BY id FOR UPDATE)`,
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
    if (this.closed) throw new Error('queue is closed')
    return this.lookups.add(address.toLowerCase())
  }

  async suppress(entries: Suppression[]): Promise<void> {
    if (!entries.length) return
    await this.tx((c) => upsertSuppressions(c, this.s, entries, Date.now()))
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
      if (marked && dsn) await insertGenerated(c, this.s, this.nodeId, [dsn])
      return marked
    })
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.ready.catch(() => undefined)
    // What callers handed in before close is still written.
    await Promise.all([this.enqueues.idle(), this.completes.idle(), this.lookups.idle()])
    await Promise.all([this.pool.end(), this.beats?.end()])
  }
}
