import path from 'node:path'
import { createRequire } from 'node:module'
import type { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { privateDir, privateFile } from '../private-files.js'
import type {
  ClaimOptions,
  ClaimResult,
  Complaint,
  ComplaintResult,
  CompleteResult,
  DelayCandidate,
  HeartbeatResult,
  MessageDetail,
  NewMessage,
  OperatorBounce,
  OwedDsn,
  OwedReport,
  Queue,
  QueueEntry,
  QueuedMessage,
  QueueFilter,
  QueueSummary,
  RecentAttempt,
  RecipientResult,
  StatsRow,
  Suppression,
} from '../types.js'
import type { Request, Response, WorkerOptions } from './worker.js'
import type { Spool } from '../spool.js'
import { openLocalBody } from '../body.js'

type Op = Request['op']
type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void }

/** queue.retention's default: counters and the sent log are kept 30 days. */
const DEFAULT_RETENTION_MS = 30 * 86_400_000

export interface SqliteQueueOptions {
  /** How long reputation counters and the sent log (for matching complaints) are kept. */
  retentionMs?: number
}

/** Buffers arrive from the worker as Uint8Array. */
const toBuffer = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)

/**
 * What the worker threw, as an Error with a message: the worker sends one (worker.ts), but what
 * crosses the thread boundary without one (a plain `{ code }`) must not print as "[object Object]".
 */
function asError(err: unknown, file: string): Error {
  if (err instanceof Error && err.message) return err
  const code = (err as { code?: unknown } | null)?.code
  const text = (err as { message?: unknown } | null)?.message
  const why = typeof text === 'string' && text ? text : typeof code === 'string' ? code : JSON.stringify(err) ?? String(err)
  return Object.assign(new Error(`queue database ${file}: ${why}`), typeof code === 'string' ? { code } : {})
}

/** The embedded queue: SQLite in WAL mode with synchronous=FULL, driven from a worker thread. */
export class SqliteQueue implements Queue {
  private readonly worker: Worker
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  private closed = false
  /** Why the worker is gone, if it died: later calls fail at once instead of waiting forever. */
  private dead: Error | undefined

  constructor(
    readonly file: string,
    private readonly spool: Spool,
    options: SqliteQueueOptions = {},
  ) {
    privateDir(path.dirname(file))
    privateFile(file)
    // Built: worker.js beside this file. From source (tests, tsx): worker.ts through tsx's require
    // hook, registered inside the worker (on Node 20 ESM loader hooks do not reach a worker's entry).
    const fromSource = import.meta.url.endsWith('.ts')
    const workerData: WorkerOptions = { file, retentionMs: options.retentionMs ?? DEFAULT_RETENTION_MS }
    if (fromSource) {
      const tsx = createRequire(import.meta.url).resolve('tsx/cjs/api')
      const entry = fileURLToPath(new URL('./worker.ts', import.meta.url))
      this.worker = new Worker(`require(${JSON.stringify(tsx)}).register(); require(${JSON.stringify(entry)})`, { eval: true, workerData })
    } else {
      this.worker = new Worker(new URL('./worker.js', import.meta.url), { workerData })
    }
    this.worker.on('message', (responses: Response[]) => {
      for (const r of responses) {
        const p = this.pending.get(r.id)
        if (!p) continue
        this.pending.delete(r.id)
        if (r.ok) p.resolve(r.result)
        else p.reject(Object.assign(new Error(r.error.startsWith('queue ') ? r.error : `queue ${r.error}`), r.code ? { code: r.code } : {}))
      }
    })
    this.worker.on('error', (err) => this.failAll((this.dead = asError(err, file))))
    this.worker.on('exit', (code) => {
      this.dead ??= new Error(`queue worker exited with code ${code}`)
      if (!this.closed || this.pending.size) this.failAll(this.dead)
    })
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
  }

  private call<T>(op: Op, ...args: unknown[]): Promise<T> {
    if (this.closed) return Promise.reject(new Error('queue is closed'))
    if (this.dead) return Promise.reject(this.dead)
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      // Requests made in the same tick travel together: one postMessage, not one each.
      this.outbox.push({ id, op, args } as Request)
      if (this.outbox.length === 1) queueMicrotask(this.sendOutbox)
    })
  }

  private outbox: Request[] = []
  private readonly sendOutbox = () => {
    const batch = this.outbox
    this.outbox = []
    this.worker.postMessage(batch)
  }

  enqueue(message: NewMessage, leaseUntil?: number): Promise<number[]> {
    if ('stored' in message.body) return Promise.reject(new Error('the SQLite queue takes bodies inline or as spool files, not stored'))
    return this.call('enqueue', message, leaseUntil)
  }

  claim(options: ClaimOptions): Promise<ClaimResult> {
    return this.call<ClaimResult>('claim', options).then((r) => {
      for (const job of r.jobs) {
        const m = job.message
        m.headers = toBuffer(m.headers)
        if ('inline' in m.body) m.body = { inline: toBuffer(m.body.inline) }
      }
      return r
    })
  }

  async renewLeases(rowIds: number[], until: number): Promise<void> {
    if (!rowIds.length) return
    await this.call<number>('renewLeases', rowIds, until)
  }

  async complete(queueId: string, results: RecipientResult[], bounce?: NewMessage, suppress?: Suppression[]): Promise<CompleteResult> {
    const r = await this.call<{ finished: boolean; dsnDue?: boolean; bodyFile?: string }>('complete', queueId, results, bounce, Date.now(), suppress)
    if (r.bodyFile) await this.spool.remove(r.bodyFile)
    return { finished: r.finished, ...(r.dsnDue ? { dsnDue: true } : {}) }
  }

  recover(now: number, queueIds?: string[]): Promise<number> {
    return this.call('recover', now, queueIds)
  }

  /** One process owns this queue (its `recover` at start frees what it held): no other node to watch. */
  leave(): Promise<void> {
    return Promise.resolve()
  }

  heartbeat(_now: number, _deadAfterMs: number): Promise<HeartbeatResult> {
    if (this.closed) return Promise.reject(new Error('queue is closed'))
    return Promise.resolve({ wasMissing: false, dead: [] })
  }

  list(filter?: QueueFilter): Promise<QueueEntry[]> {
    return this.call('list', filter)
  }

  show(queueId: string): Promise<MessageDetail | undefined> {
    return this.call<MessageDetail | null>('show', queueId, Date.now()).then((d) => d ?? undefined)
  }

  async message(queueId: string): Promise<QueuedMessage | undefined> {
    const m = await this.call<QueuedMessage | null>('message', queueId)
    if (!m) return undefined
    m.headers = toBuffer(m.headers)
    if ('inline' in m.body) m.body = { inline: toBuffer(m.body.inline) }
    return m
  }

  hold(queueId: string): Promise<boolean> {
    return this.call('hold', queueId, Date.now())
  }

  release(queueId: string, now: number): Promise<boolean> {
    return this.call('release', queueId, now)
  }

  async bounceNow(queueId: string, response: string, mark: OwedDsn, owed: number[], now: number): Promise<OperatorBounce | undefined> {
    const r = await this.call<(OperatorBounce & { bodyFile?: string }) | null>('bounceNow', queueId, response, mark, owed, now)
    if (!r) return undefined
    const { bodyFile, ...result } = r
    if (bodyFile) await this.spool.remove(bodyFile)
    return result
  }

  async remove(queueId: string, unlessInFlightAt?: number): Promise<boolean | 'in-flight'> {
    const r = await this.call<{ removed: boolean; inFlight?: true; bodyFile?: string }>('remove', queueId, unlessInFlightAt)
    if (r.bodyFile) await this.spool.remove(r.bodyFile)
    return r.inFlight ? 'in-flight' : r.removed
  }

  flush(filter: { queueId?: string; domain?: string }, now: number): Promise<number> {
    return this.call('flush', filter, now)
  }

  applyLifetime(lifetimeMs: number): Promise<number> {
    return this.call('applyLifetime', lifetimeMs)
  }

  summary(now: number): Promise<QueueSummary> {
    return this.call('summary', now)
  }

  recentAttempts(opts: { limit: number; before?: number }): Promise<RecentAttempt[]> {
    return this.call('recentAttempts', opts)
  }

  openBody(message: QueuedMessage): Readable {
    return openLocalBody(message)
  }

  stats(since: number): Promise<StatsRow[]> {
    return this.call('stats', since)
  }

  recordComplaint(complaint: Complaint): Promise<ComplaintResult> {
    return this.call('recordComplaint', complaint)
  }

  bodyFiles(): Promise<string[]> {
    return this.call('bodyFiles')
  }

  // A read through the worker is one primary-key lookup; it sees what another process (the CLI)
  // committed, since every statement reads the latest WAL snapshot.
  isSuppressed(address: string): Promise<Suppression | undefined> {
    return this.call<Suppression | null>('isSuppressed', address, Date.now()).then((s) => s ?? undefined)
  }

  suppress(entries: Suppression[]): Promise<void> {
    return this.call('suppress', entries, Date.now())
  }

  unsuppress(address: string): Promise<boolean> {
    return this.call('unsuppress', address)
  }

  listSuppressed(): Promise<Suppression[]> {
    return this.call('listSuppressed', Date.now())
  }

  delayCandidates(receivedBefore: number, limit: number): Promise<DelayCandidate[]> {
    return this.call<DelayCandidate[]>('delayCandidates', receivedBefore, limit).then((list) => {
      for (const c of list) c.message.headers = toBuffer(c.message.headers)
      return list
    })
  }

  markDelayNotified(queueId: string, dsn?: NewMessage, rowIds?: number[]): Promise<boolean> {
    return this.call('markDelayNotified', queueId, dsn, Date.now(), rowIds)
  }

  async owedDsn(queueId: string, now: number): Promise<OwedReport | undefined> {
    const r = await this.call<OwedReport | null>('owedDsn', queueId, now)
    if (!r) return undefined
    const m = r.message
    m.headers = toBuffer(m.headers)
    if ('inline' in m.body) m.body = { inline: toBuffer(m.body.inline) }
    return r
  }

  owedDsnMessages(now: number, limit: number): Promise<string[]> {
    return this.call('owedDsnMessages', now, limit)
  }

  async sendOwedDsn(queueId: string, rowIds: number[], dsn?: NewMessage): Promise<boolean> {
    const r = await this.call<{ sent: boolean; bodyFile?: string }>('sendOwedDsn', queueId, rowIds, dsn)
    if (r.bodyFile) await this.spool.remove(r.bodyFile)
    return r.sent
  }

  async close(): Promise<void> {
    if (this.closed) return
    if (this.dead) {
      this.closed = true
      return
    }
    await new Promise<void>((resolve) => {
      this.worker.once('exit', () => resolve())
      this.worker.postMessage('close')
      this.closed = true
    })
  }
}
