// Cluster mode, shared limits (issue 8 §2): two relay processes (nodes) on one Redis hold one limit
// together. (a) plugins/rate-limit with `store: { redis }`, the nodes behind a "load balancer" (the
// test writes PROXY headers): a per-client-address and a per-sender-domain budget of N is N across
// both nodes, the N+1th is refused on the other node. (b) delivery.throttle with `redis`: both
// nodes deliver to one slow destination (each transaction held 300 ms) and the number of sessions
// open at once never passes the per-destination concurrency while both nodes have work for it; the
// same run without Redis goes past it (so the measurement can see a breach).
// Each node keeps its own SQLite queue here. Needs Redis (RELAY_TEST_REDIS_URL, default
// 127.0.0.1:6379): skipped with a notice when absent, a failure when RELAY_REQUIRE_SERVICES=1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import net from 'node:net'
import { Redis } from 'ioredis'
import { SMTPServer } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'
import { REDIS_URL, redisProblem, skipFor } from '../harness/services.js'

const PREFIX = `relay-shared-test-${process.pid}-${Date.now().toString(36)}`

const BALANCER = '127.0.0.1' // writes PROXY headers (trusted by both nodes)
const INJECTOR = '127.0.0.40' // a plain client on the internal network (relay-acl default 127/8), exempt from rate limits
const CONCURRENCY = 2 // delivery.throttle for slow.test
const HOLD_MS = 300 // the slow destination holds each transaction this long

let available = false
let dns: TestDns
let fast: TestReceiver // 127.0.0.2: local.test, where the rate-limit test's messages go
let slow: SlowReceiver // 127.0.0.3: slow.test
let nodes: RelayProcess[] = []


// ---- a slow destination that measures how many sessions it has at once ----------------------

interface SlowReceiver {
  port: number
  delivered: { node: string; to: string }[]
  /** Most sessions open at once (from connect to the reply to the message). */
  maxActive: number
  /** Until `open()`, every message waits at the end of DATA (so both nodes are surely busy). */
  closeGate(): void
  openGate(): void
  reset(): void
  close(): Promise<void>
}

async function startSlowReceiver(host: string, port: number): Promise<SlowReceiver> {
  const active = new Set<string>() // session ids
  let gate: { promise: Promise<void>; open: () => void } | undefined
  const state: SlowReceiver = {
    port,
    delivered: [],
    maxActive: 0,
    closeGate() {
      let open!: () => void
      gate = { promise: new Promise<void>((resolve) => (open = resolve)), open }
    },
    openGate() {
      gate?.open()
      gate = undefined
    },
    reset() {
      state.delivered = []
      state.maxActive = 0
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
  const open = (id: string) => {
    active.add(id)
    state.maxActive = Math.max(state.maxActive, active.size)
  }
  const server = new SMTPServer({
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    hideSTARTTLS: true,
    closeTimeout: 100,
    onConnect(session, cb) {
      open(session.id)
      cb()
    },
    onMailFrom(_address, session, cb) {
      // A reused connection starts its next transaction here.
      open(session.id)
      cb()
    },
    onData(stream, session, cb) {
      stream.resume()
      stream.once('end', () =>
        void (gate?.promise ?? Promise.resolve()).then(() =>
          setTimeout(() => {
            for (const r of session.envelope.rcptTo) state.delivered.push({ node: String(session.hostNameAppearsAs), to: r.address })
            active.delete(session.id)
            cb(null, 'held and accepted')
          }, HOLD_MS),
        ),
      )
    },
    onClose(session) {
      active.delete(session.id)
    },
  })
  server.on('error', () => undefined)
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  return state
}

// ---- the nodes ------------------------------------------------------------------------------

function nodeConfig(name: string, throttle: Record<string, unknown>) {
  return {
    hostname: name, // unique per node: it is the node's identity (EHLO, leases)
    listen: [{ host: '127.0.0.1', port: 0, role: 'mx', proxyProtocol: [BALANCER] }],
    localDomains: ['local.test'],
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: {
      port: fast.port,
      retry: { base: '1s', factor: 1, max: '1s' },
      mtaSts: { enabled: false },
      delayWarning: false,
      // One message per connection: connections and transactions are the same thing here.
      reuse: { maxMessages: 1, idleTimeout: 0 },
      throttle,
    },
    plugins: [
      [
        'rate-limit',
        {
          store: { redis: REDIS_URL },
          keyPrefix: `${PREFIX}-rl`,
          perIp: { connectionsPerMinute: 3 },
          perSenderDomain: { messagesPerHour: 3, authenticatedOnly: false },
          exempt: ['127.0.0.0/8'],
        },
      ],
      ['relay-acl', {}],
    ],
  }
}

const sharedThrottle = () => ({ domains: { 'slow.test': { concurrency: CONCURRENCY } }, redis: REDIS_URL, keyPrefix: `${PREFIX}-throttle:`, hostWait: '10s' })

/** One message through the balancer (PROXY v1 claiming `client`) to node `r`; every reply. */
async function throughBalancer(r: RelayProcess, client: string, from: string, to: string): Promise<string[]> {
  const socket = net.connect({ port: r.port, host: '127.0.0.1', localAddress: BALANCER })
  socket.on('error', () => undefined)
  let buf = ''
  const replies: string[] = []
  const waiters: ((s: string) => void)[] = []
  socket.on('data', (d: Buffer) => {
    buf += d.toString('latin1')
    let i: number
    while ((i = buf.indexOf('\r\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 2)
      if (/^\d{3}-/.test(line)) continue
      const w = waiters.shift()
      if (w) w(line)
      else replies.push(line)
    }
  })
  socket.on('close', () => waiters.splice(0).forEach((w) => w('(closed)')))
  const read = () => (replies.length ? Promise.resolve(replies.shift()!) : new Promise<string>((resolve) => waiters.push(resolve)))
  const seen: string[] = []
  const step = async (line?: string) => {
    if (line !== undefined) socket.write(line)
    const reply = await Promise.race([read(), new Promise<string>((resolve) => setTimeout(() => resolve('(timeout)'), 5000))])
    seen.push(reply)
    return /^[23]/.test(reply)
  }
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    socket.write(`PROXY TCP4 ${client} 192.0.2.25 40000 25\r\n`)
    if (!(await step())) return seen
    for (const line of ['EHLO client.test\r\n', `MAIL FROM:<${from}>\r\n`, `RCPT TO:<${to}>\r\n`, 'DATA\r\n']) if (!(await step(line))) return seen
    await step(`From: ${from}\r\nTo: ${to}\r\nSubject: shared\r\n\r\nhi\r\n.\r\n`)
    return seen
  } finally {
    socket.destroy()
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const rateLimitHit = (r: RelayProcess, limit: string, key: string) => r.waitForLog((l: LogLine) => l.limit === limit && l.key === key, 5000)

beforeAll(async () => {
  const problem = await redisProblem()
  available = !problem
  if (problem) {
    skipFor(problem, 'the shared-limit tests')
    return
  }
  fast = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
  slow = await startSlowReceiver('127.0.0.3', fast.port)
  dns = await startDns({ 'local.test': { A: ['127.0.0.2'] }, 'slow.test': { A: ['127.0.0.3'] } })
  nodes = await Promise.all([startRelay({ config: nodeConfig('node1.relay.test', sharedThrottle()) }), startRelay({ config: nodeConfig('node2.relay.test', sharedThrottle()) })])
  for (const n of nodes) await n.waitForLog((l) => l.msg === 'rate-limit store: Redis connected', 10_000)
})

afterAll(async () => {
  await Promise.all(nodes.map((n) => n.stop()))
  await Promise.all([dns?.close(), fast?.close(), slow?.close()])
  if (!available) return
  const r = new Redis(REDIS_URL)
  const keys = await r.keys(`${PREFIX}*`)
  if (keys.length) await r.del(...keys)
  await r.quit()
})

describe('two nodes, one Redis: rate limits (plugins/rate-limit)', () => {
  it('connections per minute from one (proxied) client: 3 in total across both nodes, the 4th refused on the other node', async () => {
    if (!available) return
    const [n1, n2] = nodes as [RelayProcess, RelayProcess]
    const client = '198.51.100.77'
    const first = [await throughBalancer(n1, client, 'a@one.test', 'x@local.test'), await throughBalancer(n2, client, 'a@two.test', 'x@local.test'), await throughBalancer(n1, client, 'a@three.test', 'x@local.test')]
    for (const replies of first) expect(replies.at(-1)).toMatch(/^250 2\.0\.0 Ok: queued/)
    const fourth = await throughBalancer(n2, client, 'a@four.test', 'x@local.test')
    expect(fourth[0]).toBe('421 4.7.0 node2.relay.test Error: too many connections per minute from 198.51.100.77')
    await rateLimitHit(n2, 'perIp.connectionsPerMinute', client)
    // The counter lives in Redis under the configured prefix (one key for both nodes).
    const r = new Redis(REDIS_URL)
    const keys = await r.keys(`${PREFIX}-rl*198.51.100.77*`)
    await r.quit()
    expect(keys.length).toBeGreaterThan(0)
    // Another client through the same balancer is not affected.
    expect((await throughBalancer(n2, '198.51.100.78', 'a@five.test', 'x@local.test')).at(-1)).toMatch(/^250 2\.0\.0 /)
  })

  it('messages per sender domain: 3 in total across both nodes (from different clients), the 4th refused on either node', async () => {
    if (!available) return
    const [n1, n2] = nodes as [RelayProcess, RelayProcess]
    const plan: [RelayProcess, string][] = [
      [n1, '203.0.113.31'],
      [n2, '203.0.113.32'],
      [n2, '203.0.113.33'],
    ]
    for (const [node, client] of plan) expect((await throughBalancer(node, client, 'news@burst.test', 'x@local.test')).at(-1)).toMatch(/^250 2\.0\.0 /)
    const refused = await throughBalancer(n1, '203.0.113.34', 'news@burst.test', 'x@local.test')
    expect(refused.at(-1)).toBe('451 4.7.1 Error: too many messages from sender domain burst.test this hour, try again later')
    await rateLimitHit(n1, 'perSenderDomain.messagesPerHour', 'burst.test')
    expect((await throughBalancer(n2, '203.0.113.35', 'news@burst.test', 'x@local.test')).at(-1)).toMatch(/^451 4\.7\.1 /)
    // Mail that got in is delivered (each node from its own queue).
    await eventually(() => fast.messages.filter((m) => m.from === 'news@burst.test').length >= 3, 15_000, 'delivery of the 3 accepted messages')
    expect(fast.messages.filter((m) => m.from === 'news@burst.test')).toHaveLength(3)
  })
})

describe('two nodes, one Redis: per-destination concurrency (delivery.throttle)', () => {
  /**
   * 8 messages into each node, all to slow.test, while the destination holds every message until
   * all 16 are queued (both nodes then have work for it at once); resolves when all are delivered.
   */
  async function burst(pair: RelayProcess[], tag: string): Promise<void> {
    slow.reset()
    slow.closeGate()
    const sends = pair.flatMap((n, i) =>
      Array.from({ length: 8 }, (_, k) => sendMail(n.port, { from: 'bulk@sender.test', to: [`${tag}-${i}-${k}@slow.test`], data: `From: bulk@sender.test\r\nSubject: ${tag} ${i} ${k}\r\n\r\nbody\r\n`, localAddress: INJECTOR })),
    )
    for (const r of await Promise.all(sends)) expect(r.lastReply).toMatch(/^250 2\.0\.0 /)
    await sleep(500) // both nodes try to start their deliveries: only the allowed ones get through
    slow.openGate()
    await eventually(() => slow.delivered.length >= 16, 30_000, `16 deliveries to slow.test (${tag})`)
  }

  it(`a concurrency of ${CONCURRENCY} for slow.test holds across both nodes together`, async () => {
    if (!available) return
    await burst(nodes, 'shared')
    expect(slow.delivered).toHaveLength(16)
    expect(new Set(slow.delivered.map((d) => d.node))).toEqual(new Set(['node1.relay.test', 'node2.relay.test']))
    expect(slow.maxActive).toBeLessThanOrEqual(CONCURRENCY)
    expect(slow.maxActive).toBe(CONCURRENCY) // the limit was reached, not merely respected by chance
  })

  it('the same two nodes without Redis: each holds its own limit, so together they go past it (control)', async () => {
    if (!available) return
    const local = { domains: { 'slow.test': { concurrency: CONCURRENCY } }, hostWait: '10s' }
    const pair = await Promise.all([startRelay({ config: nodeConfig('node3.relay.test', local) }), startRelay({ config: nodeConfig('node4.relay.test', local) })])
    try {
      await burst(pair, 'local')
      expect(slow.maxActive).toBeGreaterThan(CONCURRENCY)
    } finally {
      await Promise.all(pair.map((n) => n.stop()))
    }
  })
})
