import Database from 'better-sqlite3'
import type {
  ClaimOptions,
  ClaimResult,
  Complaint,
  ComplaintResult,
  DelayCandidate,
  MessageDetail,
  NewMessage,
  OperatorBounce,
  OwedDsn,
  OwedReport,
  QueueEntry,
  QueueFilter,
  QueueSummary,
  QueuedMessage,
  RecentAttempt,
  RecipientResult,
  StatsRow,
  Suppression,
} from '../types.js'
import { migrate } from './schema.js'
import { statementCache, type Sqlite } from './sql.js'
import * as delivery from './delivery.js'
import * as operator from './operator.js'
import * as owed from './owed.js'
import * as recent from './recent.js'
import * as reputation from './reputation.js'
import * as suppressions from './suppressions.js'

/**
 * The SQLite queue's tables and statements. Runs inside the queue worker (or read-only in the CLI).
 * Each concern's statements live in a file of their own; this class opens the database and hands it on.
 */
export class SqliteStore {
  readonly db: Database.Database
  private readonly q: Sqlite

  constructor(file: string, { readonly = false } = {}) {
    this.db = new Database(file, { readonly, fileMustExist: readonly })
    this.db.pragma('busy_timeout = 5000')
    if (!readonly) {
      this.db.pragma('journal_mode = WAL')
      // FULL: a commit is on disk before it returns; a 250 must survive power loss, not only a crash.
      this.db.pragma('synchronous = FULL')
      migrate(this.db)
    }
    this.q = { db: this.db, version: this.db.pragma('user_version', { simple: true }) as number, stmt: statementCache(this.db) }
  }

  // --- taking mail in and delivering it -------------------------------------------------------

  enqueue(m: NewMessage, leaseUntil?: number): number[] {
    return delivery.enqueue(this.q, m, leaseUntil)
  }

  claim(o: ClaimOptions): ClaimResult {
    return delivery.claim(this.q, o)
  }

  renewLeases(rowIds: number[], until: number): number {
    return delivery.renewLeases(this.q, rowIds, until)
  }

  /** Returns the body file to remove when the message has left the queue. */
  complete(queueId: string, results: RecipientResult[], bounce: NewMessage | undefined, now: number, suppress?: Suppression[]): { finished: boolean; dsnDue?: boolean; bodyFile?: string } {
    return delivery.complete(this.q, queueId, results, bounce, now, suppress)
  }

  recover(now: number, queueIds?: string[]): number {
    return delivery.recover(this.q, now, queueIds)
  }

  delayCandidates(receivedBefore: number, limit: number): DelayCandidate[] {
    return delivery.delayCandidates(this.q, receivedBefore, limit)
  }

  markDelayNotified(queueId: string, dsn: NewMessage | undefined, now: number, rowIds?: number[]): boolean {
    return delivery.markDelayNotified(this.q, queueId, dsn, now, rowIds)
  }

  bodyFiles(): string[] {
    return delivery.bodyFiles(this.q)
  }

  owedDsn(queueId: string, now: number): OwedReport | undefined {
    return owed.owedDsn(this.q, queueId, now)
  }

  owedDsnMessages(now: number, limit: number): string[] {
    return owed.owedDsnMessages(this.q, now, limit)
  }

  /** Returns whether it was sent, and the body file to remove when the message has left the queue. */
  sendOwedDsn(queueId: string, rowIds: number[], dsn: NewMessage | undefined): { sent: boolean; bodyFile?: string } {
    return owed.sendOwedDsn(this.q, queueId, rowIds, dsn)
  }

  // --- operators ------------------------------------------------------------------------------

  list(filter: QueueFilter = {}): QueueEntry[] {
    return operator.list(this.q, filter)
  }

  show(queueId: string, now: number): MessageDetail | undefined {
    return operator.show(this.q, queueId, now)
  }

  message(queueId: string): QueuedMessage | undefined {
    return operator.message(this.q, queueId)
  }

  hold(queueId: string, now: number): boolean {
    return operator.hold(this.q, queueId, now)
  }

  release(queueId: string, now: number): boolean {
    return operator.release(this.q, queueId, now)
  }

  /** Returns the body file to remove, if the message was there. */
  remove(queueId: string, unlessInFlightAt?: number): { removed: boolean; inFlight?: true; bodyFile?: string } {
    return operator.remove(this.q, queueId, unlessInFlightAt)
  }

  bounceNow(queueId: string, response: string, mark: OwedDsn, owed: number[], now: number): (OperatorBounce & { bodyFile?: string }) | undefined {
    return operator.bounceNow(this.q, queueId, response, mark, owed, now)
  }

  flush(filter: { queueId?: string; domain?: string }, now: number): number {
    return operator.flush(this.q, filter, now)
  }

  applyLifetime(lifetimeMs: number): number {
    return operator.applyLifetime(this.q, lifetimeMs)
  }

  summary(now: number): QueueSummary {
    return operator.summary(this.q, now)
  }

  recentAttempts(opts: { limit: number; before?: number }): RecentAttempt[] {
    return recent.recentAttempts(this.q, opts)
  }

  // --- reputation -----------------------------------------------------------------------------

  stats(since: number): StatsRow[] {
    return reputation.stats(this.q, since)
  }

  recordComplaint(c: Complaint): ComplaintResult {
    return reputation.recordComplaint(this.q, c)
  }

  prune(now: number, retentionMs: number): void {
    reputation.prune(this.q, now, retentionMs)
    recent.pruneAttempts(this.q, now, retentionMs)
  }

  // --- suppressions ---------------------------------------------------------------------------

  isSuppressed(address: string, now: number): Suppression | undefined {
    return suppressions.isSuppressed(this.q, address, now)
  }

  suppress(entries: Suppression[], now: number): void {
    suppressions.suppress(this.q, entries, now)
  }

  unsuppress(address: string): boolean {
    return suppressions.unsuppress(this.q, address)
  }

  listSuppressed(now: number): Suppression[] {
    return suppressions.listSuppressed(this.q, now)
  }

  close(): void {
    this.db.close()
  }
}
