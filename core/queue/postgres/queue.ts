// Cluster mode: every node shares one PostgreSQL queue. Claims lease rows with FOR UPDATE SKIP
// LOCKED, so nodes never take the same work; a lease moves the work's next attempt to the lease's
// expiry, so a dead node's work becomes due again for the others on its own.
// This class holds the connections, the group commits and the queue's life cycle; each concern's
// statements live in a file of their own (claim, operator, reputation, suppressions, delay, heartbeat).
import { randomUUID } from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import { Readable } from 'node:stream'
import type pg from 'pg'
import type { Logger } from 'pino'
import type {
  ClaimOptions, ClaimResult, Complaint, ComplaintResult, CompleteResult, DelayCandidate, HeartbeatResult, MessageDetail, NewMessage, OperatorBounce, OwedDsn, OwedReport, Queue,
  QueueEntry, QueueFilter, QueuedMessage, QueueSummary, RecentAttempt, RecipientResult, StatsRow, Suppression,
} from '../types.js'
import { migrate, quoteSchema } from './schema.js'
import { readChunks, writeBufferChunks, writeFileChunks } from './body.js'
import { GroupCommit } from './batch.js'
import { insertMessages, newRow, type NewRow } from './insert.js'
import { completeMany, type CompleteItem } from './complete.js'
import { beatPool, withoutPassword, workPool } from './pool.js'
import { beat, leave, refuseLiveTwin } from './heartbeat.js'
import { PgOpening, markUnavailable } from './opening.js'
import { HOUR, INLINE_MAX, PENDING, toMessage, type MessageRow, type PgContext } from './sql.js'
import * as claims from './claim.js'
import * as operator from './operator.js'
import * as recent from './recent.js'
import * as reputation from './reputation.js'
import * as suppressions from './suppressions.js'
import * as delay from './delay.js'
import * as owed from './owed.js'

/**
 * Group commit: up to 200 enqueues (or completes, or look-ups) in one statement or transaction;
 * one batch of each kind at a time per node, so the next fills while one waits for its fsync.
 * (Measured: two at a time gave smaller batches and less throughput.)
 */
const BATCH = { maxBatch: 200, maxInFlight: 1 }

export interface PgQueueOptions {
  url: string
  poolSize: number
  /** Longest wait for one statement (default 20 s). */
  queryTimeout?: number
  schema: string
  /** This node's identity: leases it takes carry it, and `recover` releases only its own. */
  nodeId: string
  /** How long reputation counters and the sent log are kept (default 30 days). */
  retention?: number
  /** queue.heartbeat: at start, a record of this node that still beats is another process (refused). */
  heartbeat?: { interval: number; deadAfter: number }
  log?: Logger
}

/** The PostgreSQL queue (`queue.driver: 'postgres'`). Tables live in `queue.schema`, made at start. */
export class PgQueue implements Queue {
  private readonly pool: pg.Pool
  /** Schema-qualified prefix for every table name. */
  private readonly s: string
  private readonly nodeId: string
  private readonly retention: number
  private readonly log: Logger | undefined
  /** The migrations' first attempt (a start waits for it); calls wait for it, or fail at once while the database is unreachable. */
  readonly ready: Promise<void>
  private readonly opening: PgOpening
  private closed = false
  private prunedAt = 0
  /** What the statements in the concern files use: this queue's query and tx. */
  private readonly db: PgContext
  /** Small-bodied enqueues, written many to a statement. */
  private readonly enqueues = new GroupCommit<NewRow, number[]>(async (rows) => {
    await this.opening.whenOpen()
    return insertMessages(this.pool, this.s, this.nodeId, rows)
  }, BATCH)
  private readonly completes = new GroupCommit<CompleteItem, CompleteResult>(
    (items) => this.session((c) => completeMany(c, this.s, this.nodeId, items, Date.now(), (lost) => this.lostResults(lost)), true),
    BATCH,
  )
  /** Heartbeats go through a connection of their own, so busy delivery work never delays them. */
  private beats: pg.Pool | undefined
  private readonly url: string
  /** Suppression look-ups (one per RCPT), many addresses to a query. */
  private readonly lookups = new GroupCommit<string, Suppression | undefined>(async (addresses) => {
    await this.opening.whenOpen()
    return suppressions.lookupSuppressions(this.pool, this.s, addresses)
  }, BATCH)

  private readonly heartbeatSettings: PgQueueOptions['heartbeat']
  /** This process, in its heartbeat record: another process with the same node identity is seen. */
  private readonly instance = randomUUID()

  constructor(o: PgQueueOptions) {
    this.s = quoteSchema(o.schema)
    this.url = o.url
    this.nodeId = o.nodeId
    this.heartbeatSettings = o.heartbeat
    this.retention = o.retention ?? 30 * 86_400_000
    this.log = o.log
    this.pool = workPool(o.url, o.poolSize, o.log, o.queryTimeout ?? 20_000)
    this.db = { s: this.s, nodeId: this.nodeId, query: (text, values) => this.query(text, values), tx: (fn) => this.tx(fn) }
    this.opening = new PgOpening({
      migrate: async () => void (await migrate(this.pool, o.schema)),
      recover: () => this.releaseOwn(Date.now()),
      where: `${withoutPassword(o.url)}, schema ${o.schema}`,
      log: o.log,
    })
    this.ready = this.opening.first
  }

  private async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string | pg.QueryConfig, values?: unknown[]): Promise<pg.QueryResult<R>> {
    if (this.closed) throw new Error('queue is closed')
    await this.opening.whenOpen()
    return this.noted((typeof text === 'string' ? this.pool.query<R>(text, values) : this.pool.query<R>(text)).catch((err: unknown) => Promise.reject(markUnavailable(err))))
  }

  /** When a statement last failed for want of the database, and when one last went through (readiness). */
  private failedAt = 0
  private okAt = 0
  private noted<T>(p: Promise<T>): Promise<T> {
    return p.then(
      (v) => ((this.okAt = Date.now()), v),
      (err: unknown) => {
        if ((err as { kind?: unknown }).kind === 'unavailable') this.failedAt = Date.now()
        throw err
      },
    )
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
    await this.opening.whenOpen()
    const client = await this.noted(this.pool.connect().catch((err: unknown) => Promise.reject(markUnavailable(err))))
    let broken: Error | undefined
    // pg-pool listens for a client's 'error' only while it is idle: a connection lost while it is
    // checked out (PostgreSQL restarted, the network cut) would be an uncaught exception. Its
    // queries fail with it anyway; the client is dropped at release.
    const lost = (err: Error) => void (broken ??= err)
    client.on('error', lost)
    try {
      return await fn(client)
    } catch (err) {
      if (!broken) await client.query('ROLLBACK').catch((e: Error) => (broken = e))
      throw markUnavailable(err)
    } finally {
      client.removeListener('error', lost)
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

  claim(o: ClaimOptions): Promise<ClaimResult> {
    return claims.claim(this.db, o)
  }

  renewLeases(rowIds: number[], until: number): Promise<void> {
    return claims.renewLeases(this.db, rowIds, until)
  }

  async complete(queueId: string, results: RecipientResult[], bounce?: NewMessage, suppress?: Suppression[]): Promise<CompleteResult> {
    if (this.closed) throw new Error('queue is closed')
    // Checked here, so a bad bounce fails this caller only, not the batch it would join.
    if (bounce && !('inline' in bounce.body)) throw new Error('queue: generated messages carry their body inline')
    const done = await this.completes.add({ queueId, results, bounce, suppress })
    this.prune(Date.now())
    return done
  }

  /** Drops counters and sent-log entries older than `retention`, at most hourly. */
  private prune(now: number): void {
    if (now - this.prunedAt < HOUR) return
    this.prunedAt = now
    reputation.pruneOld(this.db, now, this.retention).catch((err: unknown) => this.log?.warn({ err }, 'queue: pruning old reputation data failed'))
    recent.pruneAttempts(this.db, now, this.retention).catch((err: unknown) => this.log?.warn({ err }, 'queue: pruning the attempt log failed'))
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
    await this.opening.whenOpen()
    this.beats ??= beatPool(this.url, this.log)
    // Beats run every interval whatever the load: they keep reachable() current on an idle node.
    return this.noted(beat(this.beats, this.s, this.nodeId, now, deadAfterMs, this.instance).catch((err: unknown) => Promise.reject(markUnavailable(err))))
  }

  async leave(): Promise<void> {
    if (this.closed || !this.opening.isOpen()) return
    await leave(this.pool, this.s, this.nodeId, this.instance)
  }

  async recover(now: number, queueIds?: string[]): Promise<number> {
    // A start while the database cannot be reached: done once it can, before any claim.
    if (!queueIds && (await this.opening.deferRecovery())) return 0
    if (this.closed) throw new Error('queue is closed')
    await this.opening.whenOpen()
    if (!queueIds && this.heartbeatSettings) await refuseLiveTwin(this.pool, this.s, this.nodeId, this.heartbeatSettings, this.log)
    return this.releaseOwn(now, queueIds)
  }

  /** False while the database could not be reached at start, or the last statement (or beat) found it unreachable. */
  reachable(): boolean {
    return this.opening.isOpen() && this.failedAt <= this.okAt
  }

  private async releaseOwn(now: number, queueIds?: string[]): Promise<number> {
    // Rows locked in id order, as a heartbeat taking this node over at the same moment locks them.
    const only = queueIds ? ' AND message_id = ANY($3::text[])' : ''
    const { rowCount } = await this.pool.query(
      `UPDATE ${this.s}.recipients SET next_attempt = $1, leased_by = NULL, lease_until = NULL
       WHERE id IN (SELECT id FROM ${this.s}.recipients WHERE leased_by = $2 AND ${PENDING}${only} ORDER BY id FOR UPDATE)`,
      queueIds ? [now, this.nodeId, queueIds] : [now, this.nodeId],
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

  list(filter: QueueFilter = {}): Promise<QueueEntry[]> {
    return operator.list(this.db, filter)
  }

  show(queueId: string): Promise<MessageDetail | undefined> {
    return operator.show(this.db, queueId)
  }

  async message(queueId: string): Promise<QueuedMessage | undefined> {
    const { rows } = await this.query<MessageRow>(
      `SELECT id, sender, sender_args, message_id, size, headers, body, body_size, received_at, expires_at, meta, held_at FROM ${this.s}.messages WHERE id = $1`,
      [queueId],
    )
    return rows[0] ? toMessage(rows[0]) : undefined
  }

  hold(queueId: string): Promise<boolean> {
    return operator.hold(this.db, queueId)
  }

  release(queueId: string, now: number): Promise<boolean> {
    return operator.release(this.db, queueId, now)
  }

  bounceNow(queueId: string, response: string, mark: OwedDsn, owed: number[], now: number): Promise<OperatorBounce | undefined> {
    return operator.bounceNow(this.db, queueId, response, mark, owed, now)
  }

  remove(queueId: string, unlessInFlightAt?: number): Promise<boolean | 'in-flight'> {
    return operator.remove(this.db, queueId, unlessInFlightAt)
  }

  flush(filter: { queueId?: string; domain?: string }, now: number): Promise<number> {
    return operator.flush(this.db, filter, now)
  }

  applyLifetime(lifetimeMs: number): Promise<number> {
    return operator.applyLifetime(this.db, lifetimeMs)
  }

  summary(now: number): Promise<QueueSummary> {
    return operator.summary(this.db, now)
  }

  recentAttempts(opts: { limit: number; before?: number }): Promise<RecentAttempt[]> {
    return recent.recentAttempts(this.db, opts)
  }

  // --- reputation -------------------------------------------------------------------------

  stats(since: number): Promise<StatsRow[]> {
    return reputation.stats(this.db, since)
  }

  recordComplaint(complaint: Complaint): Promise<ComplaintResult> {
    return reputation.recordComplaint(this.db, complaint, this.retention)
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
    await this.tx((c) => suppressions.upsertSuppressions(c, this.s, entries, Date.now()))
  }

  unsuppress(address: string): Promise<boolean> {
    return suppressions.unsuppress(this.db, address)
  }

  listSuppressed(): Promise<Suppression[]> {
    return suppressions.listSuppressed(this.db)
  }

  // --- delay warnings ---------------------------------------------------------------------

  delayCandidates(receivedBefore: number, limit: number): Promise<DelayCandidate[]> {
    return delay.delayCandidates(this.db, receivedBefore, limit)
  }

  markDelayNotified(queueId: string, dsn?: NewMessage, rowIds?: number[]): Promise<boolean> {
    return delay.markDelayNotified(this.db, queueId, dsn, rowIds)
  }

  // --- owed DSNs (one per message) ---------------------------------------------------------

  owedDsn(queueId: string, now: number): Promise<OwedReport | undefined> {
    return owed.owedDsn(this.db, queueId, now)
  }

  owedDsnMessages(now: number, limit: number): Promise<string[]> {
    return owed.owedDsnMessages(this.db, now, limit)
  }

  sendOwedDsn(queueId: string, rowIds: number[], dsn?: NewMessage): Promise<boolean> {
    if (dsn && !('inline' in dsn.body)) return Promise.reject(new Error('queue: generated messages carry their body inline'))
    return owed.sendOwedDsn(this.db, queueId, rowIds, dsn)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.opening.close()
    await this.ready.catch(() => undefined)
    // What callers handed in before close is still written.
    await Promise.all([this.enqueues.idle(), this.completes.idle(), this.lookups.idle()])
    await Promise.all([this.pool.end(), this.beats?.end()])
  }
}
