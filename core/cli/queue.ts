import fs from 'node:fs'
import path from 'node:path'
import { loadConfig } from '../config/load.js'
import { SqliteStore } from '../queue/sqlite/store.js'
import type { QueueEntry } from '../queue/types.js'

const time = (ms?: number) => (ms === undefined ? '-' : new Date(ms).toISOString().replace('.000', ''))

/** `relay queue list`: every queued message with each recipient's state (reads the data directory). */
export async function queueList(opts: { config?: string; json?: boolean }): Promise<void> {
  const config = await loadConfig(opts.config)
  const file = path.join(config.dataDir, 'queue.sqlite')
  let entries: QueueEntry[] = []
  if (fs.existsSync(file)) {
    const store = new SqliteStore(file, { readonly: true })
    try {
      entries = store.list()
    } finally {
      store.close()
    }
  }
  if (opts.json) {
    process.stdout.write(JSON.stringify(entries, null, 2) + '\n')
    return
  }
  if (!entries.length) {
    process.stdout.write('queue is empty\n')
    return
  }
  for (const m of entries) {
    process.stdout.write(`${m.id}  ${time(m.receivedAt)}  ${m.size} bytes  from <${m.sender}>  ${m.messageId ?? '(no Message-ID)'}\n`)
    for (const r of m.recipients) {
      process.stdout.write(
        `    ${r.state.padEnd(9)} <${r.address}>  attempts ${r.attempts}  next ${time(r.nextAttemptAt)}${r.lastResponse ? `  last: ${r.lastResponse}` : ''}${r.category ? `  category: ${r.category}` : ''}\n`,
      )
    }
  }
  process.stdout.write(`${entries.length} message${entries.length === 1 ? '' : 's'} in queue\n`)
}
