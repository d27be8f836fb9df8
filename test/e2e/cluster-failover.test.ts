// Cluster failover without waiting for the lease: node A holds leased, in-flight deliveries (its
// destination stalls after DATA) under the default 15-minute `delivery.lease`, and is killed with
// SIGKILL. Node B must notice A's heartbeat stopped and deliver A's mail within seconds, counting
// the recipients it took over; while A was alive, B left A's work alone. Then a node that was only
// frozen (SIGSTOP) past deadAfter: taken over all the same, and when it wakes its late results must
// not touch what B now holds. Heartbeat settings are short here so the file stays fast (interval
// 500 ms, deadAfter 2 s); their defaults (5 s, 30 s) are checked in test/queue/heartbeat-config.test.ts.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import os from 'node:os'
import type pg from 'pg'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'
import { PG_URL, REDIS_URL, connectPostgres, redisProblem, skipFor } from '../harness/services.js'
import { Redis } from 'ioredis'

const RUN = `${process.pid}_${crypto.randomBytes(3).toString('hex')}`
/** One schema per test: each starts with an empty queue and node table. */
let SCHEMA = ''
const schemas: string[] = []
const TOKEN = 'failover-test-token-0123456789'
const HEARTBEAT = { interval: '500ms', deadAfter: '2s' }
const DEAD_AFTER_MS = 2000
const MESSAGES = 4
const DEFAULT_LEASE_MS = 15 * 60_000

let admin: pg.Client | undefined
let pgProblem = ''
let dns: TestDns
let rx: TestReceiver
const relays: RelayProcess[] = []

beforeAll(async () => {
  const pgc = await connectPostgres()
  if (!pgc.client) {
    pgProblem = pgc.problem
    return
  }
  admin = pgc.client
  dns = await startDns({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { A: ['127.0.0.2'] } })
  rx = await startReceiver({ host: '127.0.0.2' })
})

beforeEach(() => {
  if (!admin) return
  SCHEMA = `relay_failover_${schemas.length}_${RUN}`
  schemas.push(SCHEMA)
  // Takes each message in full, then never answers: the sending node keeps it leased and in flight.
  rx.setBehaviour({ stall: 'data' })
  rx.messages.splice(0)
  rx.refused.splice(0)
})

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => (r.exited() ? undefined : r.stop())))
})

afterAll(async () => {
  await rx?.close()
  await dns?.close()
  if (admin) {
    for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => undefined)
    await admin.end().catch(() => undefined)
  }
})

/** A node on the shared schema; `delivery.lease` is left at its default (15 minutes). */
function nodeConfig(name: string, extra: Record<string, unknown> = {}, delivery: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hostname: `${name}.relay.test`,
    queue: { driver: 'postgres', url: PG_URL, schema: SCHEMA, poolSize: 4, heartbeat: HEARTBEAT },
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: { port: rx.port, connectTimeout: '2s', mtaSts: { enabled: false }, ...delivery },
    plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    ...extra,
  }
}

/** Sends `count` messages (two recipients each) through `relay`; returns their Message-IDs. */
async function sendThrough(relay: RelayProcess, count: number, tag: string): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < count; i++) {
    const messageId = `<${tag}-${RUN}-${i}@sender.test>`
    ids.push(messageId)
    const data = `From: alice@sender.test\r\nTo: one@dest.test\r\nSubject: ${tag} ${i}\r\nMessage-ID: ${messageId}\r\n\r\nBody ${i}\r\n`
    const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['one@dest.test', 'two@dest.test'], data })
    expect(r.lastReply).toMatch(/^250 /)
  }
  return ids
}

const logged = (relay: RelayProcess, prefix: string) => relay.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(prefix))

const messageIdOf = (m: ReceivedMessage) => /^Message-ID: (.*)$/im.exec(m.raw.toString('latin1'))?.[1]?.trim()

/** Pending recipients by lease holder, with the latest lease expiry. */
async function leases(): Promise<{ leased_by: string | null; n: number; until: number | null }[]> {
  const { rows } = await admin!.query(
    `SELECT leased_by, count(*)::int AS n, max(lease_until) AS until FROM ${SCHEMA}.recipients
     WHERE state IN ('queued','deferred') GROUP BY leased_by ORDER BY leased_by`,
  )
  return rows.map((r) => ({ leased_by: r.leased_by, n: r.n, until: r.until === null ? null : Number(r.until) }))
}

describe('cluster failover: a dead node is detected by its heartbeat, not by its lease', () => {
  it("after kill -9 of node A, node B delivers A's leased in-flight mail within seconds (lease left at 15 min)", async () => {
    if (!admin) return void skipFor(pgProblem)
    const nodeA = await startRelay({ config: nodeConfig('node-a') })
    relays.push(nodeA)
    const aId = `node-a.relay.test/${os.hostname()}`

    // Node A takes the messages in (two recipients each) and starts delivering them: they stall.
    const ids = await sendThrough(nodeA, MESSAGES, 'failover')
    await eventually(() => rx.refused.filter((m) => m.outcome === 'stall').length >= MESSAGES, 15_000, "node A's deliveries under way")
    const heldByA = await leases()
    expect(heldByA).toHaveLength(1)
    expect(heldByA[0]).toMatchObject({ leased_by: aId, n: MESSAGES * 2 })
    expect(heldByA[0]!.until!).toBeGreaterThan(Date.now() + DEFAULT_LEASE_MS - 60_000)
    // `relay queue list` shows them in flight, not the lease's expiry 15 minutes on as a next attempt.
    const listed = (await nodeA.listQueue()).flatMap((m) => m.recipients)
    expect(listed).toHaveLength(MESSAGES * 2)
    for (const r of listed) {
      expect(r).toMatchObject({ state: 'queued', delivering: true })
      expect(r.nextAttemptAt).toBeUndefined()
    }
    // Deleting a message a node is delivering is refused: that attempt would deliver it all the same.
    const busyId = (await nodeA.listQueue())[0]!.id
    const refused = await runCliAsync(['queue', 'delete', busyId, '--config', nodeA.configFile])
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toMatch(/being delivered right now: not deleted/)

    // Node B joins. While A beats, B takes none of A's work (for twice deadAfter).
    const nodeB = await startRelay({
      config: nodeConfig('node-b', { plugins: [['admin', { host: '127.0.0.1', port: 0, token: TOKEN }], ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]] }),
    })
    relays.push(nodeB)
    const adminUrl = (await nodeB.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listener on'))).url as string
    await new Promise((r) => setTimeout(r, 2 * DEAD_AFTER_MS))
    expect(rx.refused.length).toBe(MESSAGES)
    expect(nodeB.logs.filter((l) => typeof l.msg === 'string' && (l.msg.startsWith('took over') || l.msg.startsWith('heartbeat:')))).toEqual([])
    expect(await leases()).toEqual(heldByA)

    // The destination recovers; node A dies with its deliveries in flight.
    rx.setBehaviour({})
    const killedAt = Date.now()
    await nodeA.kill9()

    await eventually(() => ids.every((id) => rx.messages.some((m) => messageIdOf(m) === id)), 30_000, "A's messages delivered by B")
    const failoverMs = Date.now() - killedAt
    console.log(`failover: node B delivered node A's ${MESSAGES} in-flight messages ${failoverMs} ms after kill -9 (deadAfter ${DEAD_AFTER_MS} ms, lease 15 min)`)
    // Not before A's heartbeat was stale, and soon after: deadAfter, a beat of B, one claim and delivery.
    expect(failoverMs).toBeGreaterThanOrEqual(DEAD_AFTER_MS - 600)
    expect(failoverMs).toBeLessThan(DEAD_AFTER_MS + 6000)
    for (const m of rx.messages) expect(m.raw.toString('latin1')).toContain('by node-a.relay.test') // taken in by A
    expect(rx.messages.every((m) => m.to.length === 2)).toBe(true)

    // B says whom it took over and counts recipients, not messages.
    const dead = nodeB.logs.find((l) => l.msg === 'heartbeat: a node stopped beating; its leased work is due again')
    expect(dead).toMatchObject({ node: aId, recipients: MESSAGES * 2 })
    expect(dead!.silentMs as number).toBeGreaterThanOrEqual(DEAD_AFTER_MS)
    const claimed = nodeB.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('took over queued work')).reduce((n, l) => n + Number(l.recipients), 0)
    expect(claimed).toBe(MESSAGES * 2)
    const metrics = await (await fetch(`${adminUrl}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).text()
    expect(metrics).toMatch(new RegExp(`^relay_queue_lease_takeovers_total ${MESSAGES * 2}$`, 'm'))

    await eventually(async () => (await leases()).length === 0, 10_000, 'an empty queue')
    // A's row is gone from the node table; B's is there.
    const { rows } = await admin.query(`SELECT node_id FROM ${SCHEMA}.nodes ORDER BY node_id`)
    expect(rows.map((r) => r.node_id)).toEqual([`node-b.relay.test/${os.hostname()}`])
  }, 60_000)

  it("with shared throttles (Redis), node A's concurrency slots go with it: B delivers A's in-flight mail and new mail within seconds, not after the 15-minute lease", async () => {
    if (!admin) return void skipFor(pgProblem)
    const problem = await redisProblem()
    if (problem) return void skipFor(problem)
    const prefix = `relay-failover-${RUN}:`
    // Every slot of dest.test in use by A (concurrency 4 for the whole cluster).
    const throttle = { redis: REDIS_URL, keyPrefix: prefix, domains: { 'dest.test': { concurrency: MESSAGES } } }
    const nodeA = await startRelay({ config: nodeConfig('node-a', {}, { throttle }) })
    relays.push(nodeA)
    const ids = await sendThrough(nodeA, MESSAGES, 'slots')
    await eventually(() => rx.refused.filter((m) => m.outcome === 'stall').length >= MESSAGES, 15_000, "node A's deliveries under way")
    const probe = new Redis(REDIS_URL)
    try {
      expect(await probe.zcard(`${prefix}d:dest.test:conc`)).toBe(MESSAGES)
      const nodeB = await startRelay({ config: nodeConfig('node-b', {}, { throttle }) })
      relays.push(nodeB)
      rx.setBehaviour({})
      const killedAt = Date.now()
      await nodeA.kill9()
      const fresh = await sendThrough(nodeB, 1, 'fresh')
      await eventually(() => [...ids, ...fresh].every((id) => rx.messages.some((m) => messageIdOf(m) === id)), 30_000, "A's messages and a new one delivered by B")
      const ms = Date.now() - killedAt
      console.log(`shared throttle: B delivered A's ${MESSAGES} messages and a new one ${ms} ms after kill -9 (deadAfter ${DEAD_AFTER_MS} ms)`)
      expect(ms).toBeLessThan(3 * DEAD_AFTER_MS + 8000)
      await eventually(async () => (await probe.zcard(`${prefix}d:dest.test:conc`)) === 0, 10_000, 'no slot left taken')
    } finally {
      const keys = await probe.keys(`${prefix}*`)
      if (keys.length) await probe.del(...keys)
      await probe.quit()
    }
  }, 60_000)

  it("a node frozen past deadAfter (SIGSTOP) is taken over; when it wakes, its late results do not touch the new holder's work", async () => {
    if (!admin) return void skipFor(pgProblem)
    const aId = `node-a.relay.test/${os.hostname()}`
    const bId = `node-b.relay.test/${os.hostname()}`
    // A's attempts give up 5 s after the stalled DATA: once it wakes (after B took over), it has late results to report.
    const nodeA = await startRelay({ config: nodeConfig('node-a', {}, { commandTimeout: '5s', dataDoneTimeout: '5s' }) })
    relays.push(nodeA)
    // B's attempts give up after 5 s (after A's late results) and retry 1 s later.
    const nodeB = await startRelay({ config: nodeConfig('node-b', {}, { commandTimeout: '5s', dataDoneTimeout: '5s', retry: { base: '1s', factor: 1, max: '1s' } }) })
    relays.push(nodeB)
    const ids = await sendThrough(nodeA, 2, 'frozen')
    await eventually(() => rx.refused.length >= 2, 15_000, "node A's deliveries under way")
    expect((await leases()).map((l) => l.leased_by)).toEqual([aId])

    nodeA.child.kill('SIGSTOP') // a long GC pause, a frozen VM: no beats, no work
    try {
      // B takes A's work over; its own attempts stall too.
      await eventually(() => rx.refused.length >= 4, 20_000, "node B's attempts under way")
      expect(await leases()).toEqual([expect.objectContaining({ leased_by: bId, n: 4 })])
    } finally {
      nodeA.child.kill('SIGCONT')
    }
    // A wakes: its next beat tells it it was declared dead, and its attempts time out with results
    // for recipients B now holds: not recorded (no deferral, no attempt counted, B's lease intact).
    await nodeA.waitForLog((l) => l.msg === 'heartbeat: other nodes declared this node dead and took its leased work over; results of deliveries it had in flight are not recorded (they are attempted again)', 10_000)
    const notRecorded = await nodeA.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('queue: results not recorded'), 10_000)
    expect(notRecorded.recipients).toBeGreaterThanOrEqual(2)
    const rows = await admin.query(`SELECT state, attempts, leased_by FROM ${SCHEMA}.recipients ORDER BY id`)
    expect(rows.rows).toEqual(Array.from({ length: 4 }, () => ({ state: 'queued', attempts: 0, leased_by: bId })))

    // The destination recovers: B's attempt times out, its retry delivers each message once.
    rx.setBehaviour({})
    await eventually(() => ids.every((id) => rx.messages.some((m) => messageIdOf(m) === id)), 20_000, "A's messages delivered by B")
    await eventually(async () => (await leases()).length === 0, 10_000, 'an empty queue')
    await new Promise((r) => setTimeout(r, 500))
    expect(rx.messages.map(messageIdOf).sort()).toEqual([...ids].sort())
    expect((await admin.query(`SELECT count(*)::int AS n FROM ${SCHEMA}.messages`)).rows[0].n).toBe(0)
    expect(rx.messages.every((m) => m.raw.toString('latin1').includes('by node-a.relay.test'))).toBe(true)
    // A beats again and keeps its place in the cluster.
    await eventually(async () => (await admin!.query(`SELECT node_id FROM ${SCHEMA}.nodes`)).rows.length === 2, 5000, 'both nodes on record')
  }, 60_000)

  it("nodes with different heartbeat settings judge each other by the silent node's own deadAfter; a node stopped cleanly leaves the record and its held work is due at once", async () => {
    if (!admin) return void skipFor(pgProblem)
    const bId = `node-b.relay.test/${os.hostname()}`
    // A: beats every 500 ms, dead after 2 s. B: every 3 s, dead after 10 s (a rolling change of queue.heartbeat).
    const nodeA = await startRelay({ config: nodeConfig('node-a') })
    relays.push(nodeA)
    const nodeB = await startRelay({ config: nodeConfig('node-b', { queue: { driver: 'postgres', url: PG_URL, schema: SCHEMA, poolSize: 4, heartbeat: { interval: '3s', deadAfter: '10s' } }, shutdownTimeout: '1s' }) })
    relays.push(nodeB)
    const ids = await sendThrough(nodeB, 2, 'slow-beats')
    await eventually(() => rx.refused.length >= 2, 15_000, "node B's deliveries under way")
    // Over two of B's beat intervals, A (whose own deadAfter is 2 s) does not take B for dead.
    await new Promise((r) => setTimeout(r, 7000))
    expect(logged(nodeA, 'heartbeat: a node stopped beating')).toEqual([])
    expect(logged(nodeB, 'heartbeat: other nodes declared this node dead')).toEqual([])
    expect(await leases()).toEqual([expect.objectContaining({ leased_by: bId, n: 4 })])
    expect(rx.refused).toHaveLength(2) // not attempted a second time by A

    // B stops (SIGTERM) with its deliveries stalled past shutdownTimeout: it leaves the record and
    // what it held is A's at once, without A reporting a node that died.
    rx.setBehaviour({})
    await nodeB.stop()
    await eventually(() => ids.every((id) => rx.messages.some((m) => messageIdOf(m) === id)), 15_000, "B's messages delivered by A")
    expect(logged(nodeA, 'heartbeat: a node stopped beating')).toEqual([])
    expect(logged(nodeA, "heartbeat: a node left the cluster (stopped)")).toHaveLength(1)
    expect((await admin.query(`SELECT node_id FROM ${SCHEMA}.nodes`)).rows.map((r) => r.node_id)).toEqual([`node-a.relay.test/${os.hostname()}`])
  }, 60_000)

  it('a second process with the same node identity is refused at start while the first one beats: it does not take the first one\'s in-flight mail', async () => {
    if (!admin) return void skipFor(pgProblem)
    const aId = `node-a.relay.test/${os.hostname()}`
    const nodeA = await startRelay({ config: nodeConfig('node-a') })
    relays.push(nodeA)
    await sendThrough(nodeA, 1, 'twin')
    await eventually(() => rx.refused.length >= 1, 15_000, "node A's delivery under way")
    const twin = startRelay({ config: nodeConfig('node-a') })
    await expect(twin).rejects.toThrow(/another process is running as cluster node node-a\.relay\.test\/.*each node needs its own identity/)
    expect(await leases()).toEqual([expect.objectContaining({ leased_by: aId, n: 2 })])
    expect(rx.refused).toHaveLength(1)
    expect(logged(nodeA, 'heartbeat: other nodes declared this node dead')).toEqual([])
  }, 60_000)

  it('a node restarted right after kill -9 (its record still fresh) waits for one beat, then starts and delivers what it held', async () => {
    if (!admin) return void skipFor(pgProblem)
    const first = await startRelay({ config: nodeConfig('node-a') })
    relays.push(first)
    const ids = await sendThrough(first, 1, 'restart')
    await eventually(() => rx.refused.length >= 1, 15_000, 'delivery under way')
    first.child.kill('SIGKILL')
    await new Promise((r) => first.child.once('exit', r))
    rx.setBehaviour({})
    const again = await startRelay({ config: nodeConfig('node-a') })
    relays.push(again)
    expect(logged(again, 'queue: node node-a.relay.test/')).toHaveLength(1) // the wait, said
    await eventually(() => ids.every((id) => rx.messages.some((m) => messageIdOf(m) === id)), 15_000, 'delivered after the restart')
  }, 60_000)
})
