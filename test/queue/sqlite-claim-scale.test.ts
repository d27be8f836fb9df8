// The SQLite claim in bounded work: a domain at its concurrency limit with thousands of due
// recipients at the head of the queue neither hides the other domains' work (the per-domain pass,
// sqlite/due.ts) nor is claimed past its limit; held work at the head is passed over the same way.
import { afterEach, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { tempDir } from '../harness/relay.js'
import { SqliteStore } from '../../core/queue/sqlite/store.js'
import type { NewMessage } from '../../core/queue/types.js'

const dirs: string[] = []
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

function open(): SqliteStore {
  const dir = tempDir('relay-claim-scale-')
  dirs.push(dir)
  const store = new SqliteStore(path.join(dir, 'queue.sqlite'))
  store.db.pragma('synchronous = OFF') // a test database: nothing to keep across a crash
  return store
}

let seq = 0
function message(domain: string, receivedAt: number): NewMessage {
  const id = `C${String(++seq).padStart(10, '0')}`
  return {
    id, sender: 's@claim.test', recipients: [{ address: `r${seq}@${domain}`, domain }], headers: Buffer.from('Subject: x\r\n\r\n'),
    body: { inline: Buffer.from('x\r\n') }, size: 17, receivedAt, expiresAt: receivedAt + 86_400_000, meta: {},
  }
}

/** `heads` due recipients at `busy` first (oldest), then a few at each of `others`. */
function fill(store: SqliteStore, now: number, heads: number, busy: string, others: string[]): NewMessage[] {
  const later: NewMessage[] = []
  store.db.transaction(() => {
    for (let i = 0; i < heads; i++) store.enqueue(message(busy, now - 100_000 + i))
    for (const [k, d] of others.entries()) for (let i = 0; i < 3; i++) later.push(message(d, now - 50_000 + k * 10 + i))
    for (const m of later) store.enqueue(m)
  })()
  return later
}

describe('SQLite claim with full domains at the head of the queue', () => {
  it("finds the other domains' due work behind thousands of a full domain's, within the limits", () => {
    const store = open()
    const now = Date.now()
    const others = ['b.claim.test', 'c.claim.test']
    const later = fill(store, now, 6000, 'a.claim.test', others)
    const r = store.claim({ limit: 10, perDomain: 2, inFlight: { 'a.claim.test': 2 }, leaseMs: 60_000, now })
    expect(r.jobs.map((j) => j.domain).sort()).toEqual(['b.claim.test', 'b.claim.test', 'c.claim.test', 'c.claim.test'])
    // Oldest first within a domain.
    expect(r.jobs.filter((j) => j.domain === 'b.claim.test').map((j) => j.message.id)).toEqual(later.slice(0, 2).map((m) => m.id))
    // The full domain is not claimed; once it has room again, its oldest work comes first.
    const again = store.claim({ limit: 3, perDomain: 2, inFlight: { 'b.claim.test': 2, 'c.claim.test': 2 }, leaseMs: 60_000, now })
    expect(again.jobs.map((j) => j.domain)).toEqual(['a.claim.test', 'a.claim.test'])
    store.close()
  })

  it('passes over held messages at the head and still claims what is behind them', () => {
    const store = open()
    const now = Date.now()
    const heads: NewMessage[] = []
    store.db.transaction(() => {
      for (let i = 0; i < 3000; i++) {
        const m = message('held.claim.test', now - 100_000 + i)
        heads.push(m)
        store.enqueue(m)
        store.hold(m.id, now)
      }
    })()
    const [free] = fill(store, now, 0, 'held.claim.test', ['free.claim.test'])
    const r = store.claim({ limit: 1, perDomain: 5, inFlight: {}, leaseMs: 60_000, now })
    expect(r.jobs.map((j) => j.message.id)).toEqual([free!.id])
    // Leased, the claimed one still counts as queued.
    expect(store.summary(now).recipients).toEqual({ queued: 3, deferred: 0, held: 3000 })
    store.close()
  })

  it('visits domains a claim at a time, so many small domains behind a full one are all reached', () => {
    const store = open()
    const now = Date.now()
    const others = Array.from({ length: 300 }, (_, i) => `d${String(i).padStart(3, '0')}.claim.test`)
    fill(store, now, 5000, 'a.claim.test', others)
    const seen = new Set<string>()
    // 300 domains, at most 256 looked at per claim: two claims reach them all.
    for (let i = 0; i < 2; i++) {
      const r = store.claim({ limit: 200, perDomain: 1, inFlight: { 'a.claim.test': 1 }, leaseMs: 60_000, now })
      for (const j of r.jobs) seen.add(j.domain)
    }
    expect(seen.size).toBe(300)
    store.close()
  })
})
