// The queue is the contract between taking mail in (core/smtp) and sending it out (core/delivery).
// Implementations: sqlite/ (embedded default), postgres/ (cluster mode). Callers use only this
// interface; test/queue/contract.ts runs one suite against both so they cannot drift apart.
import type { Readable } from 'node:stream'
import type { BounceCategory } from '../hooks/types.js'
import type { RecipientState, MessageMeta, QueueEntry, QueueFilter, AttemptRecord, MessageDetail, QueueSummary, StatsRow, Complaint, ComplaintResult, Suppression, RecentAttempt } from '../hooks/operator.js'

// What operators see of the queue is part of the public API (core/hooks/operator.ts).
export type { RecipientState, MessageMeta, QueueEntry, QueueFilter, AttemptRecord, MessageDetail, QueueSummary, StatsRow, Complaint, ComplaintResult, Suppression, RecentAttempt }


/**
 * A message body: small ones inline in the queue database; large ones in a spool file (SQLite) or
 * stored by the queue itself in chunks (PostgreSQL: `stored` is the body's size in bytes). Read a
 * body with `Queue.openBody`, whatever its kind.
 */
export type StoredBody = { inline: Buffer } | { file: string } | { stored: number }


export interface NewMessage {
  id: string
  /** '' is the null sender (bounces). */
  sender: string
  senderArgs?: Record<string, string | boolean>
  recipients: { address: string; domain: string; args?: Record<string, string | boolean> }[]
  /** The final header section (bytes). */
  headers: Buffer
  body: StoredBody
  /** Total message size in bytes (headers + body). */
  size: number
  messageId?: string
  receivedAt: number
  /** After this time a failed attempt bounces instead of deferring. */
  expiresAt: number
  meta: MessageMeta
}

export interface QueuedMessage extends Omit<NewMessage, 'recipients'> {}

export interface JobRecipient {
  rowId: number
  address: string
  attempts: number
  args?: Record<string, string | boolean>
}

/** One message's due recipients at one destination domain: one SMTP transaction. */
export interface Job {
  message: QueuedMessage
  domain: string
  recipients: JobRecipient[]
}

export interface RecipientResult {
  rowId: number
  state: 'delivered' | 'deferred' | 'bounced'
  response: string
  remoteHost?: string
  /** For 'deferred': when the next attempt is due (epoch ms). */
  nextAttemptAt?: number
  /** For 'deferred' and 'bounced': the kind of failure. */
  category?: BounceCategory
  /**
   * false: not an attempt at the next hop (a wait at the relay's own route cap): the recipient's
   * attempt count (and so its retry backoff) and the reputation counters stay as they were.
   */
  counted?: boolean
  /** A DSN is owed for this recipient (its NOTIFY asks for one): recorded with the result, sent once per message (`dsnDue`). */
  dsn?: OwedDsn
}

/** What a recipient's owed DSN needs besides its row (address, args, last response, remote host). */
export interface OwedDsn {
  action: 'failed' | 'delivered' | 'relayed'
  /** RFC 3463 status the relay derived, if it did. */
  status?: string
  /** The response came from a remote server (Diagnostic-Code smtp), else local. */
  remote: boolean
}

/** A message's owed DSN: the message and every recipient it is owed for. */
export interface OwedReport {
  message: QueuedMessage
  recipients: { rowId: number; address: string; args?: Record<string, string | boolean>; response: string; remoteHost?: string; dsn: OwedDsn }[]
}

export interface ClaimOptions {
  /** At most this many jobs. */
  limit: number
  /** At most this many jobs in flight per domain, counting `inFlight`. */
  perDomain: number
  inFlight: Record<string, number>
  /** How long the claimed work stays leased; an expired lease makes it due again. */
  leaseMs: number
  now: number
}

export interface ClaimResult {
  jobs: Job[]
  /** When the next pending recipient becomes due, if any. */
  nextDueAt?: number
  /**
   * Recipients among `jobs` whose earlier lease had expired: work taken over from a process (or,
   * in cluster mode, a node) that died or hung while it held it.
   */
  takenOver: number
}

/** What one heartbeat (`Queue.heartbeat`) found. */
export interface HeartbeatResult {
  /**
   * This node had no heartbeat on record: its first beat, or other nodes declared it dead (its
   * leases were taken over) while it was alive but silent for longer than `deadAfter`.
   */
  wasMissing: boolean
  /** Nodes found dead by this beat (their record is gone), with how many recipients each held. */
  /** `left`: the node stopped cleanly (Queue.leave), it did not die. */
  dead: { nodeId: string; silentMs: number; recipients: number; left?: boolean }[]
  /** Another process beat under this node's identity since this one's last beat (that long ago). */
  otherProcessBeatMsAgo?: number
}

export interface CompleteResult {
  /** Every recipient of the message is final, the message left the queue. */
  finished: boolean
  /**
   * The message owes a DSN (results with `dsn`, these or earlier ones) and none of its recipients
   * is in flight or due now: the caller sends it (`owedDsn`, then `sendOwedDsn`).
   */
  dsnDue?: boolean
}

/** What an operator's bounce (`Queue.bounceNow`) wrote. */
export interface OperatorBounce extends CompleteResult {
  /** The recipients bounced (pending and not in flight at the write). */
  bounced: { rowId: number; address: string; domain: string; attempts: number }[]
  /** Pending recipients a delivery held at the write: left to it. */
  inFlight: string[]
}

/** A message that has waited `delayWarning` with recipients still deferred, and no warning sent yet. */
export interface DelayCandidate {
  message: Omit<QueuedMessage, 'body'>
  /** Its recipients in state 'deferred', with their last result. */
  /** `lastAttemptAt`: when its last result was recorded (epoch ms). */
  recipients: { rowId: number; address: string; args?: Record<string, string | boolean>; lastResponse?: string; remoteHost?: string; category?: BounceCategory; lastAttemptAt?: number }[]
}

export interface Queue {
  /**
   * Resolves once envelope and body are durable (fsync'd); concurrent calls share commits.
   * With `leaseUntil` the recipients are written already leased to the caller (who delivers them
   * at once from memory); resolves with the recipients' row ids, in order. No row ids: written due
   * instead, not leased (an SMTP worker's write the primary found no room for: core/workers/pool.ts).
   */
  enqueue(message: NewMessage, leaseUntil?: number): Promise<number[]>
  /** Leases due work. */
  claim(options: ClaimOptions): Promise<ClaimResult>
  /**
   * Extends to `until` the leases of recipients whose attempt is still running (the scheduler
   * calls it every lease/3 with every row it has in flight), so a slow attempt is never taken over
   * while its holder lives; a dead holder's leases still expire (or, in cluster mode, its heartbeat
   * stops). Only rows still leased and pending are touched, never those with a result already (and
   * in a shared queue only those this node holds: not work another node took over).
   */
  renewLeases(rowIds: number[], until: number): Promise<void>
  /**
   * Records one attempt's results for a message's recipients (state, attempt history, reputation
   * counters), and enqueues a bounce and suppressions in the same write. In a shared queue, results
   * for recipients whose lease another node holds now (this node was declared dead and its work
   * taken over) or that already have a final result are not recorded, nor are that attempt's bounce
   * and suppressions: the new holder's attempt decides. The same holds for a message no longer in a
   * shared queue (the new holder finished it).
   */
  complete(queueId: string, results: RecipientResult[], bounce?: NewMessage, suppress?: Suppression[]): Promise<CompleteResult>
  /**
   * Makes work left leased by a process that died due at once; returns how many recipients. With
   * `queueIds`, only those messages' (what an SMTP worker process that died was delivering).
   */
  recover(now: number, queueIds?: string[]): Promise<number>
  /**
   * False while a queue database that could not be reached at start still cannot (PostgreSQL): the
   * node runs, refuses mail with 451 and is not ready. Absent: always reachable.
   */
  reachable?(): boolean
  /**
   * Cluster liveness: records that this node is alive, and finds the nodes whose last heartbeat is
   * older than `deadAfterMs` (judged on the shared queue's clock, so the nodes' clocks need not
   * agree): their record is removed and the work they held leased is due at `now` (a claim counts
   * it in `takenOver`). Only one node takes over a given dead node. The SQLite queue belongs to one
   * process (its `recover` at start is enough): there it records nothing and finds no one.
   */
  heartbeat(now: number, deadAfterMs: number): Promise<HeartbeatResult>
  /** A clean stop: the next beat of another node takes over what this one still holds, at once, without taking it for dead. */
  leave(): Promise<void>
  list(filter?: QueueFilter): Promise<QueueEntry[]>
  /** One message in full (envelope, recipients with attempt history, headers); undefined if unknown. */
  show(queueId: string): Promise<MessageDetail | undefined>
  /** The message as queued (header bytes, body to read with `openBody`); undefined if unknown. */
  message(queueId: string): Promise<QueuedMessage | undefined>
  /** Stops delivery of a message until `release`; false when there is no such message. */
  hold(queueId: string): Promise<boolean>
  /** Makes a held message's pending recipients due at once; false when it is not held. */
  release(queueId: string, now: number): Promise<boolean>
  /**
   * Removes a message and its body without a bounce; false when there is no such message. With
   * `unlessInFlightAt` (now, the operator's delete): 'in-flight', nothing removed, while one of its
   * recipients is being delivered (leased past that time).
   */
  remove(queueId: string, unlessInFlightAt?: number): Promise<boolean | 'in-flight'>
  /**
   * The operator's bounce, in one write: each recipient still pending and not in flight at that
   * moment becomes 'bounced' with `response`, the ones in `owed` marked DSN owed (`mark`) as a
   * delivery's complete marks them; those in flight are left to their delivery, whose complete
   * then sends the message's one DSN. undefined: no such message.
   */
  bounceNow(queueId: string, response: string, mark: OwedDsn, owed: number[], now: number): Promise<OperatorBounce | undefined>
  /** Makes pending recipients of messages that are not held due at once; returns how many. */
  flush(filter: { queueId?: string; domain?: string }, now: number): Promise<number>
  /** Every queued message expires `lifetimeMs` after its arrival (delivery.maxQueueLifetime, at start and when a reload changes it, as Postfix's maximal_queue_lifetime); returns how many changed. */
  applyLifetime(lifetimeMs: number): Promise<number>
  summary(now: number): Promise<QueueSummary>
  /**
   * Delivery attempts, newest first, made before `before` (epoch ms) if given: those of queued
   * messages and, for a day (at most `retention`), those of messages that left the queue.
   */
  recentAttempts(opts: { limit: number; before?: number }): Promise<RecentAttempt[]>
  /** The body (without the header section) as a stream, whatever kind of StoredBody it is. */
  openBody(message: QueuedMessage): Readable
  /** Reputation counters with `hour >= since`. */
  stats(since: number): Promise<StatsRow[]>
  /** Matches a complaint to a message sent (kept `retention` ms) and counts it against its sender domain. */
  recordComplaint(complaint: Complaint): Promise<ComplaintResult>
  /** Spool files that belong to queued messages. */
  bodyFiles(): Promise<string[]>
  /** The address's suppression entry if it has one that has not expired (an indexed lookup). */
  isSuppressed(address: string): Promise<Suppression | undefined>
  /** Adds or replaces entries. */
  suppress(entries: Suppression[]): Promise<void>
  /** Removes an entry; false when there was none. */
  unsuppress(address: string): Promise<boolean>
  /** Entries that have not expired, oldest first. */
  listSuppressed(): Promise<Suppression[]>
  /** Messages received before `receivedBefore`, not warned yet, with deferred recipients (at most `limit`). */
  delayCandidates(receivedBefore: number, limit: number): Promise<DelayCandidate[]>
  /**
   * Marks the message as warned (once per message) and queues the warning `dsn` in the same write,
   * if the message is still queued and not marked before, and the recipients it warns of (`rowIds`)
   * are all still deferred (else nothing is written: the next check decides again); resolves with
   * whether it was marked now.
   */
  markDelayNotified(queueId: string, dsn?: NewMessage, rowIds?: number[]): Promise<boolean>
  /**
   * The message's owed DSN, unless none is owed or a recipient of it is in flight or due now (its
   * attempt's complete reports `dsnDue`).
   */
  owedDsn(queueId: string, now: number): Promise<OwedReport | undefined>
  /** Messages with an owed DSN and nothing in flight or due (left by a crash between complete and sendOwedDsn), at most `limit`. */
  owedDsnMessages(now: number, limit: number): Promise<string[]>
  /**
   * Clears the owed marks of `rowIds` and queues `dsn` (none: the DSN was dropped) in one write, and
   * removes the message once nothing is pending or owed; false, with nothing written, when one of
   * them is not owed any more (another node or pass sent it).
   */
  sendOwedDsn(queueId: string, rowIds: number[], dsn?: NewMessage): Promise<boolean>
  close(): Promise<void>
}
