import path from 'node:path'
import fs from 'node:fs'
import { Worker } from 'node:worker_threads'
import type { Queue, NewMessage, ClaimOptions, ClaimResult, RecipientResult, CompleteResult, QueueEntry, Suppression, DelayCandidate } from '../types.js'
import type { Request, Response } from './worker.js'
import type { Spool } from '../spool.js'

type Op = Request['op']
type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void }

/** The embedded queue: SQLite in WAL mode with synchronous=FULL, driven from a worker thread. */
export class SqliteQueue implements Queue {
  private readonly worker: Worker
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  private closed = false

  constructor(
    readonly file: string,
    private readonly spool: Spool,
  ) {
    fs.mkdirSync(path.dirname(file), { recursive: true })
    // Built: worker.js beside this file. From source (tests, tsx): worker.ts through tsx's loader.
    const fromSource = import.meta.url.endsWith('.ts')
    const url = new URL(fromSource ? './worker.ts' : './worker.js', import.meta.url)
    this.worker = new Worker(url, { workerData: { file }, execArgv: fromSource ? ['--import', 'tsx'] : [] })
    this.worker.on('message', (responses: Response[]) => {
      for (const r of responses) {
        const p = this.pending.get(r.id)
        if (!p) continue
        this.pending.delete(r.id)
        if (r.ok) p.resolve(r.result)
        else p.reject(new Error(`queue ${r.error}`))
      }
    })
    this.worker.on('error', (err) => this.failAll(err))
    this.worker.on('exit', (code) => {
      if (!this.closed || this.pending.size) this.failAll(new Error(`queue worker exited with code ${code}`))
    })
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
  }

  private call<T>(op: Op, ...args: unknown[]): Promise<T> {
    if (this.closed) return Promise.reject(new Error('queue is closed'))
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      // Requests made in the same tick travel together: one postMessage, not one each.
      this.outbox.push({ id, op, args } as Request)
      if (this.outbox.length === 1) queueMicrotask(this.flush)
    })
  }

  private outbox: Request[] = []
  private readonly flush = () => {
    const batch = this.outbox
    this.outbox = []
    this.worker.postMessage(batch)
  }

  enqueue(message: NewMessage, leaseUntil?: number): Promise<number[]> {
    return this.call('enqueue', message, leaseUntil)
  }

  claim(options: ClaimOptions): Promise<ClaimResult> {
    return this.call<ClaimResult>('claim', options).then((r) => {
      // Buffers arrive as Uint8Array from the worker.
      for (const job of r.jobs) {
        const m = job.message
        m.headers = Buffer.from(m.headers.buffer, m.headers.byteOffset, m.headers.byteLength)
        if ('inline' in m.body) m.body = { inline: Buffer.from(m.body.inline.buffer, m.body.inline.byteOffset, m.body.inline.byteLength) }
      }
      return r
    })
  }

  async complete(queueId: string, results: RecipientResult[], bounce?: NewMessage, suppress?: Suppression[]): Promise<CompleteResult> {
    const r = await this.call<{ finished: boolean; bodyFile?: string }>('complete', queueId, results, bounce, Date.now(), suppress)
    if (r.bodyFile) await this.spool.remove(r.bodyFile)
    return { finished: r.finished }
  }

  recover(now: number): Promise<number> {
    return this.call('recover', now)
  }

  list(): Promise<QueueEntry[]> {
    return this.call('list')
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
      for (const c of list) c.message.headers = Buffer.from(c.message.headers.buffer, c.message.headers.byteOffset, c.message.headers.byteLength)
      return list
    })
  }

  markDelayNotified(queueId: string, dsn?: NewMessage): Promise<boolean> {
    return this.call('markDelayNotified', queueId, dsn, Date.now())
  }

  async close(): Promise<void> {
    if (this.closed) return
    await new Promise<void>((resolve) => {
      this.worker.once('exit', () => resolve())
      this.worker.postMessage('close')
      this.closed = true
    })
  }
}
