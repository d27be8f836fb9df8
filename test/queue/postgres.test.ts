// The PostgreSQL queue against a real PostgreSQL (a schema of its own per run, dropped afterwards):
// what is special to cluster mode — several nodes on one queue, leases that expire, migrations
// run by nodes starting together, bodies stored in chunks.
import { afterAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import type pg from 'pg'
import { PgQueue } from '../../core/queue/postgres/queue.js'
import { SCHEMA_VERSION } from '../../core/queue/postgres/schema.js'
import { PG_URL, connectPostgres, skipFor } from '../harness/services.js'
import type { NewMessage, Queue } from '../../core/queue/types.js'
import { Spool } from '../../core/queue/spool.js'
import { tempDir } from '../harness/relay.js'
import { describeQueueContract } from './contract.js'

const RUN = `${process.pid}_${crypto.randomBytes(4).toString('hex')}`

const schemas: string[] = []
const queues: PgQueue[] = []

// Known before the suites are declared: the shared contract suite runs only with PostgreSQL there.
const admin: pg.Client | undefined = await connectPostgres().then((c) => (c.client ? c.client : (skipFor(c.problem), undefined)))

afterAll(async () => {
  await Promise.all(queues.splice(0).map((q) => q.close().catch(() => undefined)))
  if (!admin) return
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => undefined)
  await admin.end().catch(() => undefined)
})

/** A fresh schema name for this run (dropped at the end). */
function newSchema(tag: string): string {
  const s = `relay_pgq_${tag}_${RUN}`
  schemas.push(s)
  return s
}

/** A node on `schema`: a PgQueue with its own pool and node id. */
function node(schema: string, nodeId: string, poolSize = 4): PgQueue {
  const q = new PgQueue({ url: PG_URL, poolSize, schema, nodeId })
  queues.push(q)
  return q
}

let seq = 0
function message(o: { recipients?: string[]; body?: NewMessage['body']; receivedAt?: number; sender?: string } = {}): NewMessage {
  const now = o.receivedAt ?? Date.now()
  const id = `T${RUN}${String(++seq).padStart(6, '0')}`
  const body = o.body ?? { inline: Buffer.from(`Body of ${id}\r\n`) }
  const headers = Buffer.from(`Subject: ${id}\r\nMessage-ID: <${id}@test>\r\n\r\n`)
  return {
    id,
    sender: o.sender ?? 'sender@example.com',
    recipients: (o.recipients ?? ['rcpt@dest.test']).map((address) => ({ address, domain: address.split('@')[1]! })),
    headers,
    body,
    size: headers.length + ('inline' in body ? body.inline.length : 0),
    messageId: `${id}@test`,
    receivedAt: now,
    expiresAt: now + 86_400_000,
    meta: { clientAddress: '127.0.0.1' },
  }
}

function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('end', () => resolve(Buffer.concat(chunks)))
    stream.on('error', reject)
  })
}

if (admin) {
  describeQueueContract('postgres', async () => {
    const dir = tempDir('relay-pgqueue-')
    const schema = newSchema('contract')
    const queue = node(schema, 'contract-node')
    await queue.ready
    return {
      queue,
      spool: new Spool(dir),
      cleanup: async () => {
        await queue.close()
        fs.rmSync(dir, { recursive: true, force: true })
      },
      // More nodes on the contract's schema (closed with the others after the file).
      node: async (nodeId) => {
        const other = node(schema, nodeId)
        await other.ready
        return other
      },
    }
  }, { shared: true })
}

const claimAll = (q: Queue, now: number, leaseMs = 60_000) => q.claim({ limit: 1000, perDomain: 1000, inFlight: {}, leaseMs, now })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('PostgreSQL queue: several nodes on one queue', () => {
  it('two nodes claiming at once never get the same recipient, and together get all of them', async () => {
    if (!admin) return
    const schema = newSchema('race')
    const a = node(schema, 'node-a')
    const b = node(schema, 'node-b')
    await Promise.all([a.ready, b.ready])
    const domains = ['one.test', 'two.test', 'three.test', 'four.test']
    const expected = new Set<number>()
    const t0 = Date.now() - 1000
    const batches = Array.from({ length: 150 }, (_, i) =>
      message({ receivedAt: t0 + i, recipients: [`a${i}@${domains[i % 4]}`, `b${i}@${domains[(i + 1) % 4]}`, `c${i}@${domains[i % 4]}`] }),
    )
    for (const ids of await Promise.all(batches.map((m, i) => (i % 2 ? a : b).enqueue(m)))) for (const id of ids) expected.add(id)
    expect(expected.size).toBe(450)

    const seen = new Map<number, string>()
    const duplicates: number[] = []
    const run = async (q: PgQueue, name: string) => {
      // Bounded: at most 200 claims of up to 5 jobs each.
      for (let i = 0; i < 200; i++) {
        const { jobs } = await q.claim({ limit: 5, perDomain: 3, inFlight: {}, leaseMs: 60_000, now: Date.now() })
        if (!jobs.length) return
        for (const job of jobs) {
          for (const r of job.recipients) {
            if (seen.has(r.rowId)) duplicates.push(r.rowId)
            seen.set(r.rowId, name)
          }
        }
      }
    }
    await Promise.all([run(a, 'a'), run(b, 'b'), run(a, 'a2'), run(b, 'b2')])
    expect(duplicates).toEqual([])
    expect([...seen.keys()].sort((x, y) => x - y)).toEqual([...expected].sort((x, y) => x - y))
    // Both nodes did part of the work.
    const byNode = new Set([...seen.values()].map((n) => n[0]))
    expect(byNode).toEqual(new Set(['a', 'b']))
  })

  it('claim keeps to limit and perDomain (counting inFlight), one job per message and domain', async () => {
    if (!admin) return
    const q = node(newSchema('limits'), 'node-a')
    const now = Date.now()
    // 4 messages to x.test (two recipients each), 3 to y.test, 1 to both.
    for (let i = 0; i < 4; i++) await q.enqueue(message({ receivedAt: now - 100 + i, recipients: [`p${i}@x.test`, `q${i}@x.test`] }))
    for (let i = 0; i < 3; i++) await q.enqueue(message({ receivedAt: now - 50 + i, recipients: [`p${i}@y.test`] }))
    const both = message({ receivedAt: now - 10, recipients: ['p@x.test', 'p@y.test'] })
    await q.enqueue(both)

    const first = await q.claim({ limit: 10, perDomain: 2, inFlight: { 'y.test': 1 }, leaseMs: 60_000, now })
    const byDomain = (jobs: { domain: string }[]) => jobs.reduce<Record<string, number>>((acc, j) => ({ ...acc, [j.domain]: (acc[j.domain] ?? 0) + 1 }), {})
    expect(byDomain(first.jobs)).toEqual({ 'x.test': 2, 'y.test': 1 })
    // The oldest first, both recipients of a message at one domain in one job.
    expect(first.jobs[0]!.recipients.map((r) => r.address)).toEqual(['p0@x.test', 'q0@x.test'])
    expect(first.jobs.find((j) => j.domain === 'y.test')!.recipients.map((r) => r.address)).toEqual(['p0@y.test'])
    // What was left (the third message to x.test) is the next thing due.
    expect(first.nextDueAt).toBe(now - 100 + 2)

    const second = await q.claim({ limit: 2, perDomain: 10, inFlight: {}, leaseMs: 60_000, now })
    expect(second.jobs.length).toBe(2)
    const rest = await q.claim({ limit: 100, perDomain: 100, inFlight: {}, leaseMs: 60_000, now })
    const jobsOfBoth = rest.jobs.filter((j) => j.message.id === both.id)
    expect(jobsOfBoth.map((j) => j.domain).sort()).toEqual(['x.test', 'y.test'])
    expect(first.jobs.length + second.jobs.length + rest.jobs.length).toBe(4 + 3 + 2)
    expect((await claimAll(q, now)).jobs).toEqual([])
    expect((await claimAll(q, now)).nextDueAt).toBe(now + 60_000)
  })

  it("a dead node's work is taken by another node once its lease expires", async () => {
    if (!admin) return
    const schema = newSchema('lease')
    const a = node(schema, 'node-a')
    const b = node(schema, 'node-b')
    const m = message({ recipients: ['one@dest.test', 'two@dest.test'] })
    const rowIds = await a.enqueue(m)
    const claimedByA = await claimAll(a, Date.now(), 400)
    expect(claimedByA.jobs.flatMap((j) => j.recipients.map((r) => r.rowId))).toEqual(rowIds)
    // Node A "dies" here: no complete. While its lease runs, B finds nothing.
    expect((await claimAll(b, Date.now())).jobs).toEqual([])
    expect((await b.show(m.id))!.recipients.every((r) => r.leased)).toBe(true)
    await sleep(450)
    const claimedByB = await claimAll(b, Date.now())
    expect(claimedByB.jobs.flatMap((j) => j.recipients.map((r) => r.rowId))).toEqual(rowIds)
    expect(claimedByB.jobs[0]!.message.id).toBe(m.id)
    const done = await b.complete(m.id, rowIds.map((rowId) => ({ rowId, state: 'delivered' as const, response: '250 ok', remoteHost: 'mx.dest.test' })))
    expect(done).toEqual({ finished: true })
    expect(await a.show(m.id)).toBeUndefined()
    // A restarted A has nothing of its own left to take back: B holds nothing of A's either.
    expect(await a.recover(Date.now())).toBe(0)
  })

  it("recover() releases this node's own leases only, never a live node's", async () => {
    if (!admin) return
    const schema = newSchema('recover')
    const a = node(schema, 'node-a')
    const b = node(schema, 'node-b')
    const mine = message({ recipients: ['a@dest.test'] })
    const theirs = message({ recipients: ['b1@dest.test', 'b2@other.test'] })
    await a.enqueue(mine, Date.now() + 600_000) // leased to A at enqueue (delivery from memory)
    await b.enqueue(theirs)
    expect((await claimAll(b, Date.now())).jobs.length).toBe(2)

    // A restarts: it takes back its own work at once, and leaves B's (live) leases alone.
    expect(await a.recover(Date.now())).toBe(1)
    const retaken = await claimAll(a, Date.now())
    expect(retaken.jobs.map((j) => j.message.id)).toEqual([mine.id])
    const shown = await a.show(theirs.id)
    expect(shown!.recipients.map((r) => r.leased)).toEqual([true, true])
    expect(await a.recover(Date.now())).toBe(1) // its claim just now, nothing of B's
    expect((await a.show(theirs.id))!.recipients.map((r) => r.leased)).toEqual([true, true])
    // B's own restart does give them back.
    expect(await b.recover(Date.now())).toBe(2)
    expect((await claimAll(a, Date.now())).jobs.map((j) => j.message.id).sort()).toEqual([mine.id, theirs.id, theirs.id].sort())
  })

  it('completes of one message on two nodes at once: the last one removes it', async () => {
    if (!admin) return
    const schema = newSchema('complete')
    const a = node(schema, 'node-a')
    const b = node(schema, 'node-b')
    // 20 rounds of: a message to two domains, one job to each node, both complete together.
    for (let round = 0; round < 20; round++) {
      const m = message({ recipients: [`x${round}@one.test`, `y${round}@two.test`] })
      await a.enqueue(m)
      const ja = (await a.claim({ limit: 1, perDomain: 1, inFlight: {}, leaseMs: 60_000, now: Date.now() })).jobs[0]!
      const jb = (await b.claim({ limit: 1, perDomain: 1, inFlight: {}, leaseMs: 60_000, now: Date.now() })).jobs[0]!
      expect(ja.domain).not.toBe(jb.domain)
      const results = await Promise.all([
        a.complete(m.id, [{ rowId: ja.recipients[0]!.rowId, state: 'delivered', response: '250 ok' }]),
        b.complete(m.id, [{ rowId: jb.recipients[0]!.rowId, state: 'bounced', response: '550 5.1.1 no such user', category: 'bad-mailbox' }]),
      ])
      expect(results.filter((r) => r.finished).length).toBe(1)
      expect(await a.show(m.id)).toBeUndefined()
    }
    const stats = await a.stats(0)
    const count = (outcome: string) => stats.filter((s) => s.outcome === outcome).reduce((n, s) => n + s.count, 0)
    expect(count('delivered')).toBe(20)
    expect(count('bounced')).toBe(20)
    expect(stats.find((s) => s.outcome === 'bounced')).toMatchObject({ senderDomain: 'example.com', category: 'bad-mailbox' })
  })
})

describe('PostgreSQL queue: heartbeats', () => {
  it('a beat goes through while delivery work holds every pooled connection (a busy node is not taken for dead)', async () => {
    if (!admin) return
    const schema = newSchema('busy')
    const q = node(schema, 'node-busy', 1)
    await q.ready
    await q.heartbeat(Date.now(), 30_000)
    // The pool's only connection waits on a lock another session holds: every queue call now queues up.
    const locker = await connectPostgres()
    if (!locker.client) throw new Error(locker.problem)
    try {
      await locker.client.query(`BEGIN; LOCK TABLE ${schema}.messages IN ACCESS EXCLUSIVE MODE`)
      const m = message()
      const enqueued = q.enqueue(m)
      await sleep(200)
      const started = Date.now()
      const beat = await Promise.race([q.heartbeat(Date.now(), 30_000), sleep(3000).then(() => 'stuck' as const)])
      expect(beat).toEqual({ wasMissing: false, dead: [] })
      expect(Date.now() - started).toBeLessThan(1000)
      await locker.client.query('COMMIT')
      expect(await enqueued).toHaveLength(1)
      expect((await q.list()).map((e) => e.id)).toEqual([m.id])
    } finally {
      await locker.client.query('ROLLBACK').catch(() => undefined)
      await locker.client.end()
    }
  })
})

describe('PostgreSQL queue: reputation retention', () => {
  it('counters and sent-log entries older than retention are dropped as deliveries complete', async () => {
    if (!admin) return
    const schema = newSchema('retention')
    const q = new PgQueue({ url: PG_URL, poolSize: 2, schema, nodeId: 'node-a', retention: 2 * 3_600_000 })
    queues.push(q)
    await q.ready
    const hour = Math.floor(Date.now() / 3_600_000) * 3_600_000
    await admin.query(
      `INSERT INTO ${schema}.stats (hour, sender_domain, dest_domain, outcome, category, count) VALUES ($1, 'old.test', 'x.test', 'delivered', '', 5), ($2, 'kept.test', 'x.test', 'delivered', '', 7)`,
      [hour - 4 * 3_600_000, hour - 3_600_000],
    )
    await admin.query(`INSERT INTO ${schema}.sent_log (queue_id, message_id, sender, sender_domain, sent_at) VALUES ('OLD1', 'old@x', 'a@old.test', 'old.test', $1)`, [Date.now() - 3 * 3_600_000])
    const m = message({ recipients: ['r@x.test'] })
    const [rowId] = await q.enqueue(m)
    await claimAll(q, Date.now())
    await q.complete(m.id, [{ rowId: rowId!, state: 'delivered', response: '250 ok' }])
    // Pruning runs beside the complete; poll for it (bounded).
    for (let i = 0; i < 50 && (await admin.query(`SELECT 1 FROM ${schema}.stats WHERE sender_domain = 'old.test'`)).rowCount; i++) await sleep(20)
    const left = await q.stats(0)
    expect(left.map((r) => [r.senderDomain, r.count])).toEqual([
      ['kept.test', 7],
      ['example.com', 1],
    ])
    expect((await admin.query(`SELECT queue_id FROM ${schema}.sent_log ORDER BY queue_id`)).rows.map((r) => r.queue_id)).toEqual([m.id])
    // The old entry no longer matches a complaint.
    expect((await q.recordComplaint({ messageId: 'old@x', feedbackType: 'abuse', receivedAt: Date.now() })).matched).toBe(false)
    expect(await q.recordComplaint({ messageId: `<${m.id}@test>`, feedbackType: 'abuse', receivedAt: Date.now() })).toEqual({
      matched: true, queueId: m.id, sender: m.sender, senderDomain: 'example.com',
    })
  })
})

describe('PostgreSQL queue: schema and migrations', () => {
  it('nodes starting at once create the schema once; starting again changes nothing', async () => {
    if (!admin) return
    const schema = newSchema('migrate')
    const starting = Array.from({ length: 4 }, (_, i) => node(schema, `node-${i}`, 2))
    await Promise.all(starting.map((q) => q.ready))
    const versions = await admin.query(`SELECT version FROM ${schema}.schema_migrations ORDER BY version`)
    expect(versions.rows.map((r) => r.version)).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1))
    // Every node works on the same tables.
    const m = message()
    await starting[0]!.enqueue(m)
    expect((await starting[3]!.list()).map((e) => e.id)).toEqual([m.id])

    const again = node(schema, 'node-late')
    await again.ready
    expect((await admin.query(`SELECT count(*)::int AS n FROM ${schema}.schema_migrations`)).rows[0].n).toBe(SCHEMA_VERSION)
    expect((await again.list()).map((e) => e.id)).toEqual([m.id])
  })

  it('a schema newer than this relay knows is refused, with the reason', async () => {
    if (!admin) return
    const schema = newSchema('newer')
    await node(schema, 'node-a').ready
    await admin.query(`INSERT INTO ${schema}.schema_migrations (version) VALUES (${SCHEMA_VERSION + 1})`)
    const q = node(schema, 'node-b')
    await expect(q.list()).rejects.toThrow(`schema ${schema}: queue schema ${schema} is at version ${SCHEMA_VERSION + 1}, newer than this relay knows`)
  })

  it('an unreachable database fails every call with a message naming it, without the password', async () => {
    const q = new PgQueue({ url: 'postgres://relay:s3cret-pw@127.0.0.1:1/queue', poolSize: 1, schema: 'relay', nodeId: 'n' })
    queues.push(q)
    const err = await q.list().then(() => undefined, (e: Error) => e)
    expect(err?.message).toMatch(/^queue: PostgreSQL at postgres:\/\/relay:\*\*\*@127\.0\.0\.1:1\/queue, schema relay: .*ECONNREFUSED/)
    expect(err?.message).not.toContain('s3cret-pw')
    await expect(q.enqueue(message())).rejects.toThrow(/^queue: PostgreSQL at/)
  })

  it('refuses a schema name that is not a plain identifier', () => {
    expect(() => new PgQueue({ url: PG_URL, poolSize: 1, schema: 'x"; DROP TABLE y; --', nodeId: 'n' })).toThrow(/queue.schema: expected a lower-case SQL identifier/)
  })
})

describe('PostgreSQL queue: bodies', () => {
  it('a 5 MB body from a spool file is stored in chunks, the file removed, and read back whole', async () => {
    if (!admin) return
    const schema = newSchema('body')
    const q = node(schema, 'node-a')
    const dir = tempDir()
    const file = path.join(dir, 'body')
    const data = crypto.randomBytes(5 * 1024 * 1024 + 123)
    fs.writeFileSync(file, data)
    const m = message({ body: { file } })
    m.size = m.headers.length + data.length
    const [rowId] = await q.enqueue(m)
    // The spool file is gone; the caller's copy points at the stored body.
    expect(fs.existsSync(file)).toBe(false)
    expect(m.body).toEqual({ stored: data.length })
    const chunks = await admin.query(`SELECT count(*)::int AS n, max(length(data))::int AS max FROM ${schema}.body_chunks WHERE message_id = $1`, [m.id])
    expect(chunks.rows[0]).toEqual({ n: 21, max: 256 * 1024 })

    const { jobs } = await claimAll(q, Date.now())
    expect(jobs[0]!.message.body).toEqual({ stored: data.length })
    const read = await readAll(q.openBody(jobs[0]!.message))
    expect(read.length).toBe(data.length)
    expect(read.equals(data)).toBe(true)

    // Finished: message and chunks leave the queue.
    expect(await q.complete(m.id, [{ rowId: rowId!, state: 'delivered', response: '250 ok' }])).toEqual({ finished: true })
    expect((await admin.query(`SELECT count(*)::int AS n FROM ${schema}.body_chunks WHERE message_id = $1`, [m.id])).rows[0].n).toBe(0)
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('a body removed from the queue while being read fails the stream instead of ending it short', async () => {
    if (!admin) return
    const q = node(newSchema('body_removed'), 'node-a')
    const dir = tempDir()
    const file = path.join(dir, 'body')
    fs.writeFileSync(file, crypto.randomBytes(1024 * 1024))
    const m = message({ body: { file } })
    await q.enqueue(m)
    const stream = q.openBody({ ...m, body: { stored: 1024 * 1024 } })
    const first = await new Promise<Buffer>((resolve) => stream.once('data', resolve))
    stream.pause()
    expect(first.length).toBe(256 * 1024)
    expect(await q.remove(m.id)).toBe(true)
    stream.resume()
    await expect(readAll(stream)).rejects.toThrow(/has \d+ of 1048576 bytes/)
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('small bodies stay inline; an empty body and one just over the inline limit round-trip', async () => {
    if (!admin) return
    const schema = newSchema('body_small')
    const q = node(schema, 'node-a')
    const bodies = [Buffer.alloc(0), crypto.randomBytes(128 * 1024), crypto.randomBytes(128 * 1024 + 1)]
    const ms = bodies.map((b) => message({ body: { inline: b } }))
    for (const m of ms) await q.enqueue(m)
    const { jobs } = await claimAll(q, Date.now())
    const byId = new Map(jobs.map((j) => [j.message.id, j.message]))
    expect('inline' in byId.get(ms[0]!.id)!.body).toBe(true)
    expect('inline' in byId.get(ms[1]!.id)!.body).toBe(true)
    expect(byId.get(ms[2]!.id)!.body).toEqual({ stored: 128 * 1024 + 1 })
    for (const [i, m] of ms.entries()) expect((await readAll(q.openBody(byId.get(m.id)!))).equals(bodies[i]!)).toBe(true)
  })

  it('many sessions enqueue at once through a small pool; every message is there after', async () => {
    if (!admin) return
    const schema = newSchema('many')
    const q = node(schema, 'node-a', 3)
    const ms = Array.from({ length: 300 }, (_, i) => message({ recipients: [`r${i}@one.test`, `s${i}@two.test`] }))
    const ids = await Promise.all(ms.map((m) => q.enqueue(m)))
    expect(ids.every((pair) => pair.length === 2 && pair[0]! < pair[1]!)).toBe(true)
    expect(new Set(ids.flat()).size).toBe(600)
    const n = await admin.query(`SELECT count(*)::int AS n FROM ${schema}.recipients`)
    expect(n.rows[0].n).toBe(600)
    expect((await q.summary(Date.now())).recipients).toEqual({ queued: 600, deferred: 0, held: 0 })
  })
})
