// The queue is the contract between taking mail in (core/smtp) and sending it out (core/delivery).
// Implementations: sqlite/ (embedded default). Callers use only this interface.
import type { BounceCategory } from '../hooks/types.js'

export type RecipientState = 'queued' | 'deferred' | 'delivered' | 'bounced'

/** A message body: small ones inline in the queue database, large ones in a spool file. */
export type StoredBody = { inline: Buffer } | { file: string }

export interface MessageMeta {
  clientAddress?: string
  clientHostname?: string
  helo?: string
  listener?: string
  user?: string
  /** Set on bounces (DSNs) that this relay generated. */
  dsnFor?: string
}

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
}

export interface CompleteResult {
  /** Every recipient of the message is final, the message left the queue. */
  finished: boolean
}

export interface QueueEntry {
  id: string
  messageId?: string
  sender: string
  size: number
  receivedAt: number
  recipients: { address: string; state: RecipientState; attempts: number; nextAttemptAt?: number; lastResponse?: string; category?: BounceCategory }[]
}

/** An address mail is not taken for (a hard bounce, or added by hand). */
export interface Suppression {
  /** Lower-cased. */
  address: string
  reason: string
  /** The queue id of the message whose bounce added it, or 'cli'. */
  source?: string
  createdAt: number
  /** Epoch ms; absent: until removed. */
  expiresAt?: number
}

/** A message that has waited `delayWarning` with recipients still deferred, and no warning sent yet. */
export interface DelayCandidate {
  message: Omit<QueuedMessage, 'body'>
  /** Its recipients in state 'deferred', with their last result. */
  recipients: { rowId: number; address: string; args?: Record<string, string | boolean>; lastResponse?: string; remoteHost?: string; category?: BounceCategory }[]
}

export interface Queue {
  /**
   * Resolves once envelope and body are durable (fsync'd); concurrent calls share commits.
   * With `leaseUntil` the recipients are written already leased to the caller (who delivers them
   * at once from memory); resolves with the recipients' row ids, in order.
   */
  enqueue(message: NewMessage, leaseUntil?: number): Promise<number[]>
  /** Leases due work. */
  claim(options: ClaimOptions): Promise<ClaimResult>
  /** Records one attempt's results for a message's recipients, and enqueues a bounce in the same write. */
  complete(queueId: string, results: RecipientResult[], bounce?: NewMessage, suppress?: Suppression[]): Promise<CompleteResult>
  /** Makes work left leased by a process that died due at once; returns how many recipients. */
  recover(now: number): Promise<number>
  list(): Promise<QueueEntry[]>
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
   * if the message is still queued and not marked before; resolves with whether it was marked now.
   */
  markDelayNotified(queueId: string, dsn?: NewMessage): Promise<boolean>
  close(): Promise<void>
}
