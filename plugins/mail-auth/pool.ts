// mail-auth's worker threads: DKIM/ARC/DMARC checks and ARC seals run in worker.ts, so an expensive
// (but legal) message does not stall other sessions, and a check that runs past its time limit (or
// whose hook was given up on: the hook's AbortSignal) is stopped by ending its thread; the other
// jobs on that thread start again on a fresh one. Jobs wait in a bounded queue when every thread
// has `jobsPerThread` of them; beyond `maxQueue` waiting jobs the pool refuses (PoolBusyError).
import { Worker } from 'node:worker_threads'
import type { PluginContext } from '../../core/index.js'
import type { MailauthResolver } from './dns.js'
import type { MessageChecks, MessageInput } from './checks.js'
import type { SealKey, SealOutcome } from './arc-seal.js'

export type Job =
  | { kind: 'check'; input: Omit<MessageInput, 'message' | 'resolver'> }
  | { kind: 'seal'; key: SealKey; seal: { cv: 'none' | 'pass' | 'fail'; authResults: string; strict: boolean } }
export type JobResult<J extends Job> = J extends { kind: 'check' } ? MessageChecks : SealOutcome

/** Messages from the main thread to a worker. */
export type ToWorker =
  | { type: 'job'; id: number; job: Job }
  | { type: 'chunk'; id: number; data: Uint8Array }
  | { type: 'end'; id: number }
  | { type: 'dns'; q: number; result?: unknown; error?: { code: string; message: string } }
/** Messages from a worker to the main thread. */
type FromWorker =
  | { type: 'ready' }
  | { type: 'pull'; id: number }
  | { type: 'dns'; q: number; name: string; rrtype: string }
  | { type: 'done'; id: number; result: unknown }
  | { type: 'failed'; id: number; error: string }

export class CheckTimeoutError extends Error {}
export class PoolBusyError extends Error {}

const WORKER_OPTIONS = { resourceLimits: { maxOldGenerationSizeMb: 512 } }

/** Built (dist/): worker.js beside this file. From source (tsx, vitest): worker.ts, loaded through tsx's API. */
function startWorker(): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./worker.js', import.meta.url), WORKER_OPTIONS)
  let api = 'tsx/esm/api'
  try {
    api = import.meta.resolve(api)
  } catch {
    // no import.meta.resolve here: the bare name, resolved from the working directory
  }
  const entry = new URL('./worker.ts', import.meta.url).href
  return new Worker(`import(${JSON.stringify(api)}).then((m) => m.tsImport(${JSON.stringify(entry)}, ${JSON.stringify(entry)}))`, { ...WORKER_OPTIONS, eval: true })
}

/** Message bytes sent to a worker per pull. */
const PULL_BYTES = 256 * 1024

interface Task {
  id: number
  job: Job
  /** The message, from its start; called again when the job restarts on another thread. */
  source: () => AsyncIterable<Buffer>
  iterator?: AsyncIterator<Buffer>
  slot?: Slot
  done: boolean
  resolve: (v: unknown) => void
  reject: (e: Error) => void
  timer: NodeJS.Timeout
  signal?: AbortSignal
  onAbort?: () => void
}

interface Slot {
  worker: Worker
  tasks: Map<number, Task>
  /** Resolves once the thread has loaded its modules (or has ended). */
  ready: Promise<void>
}

export interface PoolOptions {
  threads: number
  jobsPerThread: number
  maxQueue: number
  /** Longest time one job may take (from when it was submitted). */
  timeoutMs: number
  resolver: MailauthResolver
  log: PluginContext<unknown>['log']
}

export class CheckPool {
  private readonly slots: (Slot | undefined)[]
  private waiting: Task[] = []
  private nextId = 0
  private closed = false
  private drained?: () => void

  constructor(private readonly o: PoolOptions) {
    this.slots = new Array<Slot | undefined>(o.threads).fill(undefined)
    // Started now: loading mailauth in a fresh thread takes a few hundred ms, which the first
    // messages would otherwise wait for.
    for (let i = 0; i < o.threads; i++) this.slots[i] = this.spawn(i)
  }

  /** Runs `job` on a worker thread, the message read from `source`; `signal` gives up on it early. */
  run<J extends Job>(job: J, source: () => AsyncIterable<Buffer>, signal?: AbortSignal): Promise<JobResult<J>> {
    if (this.closed) return Promise.reject(new Error('mail-auth check pool is closed'))
    if (signal?.aborted) return Promise.reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
    if (this.waiting.length >= this.o.maxQueue && !this.freeSlot()) {
      return Promise.reject(new PoolBusyError(`${this.waiting.length} message checks already waiting`))
    }
    return new Promise<JobResult<J>>((resolve, reject) => {
      const task: Task = { id: ++this.nextId, job, source, done: false, resolve: resolve as (v: unknown) => void, reject, timer: undefined as unknown as NodeJS.Timeout, signal }
      task.timer = setTimeout(() => this.fail(task, new CheckTimeoutError(`message check took longer than ${this.o.timeoutMs} ms`)), this.o.timeoutMs)
      if (signal) {
        task.onAbort = () => this.fail(task, signal.reason instanceof Error ? signal.reason : new Error('aborted'))
        signal.addEventListener('abort', task.onAbort, { once: true })
      }
      this.waiting.push(task)
      this.dispatch()
    })
  }

  /** Resolves once every thread has started (at most `timeoutMs`), so the first messages do not wait for one. */
  async ready(timeoutMs: number): Promise<void> {
    // A timer that holds the process open: the threads are unref'd and would not.
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))
    try {
      await Promise.race([Promise.all(this.slots.map((s) => s?.ready)), timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Jobs running and waiting (for logs and tests). */
  get load(): { running: number; waiting: number } {
    return { running: this.slots.reduce((n, s) => n + (s?.tasks.size ?? 0), 0), waiting: this.waiting.length }
  }

  /** Takes no new jobs; the running ones may finish (up to the job time limit), then the threads end. */
  async close(): Promise<void> {
    this.closed = true
    if (this.load.running + this.load.waiting > 0) {
      await new Promise<void>((resolve) => {
        this.drained = resolve
        setTimeout(resolve, this.o.timeoutMs).unref()
      })
    }
    await Promise.all(this.slots.map((s) => s?.worker.terminate()))
  }

  private freeSlot(): Slot | undefined {
    let best: Slot | undefined
    for (let i = 0; i < this.slots.length; i++) {
      const slot = this.slots[i] ?? (this.slots[i] = this.spawn(i))
      if (slot.tasks.size < this.o.jobsPerThread && (!best || slot.tasks.size < best.tasks.size)) best = slot
    }
    return best
  }

  private dispatch(): void {
    while (this.waiting.length) {
      const slot = this.freeSlot()
      if (!slot) return
      const task = this.waiting.shift()!
      task.slot = slot
      task.iterator = task.source()[Symbol.asyncIterator]()
      slot.tasks.set(task.id, task)
      slot.worker.postMessage({ type: 'job', id: task.id, job: task.job } satisfies ToWorker)
    }
  }

  private spawn(index: number): Slot {
    const worker = startWorker()
    // The pool never keeps the relay running on its own (shutdown closes it).
    worker.unref()
    let ready!: () => void
    const slot: Slot = { worker, tasks: new Map(), ready: new Promise<void>((r) => (ready = r)) }
    worker.once('message', ready)
    worker.once('exit', ready)
    worker.on('message', (m: FromWorker) => void this.onMessage(slot, m))
    worker.on('error', (err) => this.o.log.error({ err }, 'mail-auth worker thread failed'))
    worker.on('exit', () => {
      if (this.slots[index] === slot) this.slots[index] = undefined
      // Ended by itself (a crash, out of memory): its jobs fail; ended by fail(): it has none left.
      for (const task of [...slot.tasks.values()]) this.settle(task, new Error('mail-auth worker thread exited'))
      this.dispatch()
    })
    return slot
  }

  private async onMessage(slot: Slot, m: FromWorker): Promise<void> {
    switch (m.type) {
      case 'ready':
        return
      case 'pull': {
        const task = slot.tasks.get(m.id)
        const iterator = task?.iterator
        if (!task || !iterator) return
        // Up to PULL_BYTES per message: fewer, larger messages cost the event loop less.
        const parts: Buffer[] = []
        let size = 0
        let ended = false
        try {
          while (size < PULL_BYTES) {
            const next = await iterator.next()
            if (next.done) {
              ended = true
              break
            }
            parts.push(next.value)
            size += next.value.length
          }
        } catch (err) {
          this.settle(task, err as Error)
          return
        }
        if (slot.tasks.get(m.id) !== task || task.iterator !== iterator) return // finished or moved meanwhile
        if (size) {
          // One copy into memory of its own (chunks may share theirs), handed over without another.
          const data = new Uint8Array(size)
          let at = 0
          for (const p of parts) {
            data.set(p, at)
            at += p.length
          }
          slot.worker.postMessage({ type: 'chunk', id: m.id, data } satisfies ToWorker, [data.buffer])
        }
        if (ended) slot.worker.postMessage({ type: 'end', id: m.id } satisfies ToWorker)
        return
      }
      case 'dns': {
        let reply: ToWorker
        try {
          reply = { type: 'dns', q: m.q, result: await this.o.resolver(m.name, m.rrtype) }
        } catch (err) {
          const e = err as { code?: unknown; message?: unknown }
          reply = { type: 'dns', q: m.q, error: { code: typeof e.code === 'string' ? e.code : 'ESERVFAIL', message: String(e.message ?? err) } }
        }
        if (this.slots.includes(slot)) slot.worker.postMessage(reply)
        return
      }
      case 'done':
      case 'failed': {
        const task = slot.tasks.get(m.id)
        if (task) this.settle(task, m.type === 'failed' ? new Error(m.error) : undefined, m.type === 'done' ? m.result : undefined)
        return
      }
    }
  }

  /** Ends a task with its result or error (once), frees its place and starts waiting jobs. */
  private settle(task: Task, err?: Error, result?: unknown): void {
    if (task.done) return
    task.done = true
    clearTimeout(task.timer)
    if (task.onAbort) task.signal?.removeEventListener('abort', task.onAbort)
    task.slot?.tasks.delete(task.id)
    this.waiting = this.waiting.filter((t) => t !== task)
    void task.iterator?.return?.().catch(() => undefined)
    if (err) task.reject(err)
    else task.resolve(result)
    if (this.closed && this.drained && this.load.running + this.load.waiting === 0) this.drained()
    this.dispatch()
  }

  /**
   * Gives up on a task: its thread may be busy with it, so the thread is ended (it stops costing
   * CPU at once); the other jobs it had start again from their beginning on a fresh thread.
   */
  private fail(task: Task, err: Error): void {
    if (task.done) return
    const slot = task.slot
    if (slot) {
      const index = this.slots.indexOf(slot)
      // A fresh thread at once, so the next check does not wait for one to start.
      if (index >= 0) this.slots[index] = this.closed ? undefined : this.spawn(index)
      slot.tasks.delete(task.id)
      const others = [...slot.tasks.values()]
      slot.tasks.clear()
      void slot.worker.terminate()
      for (const t of others) {
        void t.iterator?.return?.().catch(() => undefined)
        t.iterator = undefined
        t.slot = undefined
      }
      this.waiting.unshift(...others)
      this.o.log.warn({ restarted: others.length, reason: err.message }, 'mail-auth worker thread ended: a message check ran past its time limit')
    }
    this.settle(task, err)
  }
}
