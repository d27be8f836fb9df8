// Cluster mode end to end: two relay processes share one PostgreSQL queue and one Redis (delivery
// throttles). 5,000 messages go in through both nodes, as a TCP load balancer would spread them;
// one node is killed with SIGKILL while it delivers. Every acknowledged message must reach the
// receiver; duplicates (at-least-once) must stay within what the dead node had in flight.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import net from 'node:net'
import type pg from 'pg'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'
import { PG_URL, REDIS_URL, REQUIRE_SERVICES, connectPostgres, redisProblem, skipFor } from '../harness/services.js'
const RUN = `${process.pid}_${crypto.randomBytes(3).toString('hex')}`
const SCHEMA = `relay_cluster_${RUN}`
const MESSAGES = 5000
/** Deliveries a node runs at once: what it can have "in flight" when it dies. */
const NODE_CONCURRENCY = 20

let missing: string | undefined
let admin: pg.Client | undefined
let dns: TestDns
let rx: TestReceiver
const relays: RelayProcess[] = []

beforeAll(async () => {
  const pgc = await connectPostgres()
  admin = pgc.client
  missing = pgc.problem ?? (await redisProblem())
  if (missing && REQUIRE_SERVICES) throw new Error(`RELAY_REQUIRE_SERVICES=1 but ${missing}`)
  if (missing) return
  dns = await startDns({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { A: ['127.0.0.1'] } })
  rx = await startReceiver({ host: '127.0.0.1' })
}, 30_000)

afterAll(async () => {
  await Promise.all(relays.map((r) => (r.exited() ? undefined : r.stop())))
  await rx?.close()
  await dns?.close()
  if (admin) {
    await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`).catch(() => undefined)
    await admin.end()
  }
})

function skipped(): boolean {
  return missing ? skipFor(missing) : false
}

function nodeConfig(name: string): Record<string, unknown> {
  return {
    hostname: `${name}.relay.test`,
    queue: { driver: 'postgres', url: PG_URL, schema: SCHEMA, poolSize: 8 },
    dns: { servers: [dns.server], timeout: '2s' },
    delivery: {
      port: rx.port,
      // A dead node's leased work is due again on the other node after this.
      lease: '4s',
      concurrency: { global: NODE_CONCURRENCY, perDomain: NODE_CONCURRENCY },
      throttle: { redis: REDIS_URL, keyPrefix: `relay:test:${RUN}:` },
      mtaSts: { enabled: false },
    },
    plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    log: { level: 'info' },
  }
}

/** One SMTP reply (the last line of a multi-line one). */
function replies(socket: net.Socket): () => Promise<string> {
  let buf = ''
  const lines: string[] = []
  const waiting: ((l: string) => void)[] = []
  let failed: Error | undefined
  const fail = (err: Error) => {
    failed = err
    for (const w of waiting.splice(0)) w(`ERR ${err.message}`)
  }
  socket.on('data', (d) => {
    buf += d.toString('latin1')
    for (let nl = buf.indexOf('\r\n'); nl >= 0; nl = buf.indexOf('\r\n')) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 2)
      if (line[3] === '-') continue
      const w = waiting.shift()
      if (w) w(line)
      else lines.push(line)
    }
  })
  socket.on('error', fail)
  socket.on('close', () => fail(new Error('connection closed')))
  return () =>
    new Promise((resolve) => {
      const l = lines.shift()
      if (l !== undefined) return resolve(l)
      if (failed) return resolve(`ERR ${failed.message}`)
      waiting.push(resolve)
    })
}

/**
 * One session sending messages from `take()` until it returns undefined; resolves with the
 * sequence numbers acknowledged (250 after DATA). A message whose 250 never came is handed back
 * through `retry` so another session can send it (what a client does when its relay dies).
 */
async function session(port: number, take: () => number | undefined, retry: (seq: number) => void): Promise<number[]> {
  const socket = net.connect(port, '127.0.0.1')
  const next = replies(socket)
  const ok: number[] = []
  const expect2 = async (line: string | undefined, code: string) => {
    if (line !== undefined) socket.write(line)
    const r = await next()
    if (!r.startsWith(code)) throw new Error(r)
  }
  let seq: number | undefined
  try {
    await expect2(undefined, '220')
    await expect2('EHLO cluster-client.test\r\n', '250')
    while ((seq = take()) !== undefined) {
      await expect2('MAIL FROM:<sender@origin.test>\r\n', '250')
      await expect2(`RCPT TO:<user${seq % 50}@dest.test>\r\n`, '250')
      await expect2('DATA\r\n', '354')
      await expect2(`From: <sender@origin.test>\r\nTo: <user@dest.test>\r\nSubject: cluster ${seq}\r\nMessage-ID: <cluster-${seq}-${RUN}@origin.test>\r\nX-Seq: ${seq}\r\n\r\nmessage ${seq}\r\n.\r\n`, '250')
      ok.push(seq)
      seq = undefined
    }
    socket.end('QUIT\r\n')
  } catch {
    if (seq !== undefined) retry(seq)
    socket.destroy()
  }
  return ok
}

const seqOf = (raw: Buffer) => Number(/^X-Seq: (\d+)/m.exec(raw.toString('latin1'))?.[1] ?? -1)

describe('cluster mode: two nodes on one PostgreSQL queue and one Redis', () => {
  it('delivers 5,000 messages taken in by both nodes although one is killed (SIGKILL) while delivering', async () => {
    if (skipped()) return
    const [a, b] = await Promise.all([startRelay({ config: nodeConfig('node-a') }), startRelay({ config: nodeConfig('node-b') })])
    relays.push(a!, b!)
    const nodeA = a!
    const nodeB = b!

    // The load: 10 sessions at a time, half to each node, a new session when one ends. Messages a
    // dead node never acknowledged go back into the pile and are sent through the live node.
    const pile: number[] = Array.from({ length: MESSAGES }, (_, i) => i)
    const acked = new Set<number>()
    let aDead = false
    const deadline = Date.now() + 180_000
    const inject = async (worker: number) => {
      while (pile.length && Date.now() < deadline) {
        const port = worker % 2 === 0 && !aDead ? nodeA.port : nodeB.port
        let sent = 0
        const got = await session(
          port,
          () => (sent++ < 50 ? pile.shift() : undefined),
          (seq) => pile.unshift(seq),
        )
        for (const s of got) acked.add(s)
      }
    }
    const injecting = Promise.all(Array.from({ length: 10 }, (_, w) => inject(w)))

    // Kill node A once deliveries are well under way (node A delivering its share too).
    await eventually(() => rx.messages.length >= 1500, 120_000, '1,500 messages delivered before the kill')
    await nodeA.kill9()
    aDead = true
    const deliveredAtKill = rx.messages.length
    // Both nodes took mail in and delivered it (each stamps its own Received header).
    const byA = rx.messages.filter((m) => m.raw.toString('latin1').includes('by node-a.relay.test')).length
    expect(byA).toBeGreaterThan(0)
    expect(deliveredAtKill - byA).toBeGreaterThan(0)
    await injecting
    expect(acked.size).toBe(MESSAGES)

    // Node B takes over node A's leased and queued work once the leases expire.
    await eventually(() => new Set(rx.messages.map((m) => seqOf(m.raw))).size >= MESSAGES, 180_000, 'every message delivered')
    await new Promise((r) => setTimeout(r, 1000)) // late duplicates
    const counts = new Map<number, number>()
    for (const m of rx.messages) counts.set(seqOf(m.raw), (counts.get(seqOf(m.raw)) ?? 0) + 1)
    const duplicates = rx.messages.length - counts.size
    // Node B says what it took over from node A's expired leases (and counts it in /metrics).
    const takenOver = nodeB.logs.filter((l) => l.msg?.startsWith?.('took over queued work')).reduce((n, l) => n + Number(l.recipients), 0)
    console.log(`cluster: ${MESSAGES} messages, ${deliveredAtKill} delivered when node A was killed (${byA} through node A), ${takenOver} taken over by node B, ${duplicates} duplicates`)
    expect(takenOver).toBeGreaterThan(0)
    expect([...counts.keys()].filter((s) => s >= 0 && s < MESSAGES).length).toBe(MESSAGES)
    // At-least-once: only what node A had in flight may go out twice: deliveries it had made but
    // not yet recorded (at most its concurrency), and messages it had queued whose 250 the client
    // never read (at most one per session to it: 5), which the client then sent again via node B.
    expect(duplicates).toBeLessThanOrEqual(NODE_CONCURRENCY + 5)

    // The queue is empty: nothing left behind by the dead node.
    await eventually(async () => {
      const r = await admin!.query(`SELECT count(*)::int AS n FROM ${SCHEMA}.recipients WHERE state IN ('queued','deferred')`)
      return r.rows[0].n === 0
    }, 30_000, 'queue empty')
  }, 400_000)
})
