// `relay suppression list|add|remove`: the addresses refused at RCPT, on the configured queue
// (env.openQueue: SQLite in the data directory, or the shared PostgreSQL queue). A running relay
// checks RCPT against the queue itself, so a change here applies to its next RCPT.
import { addressKey, isRelayPostmaster, parseDuration, type CommandEnv, type QueueOperations, type RelayConfig, type Suppression } from '../../../core/index.js'
import { json, out, time as toSecond } from './output.js'

// To the second, as the queue verbs print times (docs/config.md); no expiry: never.
// An expiry past what a date can hold (written before durations were capped at 100 years) is never.
const time = (ms?: number) => (ms === undefined || Number.isNaN(new Date(ms).getTime()) ? 'never' : toSecond(ms))

async function withSuppressions<T>(env: CommandEnv, configFile: string | undefined, fn: (s: QueueOperations['suppressions']) => Promise<T>): Promise<T> {
  const opened = await env.openQueue(configFile)
  try {
    return await fn(opened.queue.suppressions)
  } finally {
    await opened.close()
  }
}

/** Exit code 1 (not found), or 2 for a usage error (no address, a bad --ttl). */
function fail(message: string, code: 1 | 2 = 1): never {
  process.stderr.write(`relay: ${message}\n`)
  process.exit(code)
}

/** `relay suppression list`: the addresses refused at RCPT, with reason, source and expiry. */
export async function suppressionList(env: CommandEnv, opts: { config?: string; json?: boolean }): Promise<void> {
  const entries = await withSuppressions(env, opts.config, (s) => s.list())
  if (opts.json) {
    json(entries)
    return
  }
  if (!entries.length) {
    out('no suppressed addresses\n')
    return
  }
  for (const e of entries) {
    out(`${e.address}  added ${time(e.createdAt)}  expires ${time(e.expiresAt)}  source ${e.source ?? '-'}  reason: ${e.reason}\n`)
  }
  out(`${entries.length} suppressed address${entries.length === 1 ? '' : 'es'}\n`)
}

/** `relay suppression add <address>`: refuse mail to it (default expiry: `delivery.suppression.ttl`). */
export async function suppressionAdd(env: CommandEnv, address: string, opts: { config?: string; reason?: string; ttl?: string }): Promise<void> {
  // The spelling RCPT compares (A-labels, one form of an address literal), lower case.
  const key = addressKey(address)
  if (!key) fail(`not an email address: ${address}`, 2)
  const config = (await env.loadConfig(opts.config)) as RelayConfig
  // RCPT to it is always taken (RFC 5321 §4.5.1): an entry would refuse nothing, so none is written.
  if (isRelayPostmaster(key, config)) fail(`${address} is the relay's postmaster: mail to it is always taken (RFC 5321 §4.5.1), so it is never suppressed`)
  let ttl = config.delivery.suppression.ttl
  if (opts.ttl !== undefined) {
    const parsed = parseDuration(opts.ttl)
    if (parsed === undefined) fail(`--ttl: expected a duration like '30d', '12h' or 0 (never expires), got ${JSON.stringify(opts.ttl)}`, 2)
    ttl = parsed
  }
  const now = Date.now()
  const entry: Suppression = {
    address: key,
    reason: (opts.reason ?? 'added by hand').replace(/[\x00-\x1f\x7f]+/g, ' ').trim() || 'added by hand',
    source: 'cli',
    createdAt: now,
    expiresAt: ttl > 0 ? now + ttl : undefined,
  }
  await withSuppressions(env, opts.config, (s) => s.add([entry]))
  out(`suppressed ${entry.address} (expires ${time(entry.expiresAt)})\n`)
}

/** `relay suppression remove <address>`: take mail for it again. Exit code 1 when it was not listed. */
export async function suppressionRemove(env: CommandEnv, address: string, opts: { config?: string }): Promise<void> {
  // As listed (the spelling RCPT compares), or as an older entry was written.
  const key = addressKey(address) ?? address.toLowerCase()
  const removed = await withSuppressions(env, opts.config, async (s) => (await s.remove(key)) || (key !== address.toLowerCase() && (await s.remove(address))))
  if (!removed) fail(`${address} is not suppressed`)
  out(`removed ${key}\n`)
}
