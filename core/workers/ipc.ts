// The messages between the primary process and its SMTP worker processes (config `workers`), over
// node:cluster's IPC channel with structured-clone ('advanced') serialization. A worker calls the
// primary (queue intake, queue reads, operator verbs, a plugin's own handlers) and is answered by id.
import type { Worker } from 'node:cluster'
import type { LoopDelay } from '../loop-delay.js'
import { deserializeError, plain, serializeError, type SerializedError } from '../plain-data.js'

export { deserializeError, plain, serializeError, type SerializedError }

/** What a worker calls in the primary. `plugin:<at>` is a plugin's own handler (ctx.processes). */
export type CallTarget = 'queue' | 'ops' | 'clients' | 'throttle' | `plugin:${string}`

export type WorkerMessage =
  | { relay: 'call'; id: number; target: CallTarget; method: string; args: unknown[] }
  | { relay: 'event'; name: string; data: unknown }
  /** No answer wanted (a client's session closed). */
  | { relay: 'tell'; target: CallTarget; method: string; args: unknown[] }
  | { relay: 'ready'; listeners: { host: string; port: number; role: 'mx' | 'submission' }[] }
  | { relay: 'counts'; counts: WorkerCounts }
  /** Phase one of a reload done: the new generation is set up (ok) or refused. */
  | { relay: 'prepared'; seq: number; ok: boolean; error?: string }
  | { relay: 'failed'; error: string; code?: string; config?: { file?: string; issues: { path: string; message: string }[] } }

export type PrimaryMessage =
  | { relay: 'result'; id: number; ok: true; value: unknown }
  | { relay: 'result'; id: number; ok: false; error: SerializedError }
  /** A reload in two phases: every process prepares, then all commit, or all abort. */
  | { relay: 'reload'; seq: number; fingerprint: string }
  | { relay: 'reload-commit'; seq: number; events: string[] }
  | { relay: 'reload-abort'; seq: number }
  | { relay: 'reloadTls' }
  | { relay: 'stop' }

/** A worker's sessions, sent every second and at stop (the primary sums them for metrics). */
export interface WorkerCounts {
  connections: { mx: number; submission: number }
  active: { mx: number; submission: number }
  eventLoopDelay: LoopDelay
  delivery: { openConnections: number; pausedDestinations: number }
}

export const isRelayMessage = (m: unknown): m is { relay: string } => typeof m === 'object' && m !== null && typeof (m as { relay?: unknown }).relay === 'string'

/**
 * Structured clone turns a Buffer into a plain Uint8Array: make them Buffers again (headers and
 * small bodies travel inline), without copying the bytes.
 */
export function reviveBuffers<T>(value: T, depth = 0): T {
  if (value instanceof Uint8Array && !Buffer.isBuffer(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength) as T
  if (depth > 8 || typeof value !== 'object' || value === null || Buffer.isBuffer(value)) return value
  if (Array.isArray(value)) return value.map((v) => reviveBuffers(v, depth + 1)) as T
  if (Object.getPrototypeOf(value) !== Object.prototype) return value
  for (const [k, v] of Object.entries(value)) (value as Record<string, unknown>)[k] = reviveBuffers(v, depth + 1)
  return value
}

/** Calls from one side, answered by id; a call still open when the channel closes is refused. */
export class Calls {
  private next = 1
  private readonly open = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()

  constructor(private readonly send: (m: WorkerMessage) => boolean) {}

  call<T>(target: CallTarget, method: string, args: unknown[]): Promise<T> {
    const id = this.next++
    return new Promise<T>((resolve, reject) => {
      this.open.set(id, { resolve: resolve as (v: unknown) => void, reject })
      let sent = false
      try {
        sent = this.send({ relay: 'call', id, target, method, args: args.map((a) => plain(a)) })
      } catch (err) {
        this.open.delete(id)
        return reject(err as Error)
      }
      if (!sent) {
        this.open.delete(id)
        reject(Object.assign(new Error('4.3.0 The relay is restarting, try again later'), { responseCode: 451 }))
      }
    })
  }

  /** A call that wants no answer. */
  tell(target: CallTarget, method: string, args: unknown[]): void {
    this.send({ relay: 'tell', target, method, args })
  }

  settle(m: Extract<PrimaryMessage, { relay: 'result' }>): void {
    const c = this.open.get(m.id)
    if (!c) return
    this.open.delete(m.id)
    if (m.ok) c.resolve(reviveBuffers(m.value))
    else c.reject(deserializeError(m.error))
  }

  /** The primary is gone: nothing open will be answered (SMTP says 451, the client retries). */
  failAll(): void {
    for (const c of this.open.values()) c.reject(Object.assign(new Error('4.3.0 The relay is restarting, try again later'), { responseCode: 451 }))
    this.open.clear()
  }
}

/** Sends to a worker, false when its channel is closed (worker.send's false only means "queued"). */
export function sendTo(worker: Worker, m: PrimaryMessage): boolean {
  if (!worker.isConnected()) return false
  try {
    worker.send(m)
    return true
  } catch {
    return false
  }
}
