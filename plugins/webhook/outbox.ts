// The outbox: events wait in `<dataDir>/webhook-outbox-<hash of url>.sqlite` until the endpoint has answered 2xx
// for them. Rows are appended as events happen and deleted, oldest first, once sent, or dropped
// unsent (counted by reason in `dropped`): a batch the endpoint refuses for good, the oldest beyond
// `maxEvents`, those older than `maxAge`, those of an outbox no entry uses whose type no entry sends.
// `meta` keeps the url it is for (adopt.ts names it when another entry takes its events over).
import crypto from 'node:crypto'
import Database from 'better-sqlite3'
import { privateFile } from '../../core/index.js'

export interface OutboxEvent {
  /** Position in the outbox: sending is in this order. */
  seq: number
  /** Unique id of the event, for receivers that want to drop a repeat. */
  id: string
  type: string
  /** When the event happened (ISO 8601). */
  at: string
  /** The event's fields as JSON. */
  data: string
}

/** Why events were dropped unsent: the endpoint refused them for good, the outbox was full, too old. */
export const DROP_REASONS = ['rejected', 'overflow', 'expired', 'orphaned'] as const
export type DropReason = (typeof DROP_REASONS)[number]

/** What a trim dropped: how many, and when the oldest and newest of them happened. */
export interface Dropped {
  n: number
  oldest?: string
  newest?: string
}

export class Outbox {
  private readonly db: Database.Database
  private readonly insert: Database.Statement<[string, string, string, string]>
  private readonly oldest: Database.Statement<[number], OutboxEvent>
  private readonly removeUpTo: Database.Statement<[number]>
  private readonly size: Database.Statement<[], { n: number }>
  private readonly takeLease: Database.Transaction<(owner: string, now: number, ttl: number) => boolean>
  private readonly dropLease: Database.Statement<[string]>
  private readonly countDrop: Database.Statement<[string, number]>
  private readonly dropCount: Database.Statement<[string], { n: number }>
  private readonly dropUpTo: Database.Transaction<(seq: number, reason: DropReason) => Dropped>
  private readonly newestBeyond: Database.Statement<[number], { seq: number }>
  private readonly newestBefore: Database.Statement<[string], { seq: number }>
  private readonly copyIn: Database.Transaction<(events: OutboxEvent[]) => void>

  constructor(file: string) {
    // It holds the URL (with any token in it) and every event: the relay's user's only, as the queue is.
    privateFile(file)
    this.db = new Database(file)
    this.db.pragma('busy_timeout = 5000')
    // WAL with synchronous=NORMAL: a commit survives the process dying (kill -9), costs no fsync.
    this.db.pragma('journal_mode = WAL')
    this.db.pragma('synchronous = NORMAL')
    this.db.exec(`CREATE TABLE IF NOT EXISTS events (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      id TEXT NOT NULL,
      type TEXT NOT NULL,
      at TEXT NOT NULL,
      data TEXT NOT NULL
    )`)
    // Who sends: one sender at a time per outbox, across processes (a `relay check-config` next to
    // the running relay) and across a plugin reload in one process, so no batch goes out twice.
    this.db.exec('CREATE TABLE IF NOT EXISTS sender (k INTEGER PRIMARY KEY CHECK (k = 1), owner TEXT NOT NULL, until INTEGER NOT NULL)')
    const lease = this.db.prepare<[], { owner: string; until: number }>('SELECT owner, until FROM sender WHERE k = 1')
    const setLease = this.db.prepare<[string, number]>('INSERT INTO sender (k, owner, until) VALUES (1, ?, ?) ON CONFLICT (k) DO UPDATE SET owner = excluded.owner, until = excluded.until')
    this.takeLease = this.db.transaction((owner: string, now: number, ttl: number) => {
      const held = lease.get()
      if (held && held.owner !== owner && held.until > now && processAlive(held.owner)) return false
      setLease.run(owner, now + ttl)
      return true
    })
    this.dropLease = this.db.prepare('DELETE FROM sender WHERE owner = ?')
    this.insert = this.db.prepare('INSERT INTO events (id, type, at, data) VALUES (?, ?, ?, ?)')
    this.oldest = this.db.prepare('SELECT seq, id, type, at, data FROM events ORDER BY seq LIMIT ?')
    this.removeUpTo = this.db.prepare('DELETE FROM events WHERE seq <= ?')
    this.size = this.db.prepare('SELECT count(*) AS n FROM events')
    // Events dropped unsent, by reason, since the outbox was made (the admin plugin's /metrics).
    this.db.exec('CREATE TABLE IF NOT EXISTS dropped (reason TEXT PRIMARY KEY, n INTEGER NOT NULL)')
    this.db.exec('CREATE INDEX IF NOT EXISTS events_at ON events (at)')
    this.countDrop = this.db.prepare('INSERT INTO dropped (reason, n) VALUES (?, ?) ON CONFLICT (reason) DO UPDATE SET n = n + excluded.n')
    this.dropCount = this.db.prepare('SELECT n FROM dropped WHERE reason = ?')
    const span = this.db.prepare<[number], { n: number; oldest: string | null; newest: string | null }>('SELECT count(*) AS n, min(at) AS oldest, max(at) AS newest FROM events WHERE seq <= ?')
    this.dropUpTo = this.db.transaction((seq: number, reason: DropReason) => {
      const r = span.get(seq)!
      if (!r.n) return { n: 0 }
      this.removeUpTo.run(seq)
      this.countDrop.run(reason, r.n)
      return { n: r.n, oldest: r.oldest ?? undefined, newest: r.newest ?? undefined }
    })
    // The newest event that does not fit in the newest `max`; the newest event older than a time.
    this.newestBeyond = this.db.prepare('SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?')
    this.newestBefore = this.db.prepare('SELECT max(seq) AS seq FROM events WHERE at < ?')
    this.db.exec('CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)')
    const copy = this.db.prepare<[string, string, string, string]>('INSERT INTO events (id, type, at, data) VALUES (?, ?, ?, ?)')
    this.copyIn = this.db.transaction((events: OutboxEvent[]) => events.forEach((e) => copy.run(e.id, e.type, e.at, e.data)))
  }

  /** The url this outbox is for: set at setup, read when another entry takes its events over (undefined: an earlier version's). */
  get url(): string | undefined {
    return this.db.prepare<[], { v: string }>("SELECT v FROM meta WHERE k = 'url'").get()?.v
  }

  set url(url: string | undefined) {
    if (url !== undefined) this.db.prepare("INSERT INTO meta (k, v) VALUES ('url', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v").run(url)
  }

  /** Appends events taken over from another outbox, with their ids and times, in one transaction. */
  append(events: OutboxEvent[]): void {
    this.copyIn.immediate(events)
  }

  /** Adds drops counted elsewhere (an outbox taken over): the counts on /metrics never go down. */
  countDropped(reason: DropReason, n: number): void {
    if (n > 0) this.countDrop.run(reason, n)
  }

  add(type: string, data: unknown, at = new Date()): void {
    this.insert.run(crypto.randomUUID(), type, at.toISOString(), JSON.stringify(data))
  }

  /** The oldest `limit` events, in order. */
  next(limit: number): OutboxEvent[] {
    return this.oldest.all(limit)
  }

  /** Deletes every event up to and including `seq` (they were sent). */
  remove(seq: number): void {
    this.removeUpTo.run(seq)
  }

  /** Drops every event up to and including `seq` unsent, counting them under `reason`. */
  drop(seq: number, reason: DropReason): Dropped {
    return this.dropUpTo.immediate(seq, reason)
  }

  /** Drops the oldest events beyond the newest `maxEvents`. */
  dropBeyond(maxEvents: number): Dropped {
    const row = this.newestBeyond.get(maxEvents)
    return row ? this.drop(row.seq, 'overflow') : { n: 0 }
  }

  /** Drops the events that happened before `before`. */
  dropOlderThan(before: Date): Dropped {
    const seq = this.newestBefore.get(before.toISOString())?.seq
    return seq === null || seq === undefined ? { n: 0 } : this.drop(seq, 'expired')
  }

  /** Events dropped unsent for this reason since the outbox was made. */
  dropped(reason: DropReason): number {
    return this.dropCount.get(reason)?.n ?? 0
  }

  /**
   * Takes or renews the right to send for `ttl` ms; false while another sender holds it. `owner` is
   * `<pid>:<id>`: a lease left by a process that died (kill -9) is taken over at once.
   */
  lease(owner: string, ttl: number, now = Date.now()): boolean {
    return this.takeLease.immediate(owner, now, ttl)
  }

  release(owner: string): void {
    if (this.db.open) this.dropLease.run(owner)
  }

  get open(): boolean {
    return this.db.open
  }

  count(): number {
    return this.size.get()!.n
  }

  close(): void {
    if (this.db.open) this.db.close()
  }
}

/** Whether the process named in a lease owner `<pid>:<id>` still runs (this one always does). */
function processAlive(owner: string): boolean {
  const pid = Number(owner.split(':')[0])
  if (!Number.isInteger(pid) || pid <= 0) return false
  if (pid === process.pid) return true
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists, under another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
