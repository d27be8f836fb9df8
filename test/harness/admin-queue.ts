// The queue of a running relay read from its admin API, from this process: for the tests that wait
// on the queue or check what a verb did to it, where spawning `relay queue list` (a CLI process,
// ~0.5 s of CPU) for every look is not what the test is about. The CLI reaches the same listing
// through the same API (plugins/admin/cli/queue.ts), found the same way: `<dataDir>/admin.json`.
import fs from 'node:fs'
import path from 'node:path'
import type { QueueListEntry, RelayProcess } from './relay.js'

/** A GET on the running relay's admin API; its JSON answer (throws on a non-2xx answer). */
export async function adminGet<T>(relay: RelayProcess, pathAndQuery: string): Promise<T> {
  const { url, token } = JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string; token?: string }
  const res = await fetch(new URL(pathAndQuery, url), { headers: token ? { Authorization: `Bearer ${token}` } : {} })
  if (!res.ok) throw new Error(`admin API GET ${pathAndQuery}: HTTP ${res.status} ${await res.text()}`)
  return (await res.json()) as T
}

/** The queue as `relay queue list --json` lists it (`query`: its filters, e.g. `state=held`). */
export async function adminQueue(relay: RelayProcess, query = ''): Promise<(QueueListEntry & { heldAt?: number })[]> {
  return (await adminGet<{ messages: (QueueListEntry & { heldAt?: number })[] }>(relay, `/api/queue${query ? `?${query}` : ''}`)).messages
}

/** Polls the admin API's queue (every 50 ms) until `check` holds, at most `timeoutMs`. */
export async function adminQueueUntil(relay: RelayProcess, check: (q: QueueListEntry[]) => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      last = await adminQueue(relay)
      if (check(last as QueueListEntry[])) return
    } catch (err) {
      // admin.json not written yet (a relay restarting), or the listener not up yet
      last = err instanceof Error ? err.message : err
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
