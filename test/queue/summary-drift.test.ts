// The queue summary must say what the rows say. SQLite keeps its figures as counters (triggers,
// sqlite/counts.ts); PostgreSQL counts rows. After a mixed workload (enqueue, claim, deferrals,
// deliveries, bounces with their DSN, hold, release, remove, flush, delay warnings) each backend's
// summary is compared with the figures counted from `list`, and SQLite's counters with a full count
// of its tables, also for a queue written by an older relay and migrated.
import { afterAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import { tempDir } from '../harness/relay.js'
import { PG_URL, connectPostgres, skipFor } from '../harness/services.js'
import { Spool } from '../../core/queue/spool.js'
import { SqliteQueue } from '../../core/queue/sqlite/queue.js'
import { SqliteStore } from '../../core/queue/sqlite/store.js'
import { MIGRATIONS } from '../../core/queue/sqlite/schema.js'
import { PgQueue } from '../../core/queue/postgres/queue.js'
import type { NewMessage, Queue, QueueSummary, RecipientResult } from '../../core/queue/types.js'

const RUN = crypto.randomBytes(3).toString('hex')
let seq = 0
const cleanups: (() => Promise<void>)[] = []
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined)
})

function message(recipients: string[], o: { sender?: string; receivedAt?: number } = {}): NewMessage {
  const id = `D${RUN}${String(++seq).padStart(7, '0')}`
  const headers = Buffer.from(`Subject: ${id}\r\n\r\n`)
  const now = o.receivedAt ?? Date.now()
  return {
    id, sender: o.sender ?? 'sender@drift.test', headers, body: { inline: Buffer.from('body\r\n') }, size: headers.length + 6,
    recipients: recipients.map((address) => ({ address, domain: address.split('@')[1]! })),
    receivedAt: now, expiresAt: now + 86_400_000, meta: {},
  }
}

/** The summary as the rows say it, counted from `list` (every message, every recipient). */
async function countedFromRows(q: Queue, domains: Set<string>): Promise<Omit<QueueSummary, 'domains'> & { domains: Record<string, { queued: number; deferred: number; held: number }> }> {
  const entries = await q.list()
  const recipients = { queued: 0, deferred: 0, held: 0 }
  const byDomain: Record<string, { queued: number; deferred: number; held: number }> = {}
  for (const m of entries) {
    for (const r of m.recipients) {
      if (r.state !== 'queued' && r.state !== 'deferred') continue
      const key = m.heldAt !== undefined ? 'held' : r.state
      recipients[key]++
      const d = r.address.split('@')[1]!
      if (!domains.has(d)) continue
      byDomain[d] ??= { queued: 0, deferred: 0, held: 0 }
      byDomain[d]![key]++
    }
  }
  return { messages: entries.length, recipients, oldestReceivedAt: entries.length ? Math.min(...entries.map((m) => m.receivedAt)) : undefined, domains: byDomain }
}

async function expectSummaryMatchesRows(q: Queue, domains: Set<string>, step: string): Promise<void> {
  const s = await q.summary(Date.now())
  const rows = await countedFromRows(q, domains)
  const shown = Object.fromEntries(s.domains.filter((d) => domains.has(d.domain)).map((d) => [d.domain, { queued: d.queued, deferred: d.deferred, held: d.held }]))
  expect({ step, messages: s.messages, recipients: s.recipients, oldest: s.oldestReceivedAt, domains: shown }).toEqual({
    step, messages: rows.messages, recipients: rows.recipients, oldest: rows.oldestReceivedAt, domains: rows.domains,
  })
}

/** A bounded mixed workload, checking the summary against the rows after every step. */
async function mixedWorkload(q: Queue): Promise<void> {
  const ds = [0, 1, 2, 3].map((i) => `d${i}-${RUN}.drift`)
  const domains = new Set(ds)
  const at = (i: number, n: number) => `r${n}@${ds[i % ds.length]}`
  const base = Date.now() - 60_000
  const messages = Array.from({ length: 24 }, (_, i) => message([at(i, 1), at(i + 1, 2), ...(i % 3 === 0 ? [at(i + 2, 3)] : [])], { receivedAt: base + i * 100 }))
  for (const m of messages) await q.enqueue(m)
  await expectSummaryMatchesRows(q, domains, 'enqueued')

  // Two rounds of claims: a mix of results per job, a bounce (a DSN queued in the same write) for each bounced recipient.
  for (let round = 0; round < 2; round++) {
    const now = Date.now() + round * 120_000
    const { jobs } = await q.claim({ limit: 50, perDomain: 50, inFlight: {}, leaseMs: 30_000, now })
    for (const [j, job] of jobs.entries()) {
      const results: RecipientResult[] = job.recipients.map((r, k) => {
        const pick = (j + k + round) % 3
        return pick === 0
          ? { rowId: r.rowId, state: 'delivered', response: '250 ok' }
          : pick === 1
            ? { rowId: r.rowId, state: 'deferred', response: '451 later', nextAttemptAt: now + 60_000, category: 'policy' }
            : { rowId: r.rowId, state: 'bounced', response: '550 no', category: 'bad-mailbox' }
      })
      const bounced = results.some((r) => r.state === 'bounced')
      await q.complete(job.message.id, results, bounced ? message([`postmaster@${ds[j % ds.length]}`], { sender: '' }) : undefined)
    }
    await expectSummaryMatchesRows(q, domains, `claimed and completed, round ${round}`)
  }

  // Operators: hold some (one held twice), release one, remove one, flush a domain.
  const queued = await q.list()
  for (const m of queued.slice(0, 5)) await q.hold(m.id)
  await q.hold(queued[0]!.id)
  await expectSummaryMatchesRows(q, domains, 'held')
  await q.release(queued[1]!.id, Date.now())
  await q.remove(queued[2]!.id)
  await q.remove(queued[3]!.id) // a held one
  await q.flush({ domain: ds[0] }, Date.now())
  await expectSummaryMatchesRows(q, domains, 'released, removed, flushed')

  // A held message's recipients finish while it is held (a delivery that was in flight when it was held).
  const held = queued[4]!
  const detail = await q.show(held.id)
  const pending = detail!.recipients.filter((r) => r.state === 'queued' || r.state === 'deferred')
  if (pending.length) await q.complete(held.id, [{ rowId: pending[0]!.rowId, state: 'delivered', response: '250' }])
  // A delay warning queued with its mark.
  const [candidate] = await q.delayCandidates(Date.now() + 1, 1)
  if (candidate) await q.markDelayNotified(candidate.message.id, message([`warn@${ds[1]}`], { sender: '' }))
  await expectSummaryMatchesRows(q, domains, 'finished while held, delay warning')

  // Everything goes: the figures return to nothing.
  for (const m of await q.list()) await q.remove(m.id)
  await expectSummaryMatchesRows(q, domains, 'emptied')
}

/** SQLite: the counter tables against a full count of the rows they count. */
function expectCountersMatchTables(file: string): void {
  const db = new Database(file, { readonly: true })
  try {
    const counted = db.prepare(
      `SELECT r.domain AS domain, CASE WHEN m.held_at IS NOT NULL THEN 'held' ELSE r.state END AS bucket, COUNT(*) AS n
       FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.state IN ('queued','deferred') GROUP BY 1, 2 ORDER BY 1, 2`,
    ).all()
    const kept = db.prepare(`SELECT domain, bucket, n FROM queue_counts WHERE n <> 0 ORDER BY 1, 2`).all()
    expect(kept).toEqual(counted)
    const messages = (db.prepare(`SELECT COUNT(*) AS n FROM messages`).get() as { n: number }).n
    expect(db.prepare(`SELECT messages FROM queue_totals`).get()).toEqual({ messages })
    // No recipient outlives its message.
    expect(db.prepare(`SELECT COUNT(*) AS n FROM recipients r WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.message_id)`).get()).toEqual({ n: 0 })
  } finally {
    db.close()
  }
}

describe('queue summary figures follow the rows', () => {
  it('sqlite: after a mixed workload, summary = rows and counters = a full count', { timeout: 60_000 }, async () => {
    const dir = tempDir('relay-drift-')
    const file = path.join(dir, 'queue.sqlite')
    const queue = new SqliteQueue(file, new Spool(dir))
    cleanups.push(async () => {
      await queue.close()
      fs.rmSync(dir, { recursive: true, force: true })
    })
    const check = queue.summary.bind(queue)
    // After every summary, the counters are checked against the tables too.
    queue.summary = async (now) => {
      const s = await check(now)
      expectCountersMatchTables(file)
      return s
    }
    await mixedWorkload(queue)
  })

  it('sqlite: a queue an older relay wrote is counted once when migrated, then kept', { timeout: 60_000 }, async () => {
    const dir = tempDir('relay-drift-old-')
    const file = path.join(dir, 'queue.sqlite')
    cleanups.push(async () => fs.rmSync(dir, { recursive: true, force: true }))
    // Schema 4, filled through the statements of today's store (its counters do not exist yet).
    const old = new Database(file)
    for (const m of MIGRATIONS.slice(0, 4)) old.exec(m)
    old.pragma('user_version = 4')
    const now = Date.now()
    old.transaction(() => {
      for (let i = 0; i < 30; i++) {
        const id = `O${RUN}${i}`
        old.prepare(`INSERT INTO messages (id, sender, size, headers, body, received_at, expires_at, meta, held_at) VALUES (?,?,?,?,?,?,?,?,?)`)
          .run(id, 's@old.test', 10, Buffer.from('h'), Buffer.from('b'), now - 1000 + i, now + 86_400_000, '{}', i % 7 === 0 ? now : null)
        for (let k = 0; k < 3; k++) {
          const state = ['queued', 'deferred', 'delivered'][(i + k) % 3]
          old.prepare(`INSERT INTO recipients (message_id, address, domain, state, next_attempt, leased, updated_at) VALUES (?,?,?,?,?,?,?)`)
            .run(id, `r${k}@o${k}.test`, `o${k}.test`, state, now, i % 5 === 0 ? 1 : 0, now)
        }
      }
      // A recipient whose message is gone (never shown by a summary): dropped by the migration.
      old.prepare(`INSERT INTO recipients (message_id, address, domain, state, next_attempt, updated_at) VALUES ('gone', 'x@o0.test', 'o0.test', 'queued', ?, ?)`).run(now, now)
    })()
    const before = new SqliteStore(file, { readonly: true }).summary(now)
    old.close()

    const store = new SqliteStore(file)
    expect(store.db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length)
    expect(store.summary(now)).toEqual(before)
    expect(store.recover(now)).toBe(12) // leased (6 messages) and pending (2 of their 3 recipients)
    store.close()
    expectCountersMatchTables(file)

    const queue = new SqliteQueue(file, new Spool(dir))
    try {
      await mixedWorkload(queue)
      expectCountersMatchTables(file)
    } finally {
      await queue.close()
    }
  })

  it('postgres: after a mixed workload, summary = rows', { timeout: 60_000 }, async () => {
    const admin = await connectPostgres()
    if (!admin.client) return void skipFor(admin.problem)
    const schema = `relay_drift_${process.pid}_${RUN}`
    const queue = new PgQueue({ url: PG_URL, poolSize: 4, schema, nodeId: 'drift-node' })
    cleanups.push(async () => {
      await queue.close()
      await admin.client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
      await admin.client.end()
    })
    await queue.ready
    await mixedWorkload(queue)
  })
})
