// The queue worker owns the SQLite database, so fsyncs never block the SMTP event loop. Requests
// that arrive while a commit runs are applied together in the next transaction (group commit).
import { parentPort, workerData } from 'node:worker_threads'
import { SqliteStore } from './store.js'

export type Request =
  | { id: number; op: 'enqueue'; args: Parameters<SqliteStore['enqueue']> }
  | { id: number; op: 'claim'; args: Parameters<SqliteStore['claim']> }
  | { id: number; op: 'complete'; args: Parameters<SqliteStore['complete']> }
  | { id: number; op: 'recover'; args: Parameters<SqliteStore['recover']> }
  | { id: number; op: 'list'; args: [] }
  | { id: number; op: 'bodyFiles'; args: [] }
  | { id: number; op: 'isSuppressed'; args: Parameters<SqliteStore['isSuppressed']> }
  | { id: number; op: 'suppress'; args: Parameters<SqliteStore['suppress']> }
  | { id: number; op: 'unsuppress'; args: Parameters<SqliteStore['unsuppress']> }
  | { id: number; op: 'listSuppressed'; args: Parameters<SqliteStore['listSuppressed']> }
  | { id: number; op: 'delayCandidates'; args: Parameters<SqliteStore['delayCandidates']> }
  | { id: number; op: 'markDelayNotified'; args: Parameters<SqliteStore['markDelayNotified']> }

export type Response = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string }

if (parentPort) {
  const port = parentPort
  const store = new SqliteStore((workerData as { file: string }).file)
  let batch: Request[] = []
  let scheduled = false

  const apply = store.db.transaction((requests: Request[]) => {
    const out: Response[] = []
    for (const r of requests) {
      try {
        // Each request in its own savepoint: one failing request does not undo the others.
        const result = store.db.transaction(() => (store[r.op] as (...a: unknown[]) => unknown)(...r.args))()
        out.push({ id: r.id, ok: true, result })
      } catch (err) {
        out.push({ id: r.id, ok: false, error: (err as Error).message })
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
      responses = requests.map((r) => ({ id: r.id, ok: false, error: (err as Error).message }))
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
