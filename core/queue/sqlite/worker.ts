// The queue worker owns the SQLite database, so fsyncs never block the SMTP event loop. Requests
// that arrive while a commit runs are applied together in the next transaction (group commit).
import { parentPort, workerData } from 'node:worker_threads'
import { SqliteStore } from './store.js'
import { errorText } from '../../error-text.js'

/** The store methods the queue calls through the worker. */
type Op =
  | 'enqueue'
  | 'claim'
  | 'renewLeases'
  | 'complete'
  | 'recover'
  | 'list'
  | 'show'
  | 'message'
  | 'hold'
  | 'release'
  | 'remove'
  | 'bounceNow'
  | 'flush'
  | 'applyLifetime'
  | 'summary'
  | 'recentAttempts'
  | 'stats'
  | 'recordComplaint'
  | 'bodyFiles'
  | 'isSuppressed'
  | 'suppress'
  | 'unsuppress'
  | 'listSuppressed'
  | 'delayCandidates'
  | 'markDelayNotified'
  | 'owedDsn'
  | 'owedDsnMessages'
  | 'sendOwedDsn'

export type Request = { [K in Op]: { id: number; op: K; args: Parameters<SqliteStore[K]> } }[Op]

/** A failure carries SQLite's code (SQLITE_FULL: the client is told 452 4.3.1, as for a full spool). */
export type Response = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string; code?: string }

export interface WorkerOptions {
  file: string
  /** How long reputation counters and the sent log are kept. */
  retentionMs: number
}

/** SQLite's codes for a file that is damaged or no database at all. */
const DAMAGED = new Set(['SQLITE_CORRUPT', 'SQLITE_NOTADB'])

/**
 * What went wrong, as text that crosses the thread boundary: better-sqlite3's SqliteError is no
 * native Error, so thrown out of the worker it arrived as `{ code }` alone ("[object Object]"). A
 * damaged database names its file and the way out.
 */
export function describeError(err: unknown, file: string): { message: string; code?: string } {
  const code = typeof (err as { code?: unknown })?.code === 'string' ? (err as { code: string }).code : undefined
  const text = (err as { message?: unknown })?.message
  const message = typeof text === 'string' && text ? text : (code ?? errorText(err))
  if (code && DAMAGED.has(code)) {
    return {
      code,
      message: `queue database ${file} is corrupt (${code}: ${message}): restore it from a backup (relay queue restore <backup dir> into a new data directory), or move it and its -wal/-shm files aside to start with an empty queue`,
    }
  }
  return { message, code }
}

/** Pruning old counters runs at most this often (inside a batch that commits anyway). */
const PRUNE_EVERY_MS = 3_600_000

if (parentPort) {
  const port = parentPort
  const { file, retentionMs } = workerData as WorkerOptions
  let opened: SqliteStore
  try {
    opened = new SqliteStore(file)
  } catch (err) {
    // A native Error with its code: the queue's 'error' handler gets both (queue.ts).
    const { message, code } = describeError(err, file)
    throw Object.assign(new Error(message), code ? { code } : {})
  }
  const store = opened
  // Damage found by any request (a scan, a delivery's record) holds for the file: new mail is
  // refused from then on (451), not acknowledged into a database that cannot give it back.
  let damaged: { message: string; code: string } | undefined
  const failed = (id: number, err: unknown): Response => {
    const { message, code } = describeError(err, file)
    if (code && DAMAGED.has(code)) damaged ??= { message, code }
    return { id, ok: false, error: message, code }
  }
  let batch: Request[] = []
  let scheduled = false
  let prunedAt = 0

  const apply = store.db.transaction((requests: Request[]) => {
    const now = Date.now()
    if (now - prunedAt >= PRUNE_EVERY_MS) {
      prunedAt = now
      try {
        store.db.transaction(() => store.prune(now, retentionMs))()
      } catch {
        // Pruning is housekeeping: a failure must not fail the requests; it is tried again later.
      }
    }
    const out: Response[] = []
    for (const r of requests) {
      if (damaged && r.op === 'enqueue') {
        out.push({ id: r.id, ok: false, error: damaged.message, code: damaged.code })
        continue
      }
      try {
        // Each request in its own savepoint: one failing request does not undo the others.
        const result = store.db.transaction(() => (store[r.op] as (...a: unknown[]) => unknown)(...r.args))()
        out.push({ id: r.id, ok: true, result })
      } catch (err) {
        out.push(failed(r.id, err))
      }
    }
    return out
  })

  const flush = () => {
    scheduled = false
    const requests = batch
    batch = []
    let responses: Response[]
    try {
      // IMMEDIATE: the write lock is taken up front (waiting on busy_timeout), so a batch that reads
      // before it writes cannot fail with SQLITE_BUSY when another process (the CLI) wrote meanwhile.
      responses = apply.immediate(requests)
    } catch (err) {
      responses = requests.map((r) => failed(r.id, err))
    }
    port.postMessage(responses)
  }

  port.on('message', (msg: Request[] | 'close') => {
    if (msg === 'close') {
      if (batch.length) flush()
      store.close()
      port.close()
      return
    }
    batch.push(...msg)
    if (!scheduled) {
      scheduled = true
      setImmediate(flush)
    }
  })
}
