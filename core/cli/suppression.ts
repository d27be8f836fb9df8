import fs from 'node:fs'
import path from 'node:path'
import { loadConfig } from '../config/load.js'
import { parseDuration } from '../config/duration.js'
import { SqliteStore } from '../queue/sqlite/store.js'
import { parseAddress } from '../mail/address.js'
import type { Suppression } from '../queue/types.js'

const time = (ms?: number) => (ms === undefined ? 'never' : new Date(ms).toISOString().replace('.000', ''))

/**
 * The queue database of the configured data directory, read-write. A running relay has it open
 * too: SQLite in WAL mode takes a second writer (each waits up to busy_timeout for the other), and
 * the relay's RCPT check reads the table itself, so a change here applies to the next RCPT.
 */
async function withStore<T>(configFile: string | undefined, fn: (store: SqliteStore) => T): Promise<T> {
  const config = await loadConfig(configFile)
  fs.mkdirSync(config.dataDir, { recursive: true })
  const store = new SqliteStore(path.join(config.dataDir, 'queue.sqlite'))
  try {
    return fn(store)
  } finally {
    store.close()
  }
}

function fail(message: string): never {
  process.stderr.write(`relay: ${message}\n`)
  process.exit(1)
}

/** `relay suppression list`: the addresses refused at RCPT, with reason, source and expiry. */
export async function suppressionList(opts: { config?: string; json?: boolean }): Promise<void> {
  const entries = await withStore(opts.config, (s) => s.listSuppressed(Date.now()))
  if (opts.json) {
    process.stdout.write(JSON.stringify(entries, null, 2) + '\n')
    return
  }
  if (!entries.length) {
    process.stdout.write('no suppressed addresses\n')
    return
  }
  for (const e of entries) {
    process.stdout.write(`${e.address}  added ${time(e.createdAt)}  expires ${time(e.expiresAt)}  source ${e.source ?? '-'}  reason: ${e.reason}\n`)
  }
  process.stdout.write(`${entries.length} suppressed address${entries.length === 1 ? '' : 'es'}\n`)
}

/** `relay suppression add <address>`: refuse mail to it (default expiry: `delivery.suppression.ttl`). */
export async function suppressionAdd(address: string, opts: { config?: string; reason?: string; ttl?: string }): Promise<void> {
  if (!parseAddress(address)) fail(`not an email address: ${address}`)
  const config = await loadConfig(opts.config)
  let ttl = config.delivery.suppression.ttl
  if (opts.ttl !== undefined) {
    const parsed = parseDuration(opts.ttl)
    if (parsed === undefined) fail(`--ttl: expected a duration like '30d', '12h' or 0 (never expires), got ${JSON.stringify(opts.ttl)}`)
    ttl = parsed
  }
  const now = Date.now()
  const entry: Suppression = {
    address: address.toLowerCase(),
    reason: (opts.reason ?? 'added by hand').replace(/[\x00-\x1f\x7f]+/g, ' ').trim() || 'added by hand',
    source: 'cli',
    createdAt: now,
    expiresAt: ttl > 0 ? now + ttl : undefined,
  }
  await withStore(opts.config, (s) => s.suppress([entry], now))
  process.stdout.write(`suppressed ${entry.address} (expires ${time(entry.expiresAt)})\n`)
}

/** `relay suppression remove <address>`: take mail for it again. Exit code 1 when it was not listed. */
export async function suppressionRemove(address: string, opts: { config?: string }): Promise<void> {
  const removed = await withStore(opts.config, (s) => s.unsuppress(address))
  if (!removed) fail(`${address} is not suppressed`)
  process.stdout.write(`removed ${address.toLowerCase()}\n`)
}
