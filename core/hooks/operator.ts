// What operations plugins (admin API, metrics, reputation, doctor) and the CLI get from a running
// relay: queue operations, reload, readiness, counts. Plain data types, so both queues and the
// public API share them without importing upwards.
import type { BounceCategory, ListenerRole } from './names.js'

export type RecipientState = 'queued' | 'deferred' | 'delivered' | 'bounced'

export interface MessageMeta {
  clientAddress?: string
  clientHostname?: string
  helo?: string
  listener?: string
  user?: string
  /** The client authenticated or is in `smtp.trustedNetworks` (absent on messages the relay made itself). */
  trusted?: boolean
  /** Set on bounces (DSNs) that this relay generated. */
  dsnFor?: string
}

export interface QueueEntry {
  id: string
  messageId?: string
  sender: string
  size: number
  receivedAt: number
  /** When an operator held the message (`relay queue hold`); held messages are not delivered. */
  heldAt?: number
  /**
   * `dsnOwed`: a final result whose DSN is not sent yet (it goes once nothing of the message is in
   * flight or due: core/delivery/dsn.ts); the message stays queued until then. `delivering`: a
   * pending recipient in an attempt now (no next attempt is set while it runs).
   */
  recipients: { address: string; state: RecipientState; attempts: number; nextAttemptAt?: number; lastResponse?: string; category?: BounceCategory; dsnOwed?: true; delivering?: true }[]
}

/** What `list` returns; every field narrows. */
export interface QueueFilter {
  /** 'held': held messages; 'queued'/'deferred': messages with a pending recipient in that state. */
  state?: 'queued' | 'deferred' | 'held'
  /** Messages with a recipient at this domain (exact, lower case). */
  domain?: string
  /** Messages from this sender (exact, case-insensitive; '' the null sender). */
  sender?: string
  /** At most this many messages, oldest first (default: all). */
  limit?: number
  /** Only messages after this one in that order (receivedAt, then id): the admin API's cursor paging. */
  after?: { receivedAt: number; id: string }
}

/** One delivery attempt's result for one recipient. */
export interface AttemptRecord {
  at: number
  state: 'delivered' | 'deferred' | 'bounced'
  response: string
  remoteHost?: string
  category?: BounceCategory
}

/** `relay queue show`: the envelope, each recipient with its attempts, the header section. */
export interface MessageDetail extends Omit<QueueEntry, 'recipients'> {
  senderArgs?: Record<string, string | boolean>
  expiresAt: number
  meta: MessageMeta
  /** The final header section as text. */
  headers: string
  recipients: (QueueEntry['recipients'][number] & {
    rowId: number
    domain: string
    args?: Record<string, string | boolean>
    /** A delivery holds it right now. */
    leased: boolean
    remoteHost?: string
    /** Oldest first. */
    history: AttemptRecord[]
  })[]
}

/** Queue size at a glance (metrics, dashboard, readiness). */
export interface QueueSummary {
  messages: number
  /** Recipients still to deliver, by state; `held` counts recipients of held messages. */
  recipients: { queued: number; deferred: number; held: number }
  /** Receive time of the oldest message still queued. */
  oldestReceivedAt?: number
  /** The destination domains with the most pending recipients (at most 20), most first. */
  domains: { domain: string; queued: number; deferred: number; held: number }[]
  /** Messages kept queued for a DSN owed to their sender and not sent yet (core/delivery/dsn.ts). */
  owingDsn?: number
}

/**
 * Reputation counters: one row per hour, sending domain (of the envelope sender), destination
 * domain, outcome and bounce category. Recorded by `complete` (delivery results) and
 * `recordComplaint` (ARF reports).
 */
export interface StatsRow {
  /** Start of the hour (epoch ms). */
  hour: number
  senderDomain: string
  destDomain: string
  outcome: 'delivered' | 'deferred' | 'bounced' | 'complaint'
  /** For deferred and bounced: the failure category; '' otherwise. */
  category: BounceCategory | ''
  count: number
}

/** A feedback-loop (ARF, RFC 5965) report about a message this relay sent. */
export interface Complaint {
  /** Message-ID of the original message (without angle brackets), from its headers in the report. */
  messageId?: string
  /** Queue ids this relay wrote in the original's Received headers (`id <queueId>`). */
  queueIds?: string[]
  /** Original-Mail-From of the report, used when nothing else matches. */
  originalMailFrom?: string
  /** Original-Rcpt-To (the complaining recipient); its domain is the destination domain. */
  originalRcptTo?: string
  feedbackType: string
  /** The reporting software (the report's User-Agent field), for the dashboard's recent events. */
  userAgent?: string
  /** When the report arrived (epoch ms). */
  receivedAt: number
}

export interface ComplaintResult {
  /** The original message was found in the sent log. */
  matched: boolean
  queueId?: string
  sender?: string
  /** The domain the complaint was counted against ('' when none could be told). */
  senderDomain: string
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


/** `bounce`: what an operator's bounce did. */
export interface BounceResult {
  id: string
  /** The recipients bounced now. */
  bounced: string[]
  /** Pending recipients a delivery held at that moment: left to it (not bounced). */
  inFlight?: string[]
  /** Queue id of the DSN queued to the sender (none for the null sender, or NOTIFY without FAILURE). */
  dsn?: string
  /** The DSN for the recipients bounced goes with that of the recipients in flight, once their delivery is done. */
  dsnWaits?: boolean
}

/**
 * The operator verbs on the queue, the same on SQLite and PostgreSQL (and in `relay queue`). A
 * verb that cannot be done rejects with an Error whose `kind` is 'not-found', 'conflict' or
 * 'bad-input' (an HTTP API maps it to 404/409/400); 'unavailable' when the queue's database cannot
 * be reached (503: try again later).
 */
export interface QueueOperations {
  list(filter?: QueueFilter): Promise<QueueEntry[]>
  show(id: string): Promise<MessageDetail>
  /**
   * Holds a message: no further attempt until it is released. `inFlight`: recipients a delivery
   * held at that moment; that attempt is not stopped (it may still deliver them).
   */
  hold(id: string): Promise<{ id: string; held: true; inFlight?: string[] }>
  release(id: string): Promise<{ id: string; released: true }>
  remove(id: string): Promise<{ id: string; deleted: true }>
  /** Pending recipients become due now (all, one message, or one domain's); a held message named by id is a 'conflict'. */
  flush(filter?: { id?: string; domain?: string }): Promise<{ flushed: number }>
  /** Gives up on a message's pending recipients: `bounced` events, and a DSN to the sender. */
  bounce(id: string): Promise<BounceResult>
  summary(): Promise<QueueSummary>
  /** Reputation counters with `hour >= since` (epoch ms). */
  stats(since: number): Promise<StatsRow[]>
  /** Matches a feedback-loop complaint to a message sent and counts it against its sender domain. */
  recordComplaint(complaint: Complaint): Promise<ComplaintResult>
  suppressions: {
    list(): Promise<Suppression[]>
    add(entries: Suppression[]): Promise<void>
    remove(address: string): Promise<boolean>
  }
  /**
   * One action on every message a filter selects (postsuper-style): `ids`, or `all`, or the
   * narrowing fields; `dryRun` only counts. Resolves with what matched and what was done.
   */
  bulk(action: BulkAction, filter: BulkFilter, opts?: { dryRun?: boolean }): Promise<BulkResult>
  /** The message as queued: header section and body (`relay queue cat`, like `postcat -q`). */
  raw(id: string): Promise<Buffer>
  /** Delivery attempts, newest first (the dashboard's recent events survive restarts and nodes). */
  recentAttempts(opts: { limit: number; before?: number }): Promise<RecentAttempt[]>
}

export type BulkAction = 'hold' | 'release' | 'flush' | 'delete' | 'bounce'

export interface BulkFilter {
  ids?: string[]
  /** Every message (`ALL`); the other fields are then ignored. */
  all?: boolean
  domain?: string
  sender?: string
  state?: 'queued' | 'deferred' | 'held'
  /** Received more than this many ms ago. */
  olderThan?: number
}

export interface BulkResult {
  action: BulkAction
  dryRun: boolean
  /** Queue ids the filter selected. */
  matched: string[]
  /** How many of them the action changed (0 in a dry run). */
  done: number
  /**
   * Selected messages the action could not change because of their state, with the verb's reason
   * (a delete or bounce of a message being delivered, a release of one not held, a flush of one held).
   */
  skipped: { id: string; reason: string }[]
}

/** One delivery attempt for one recipient, from the queue's attempt history. */
export interface RecentAttempt {
  at: number
  queueId: string
  sender: string
  recipient: string
  state: 'delivered' | 'deferred' | 'bounced'
  response: string
  remoteHost?: string
  category?: BounceCategory
}

/** A message handed to the relay without SMTP (`relay sendmail`, an HTTP inject API). */
export interface InjectMessage {
  /** Envelope sender; '' is the null sender. */
  sender: string
  recipients: string[]
  /** The RFC 5322 message: header section, blank line, body (LF or CRLF line ends). */
  raw: Buffer
  /** The user it is submitted as (sender ownership applies as for SMTP AUTH); absent: a trusted local submission. */
  user?: string
}

/** Whether the relay takes traffic: queue open and listeners up (not while starting or stopping). */
export interface Readiness {
  ready: boolean
  state: 'starting' | 'running' | 'stopping' | 'stopped'
  reason?: string
}

export type ReloadResult =
  | {
      ok: true
      /** Settings that differ from the config in force before (`smtp.maxRecipients`, `plugins`, ...). */
      changed: string[]
      /** Changed settings that keep their old value until a restart. */
      restartNeeded: string[]
    }
  | {
      ok: false
      error: string
    }

/** Connections accepted since start and sessions open now, per listener role. */
export interface SessionCounts {
  connections: Record<ListenerRole, number>
  active: Record<ListenerRole, number>
}

/**
 * A running relay as operations plugins see it (`ctx.relay` in setup). Absent in `relay
 * check-config`, where nothing runs.
 */
export interface RelayOperations {
  queue: QueueOperations
  /** Hot reload, as SIGHUP: the config file read again and applied; a bad one changes nothing. */
  reload(): Promise<ReloadResult>
  /** Re-reads the TLS certificate files; false when there are none or they cannot be read. */
  reloadTls(): boolean
  readiness(): Readiness
  /** The listeners as bound (real ports, also for a configured port 0); empty until they are up. */
  listeners(): readonly { host: string; port: number; role: ListenerRole }[]
  sessionCounts(): SessionCounts
  /** Event-loop delay since start, in ms (p50, p99, max). */
  eventLoopDelay(): { p50: number; p99: number; max: number }
  /**
   * The warning thresholds the reputation figures are judged by: config `stats` of the running
   * generation (the admin API's stats, the reputation plugin's warnings).
   */
  warningThresholds(): { bounceRateWarning: number; complaintRateWarning: number; minVolume: number }
  /**
   * Queues a message through the same path as SMTP submission (the data and queue hooks, the
   * core's checks, Received, the durable write); rejects with an Error carrying `responseCode`
   * and the SMTP reply text when a check refuses it.
   */
  inject(message: InjectMessage): Promise<{ queueId: string }>
  /** The certificates the listeners serve: file, subject and expiry (epoch ms). */
  tlsCertificates(): { file: string; subject: string; notAfter: number }[]
  /** Delivery now: open outbound connections, and destinations paused by throttling. */
  deliveryStatus(): { openConnections: number; pausedDestinations: number }
  /**
   * A figure a plugin publishes for others to export (a webhook outbox backlog, say): the admin
   * plugin's /metrics shows every registered gauge as `relay_plugin_<name>`. `name`: letters,
   * digits and _ (throws otherwise). Registering a name again replaces it (a plugin set up anew at
   * a reload); `read` is called at each scrape, and one that throws leaves the gauge out. A name
   * ending in `_total` is a count that only grows, exported as a Prometheus counter.
   */
  registerGauge(name: string, help: string, read: () => number | Promise<number>): void
  gauges(): { name: string; help: string; read: () => number | Promise<number> }[]
}
