// Per-route sending caps (Route.limits through the routing plugin): a route's messages per second /
// minute and its concurrency hold for the route as a whole, across destination domains (an SES-like
// smarthost has one sending-rate quota), by waiting, never by failing; with delivery.throttle.redis
// two nodes together stay under the cap. The route name is in the delivery events (as plugins get
// them and in the log lines) and in the metrics. Each message goes to a domain of its own, so only
// the route cap can be what spaces them. The smarthost is a local look-alike (STARTTLS, verified
// certificate) that records when each transaction starts and how many run at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { Redis } from 'ioredis'
import { SMTPServer } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { sendMail } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { ROOT, eventually, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { REDIS_URL, redisProblem, skipFor } from '../harness/services.js'

const TOKEN = 'route-caps-metrics-token-0123456789'
const PREFIX = `relay-route-caps-${process.pid}-${Date.now().toString(36)}:`
const RECORD = path.join(ROOT, 'test/fixtures/record-delivery-events.plugin.ts')
const HOST = 'email-smtp.route.test'
/**
 * Between the relay's admission and the receiver seeing the transaction start: timers, a DNS
 * lookup, the TCP connect (up to ~200 ms on a busy 2-core machine). A breach is far beyond it:
 * uncapped, all 8 start within ~100 ms.
 */
const SLACK_MS = 250

let ca: TestCa
let dns: TestDns
let rx: CapReceiver
let relay: RelayProcess
let adminUrl: string
let eventsFile: string

// ---- a smarthost that records transaction starts and concurrency ------------------------------

interface Transaction {
  /**
   * When the relay started it: the MAIL FROM on a reused connection, the connection itself for its
   * first one (the cap counts at admission; STARTTLS and EHLO on a new connection took up to 400 ms here).
   */
  startedAt: number
  helo: string
  from: string
}

interface CapReceiver {
  port: number
  /** Transactions (MAIL FROM) by envelope sender. */
  tx: Transaction[]
  /** Most transactions in progress at once, by envelope sender. */
  maxActive: Map<string, number>
  /** How long the reply to DATA is held, by envelope sender. */
  holdMs: Map<string, number>
  close(): Promise<void>
}

async function startCapReceiver(host: string, cert: { key: string; cert: string }): Promise<CapReceiver> {
  const active = new Map<string, number>()
  const connectedAt = new Map<string, number>()
  const state: CapReceiver = { port: 0, tx: [], maxActive: new Map(), holdMs: new Map(), close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
  const server = new SMTPServer({
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    key: fs.readFileSync(cert.key),
    cert: fs.readFileSync(cert.cert),
    closeTimeout: 100,
    onConnect(session, cb) {
      connectedAt.set(session.id, Date.now())
      cb()
    },
    onClose(session) {
      connectedAt.delete(session.id)
    },
    onMailFrom(address, session, cb) {
      const from = address.address
      const startedAt = session.transaction === 1 ? (connectedAt.get(session.id) ?? Date.now()) : Date.now()
      state.tx.push({ startedAt, helo: String(session.hostNameAppearsAs), from })
      active.set(from, (active.get(from) ?? 0) + 1)
      state.maxActive.set(from, Math.max(state.maxActive.get(from) ?? 0, active.get(from)!))
      cb()
    },
    onData(stream, session, cb) {
      const from = session.envelope.mailFrom ? session.envelope.mailFrom.address : ''
      stream.resume()
      stream.once('end', () =>
        setTimeout(() => {
          active.set(from, (active.get(from) ?? 1) - 1)
          cb(null, '2.0.0 Ok: queued as route-caps')
        }, state.holdMs.get(from) ?? 0),
      )
    },
  })
  server.on('error', () => undefined)
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject)
    server.listen(0, host, () => resolve())
  })
  state.port = (server.server.address() as { port: number }).port
  return state
}

/** Start times of the transactions from `from`, in order. */
const startsOf = (from: string) => rx.tx.filter((t) => t.from === from).map((t) => t.startedAt).sort((a, b) => a - b)

/** The most starts within any `windowMs` less the slack. */
function mostInWindow(starts: number[], windowMs: number): number {
  let most = 0
  for (let i = 0, j = 0; j < starts.length; j++) {
    while (starts[j]! - starts[i]! >= windowMs - SLACK_MS) i++
    most = Math.max(most, j - i + 1)
  }
  return most
}

/** Starts (as offsets from the first) earlier than `perSecond` allows: the k-th not before floor(k / perSecond) s. */
const tooEarly = (starts: number[], perSecond: number) => starts.map((t) => t - starts[0]!).filter((dt, k) => dt < Math.floor(k / perSecond) * 1000 - SLACK_MS)

// ---- the relay ----------------------------------------------------------------------------------

const msg = (from: string, to: string, n: number) => `From: ${from}\r\nTo: ${to}\r\nSubject: route cap ${n}\r\n\r\nbody ${n}\r\n`

/** n messages from `from`, each to a domain of its own (d<i>.<tag>.test), sent at once. */
async function burst(r: RelayProcess, from: string, tag: string, n: number, first = 0): Promise<string[]> {
  const to = Array.from({ length: n }, (_, i) => `user@d${first + i}.${tag}.test`)
  const replies = await Promise.all(to.map((t, i) => sendMail(r.port, { from, to: [t], data: msg(from, t, i) })))
  for (const reply of replies) expect(reply.lastReply).toMatch(/^250 /)
  return to
}

const routes = () => [
  { name: 'ses', match: { sender: 'persecond@app.test' }, kind: 'smarthost', host: HOST, port: rx.port, tls: 'starttls', limits: { perSecond: 2 } },
  { name: 'ses-minute', match: { sender: 'perminute@app.test' }, kind: 'smarthost', host: HOST, port: rx.port, tls: 'starttls', limits: { perMinute: 3 } },
  { name: 'one-at-a-time', match: { sender: 'serial@app.test' }, kind: 'smarthost', host: HOST, port: rx.port, tls: 'starttls', limits: { concurrency: 1 } },
  { name: 'uncapped', match: { sender: 'parallel@app.test' }, kind: 'smarthost', host: HOST, port: rx.port, tls: 'starttls' },
]

function config(name: string, extra: { redis?: boolean; plugins?: unknown[]; global?: number } = {}) {
  return {
    hostname: name,
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: {
      tlsCa: ca.caFile,
      // A failure would retry after an hour: a cap's deferral is due much sooner, by its own reckoning.
      retry: { base: '1h', factor: 1, max: '1h' },
      connectTimeout: '3s',
      ...(extra.global ? { concurrency: { global: extra.global, perDomain: extra.global } } : {}),
      mtaSts: { enabled: false },
      delayWarning: false,
      throttle: { hostWait: '10s', ...(extra.redis ? { redis: REDIS_URL, keyPrefix: PREFIX } : {}) },
    },
    plugins: [...(extra.plugins ?? []), ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }], ['routing', { routes: routes() }]],
  }
}

beforeAll(async () => {
  ca = makeCa()
  rx = await startCapReceiver('127.0.0.3', ca.issue([HOST]))
  dns = await startDns({ [HOST]: { A: ['127.0.0.3'] } })
  eventsFile = path.join(tempDir('route-caps-events-'), 'events.jsonl')
  relay = await startRelay({
    config: config('relay-a.test', { plugins: [['admin', { host: '127.0.0.1', port: 0, token: TOKEN }], [RECORD, { events: eventsFile }]] }),
  })
  const line = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listener on'))
  adminUrl = line.url as string
  // Warm-up (DNS, first connection) through the uncapped route, so the measured bursts see a running relay.
  const [warm] = await burst(relay, 'parallel@app.test', 'warm', 1)
  await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === warm, 10_000)
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), rx?.close()])
})

const logged = (r: RelayProcess, event: string, recipients: string[]) => r.logs.filter((l) => l.event === event && l.msg === event && recipients.includes(String(l.recipient)))
const events = () =>
  fs.existsSync(eventsFile)
    ? fs
        .readFileSync(eventsFile, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { type: string; recipient: string; routeName?: string; route?: string; response: string })
    : []

async function scrape(): Promise<string> {
  const res = await fetch(`${adminUrl}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })
  expect(res.status).toBe(200)
  return res.text()
}
const sample = (text: string, route: string, result: string) => Number(new RegExp(`^relay_delivery_route_results_total\\{route="${route}",result="${result}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)

describe('per-route sending caps', () => {
  it('perSecond 2: 8 messages to 8 domains go out no faster than 2 per second, none bounce', async () => {
    const t0 = Date.now()
    const to = await burst(relay, 'persecond@app.test', 'ps', 8)
    await eventually(() => logged(relay, 'delivered', to).length === 8, 15_000, '8 deliveries through route ses')
    const starts = startsOf('persecond@app.test')
    console.log(`route-caps: perSecond 2, 8 messages: starts at +${starts.map((t) => t - starts[0]!).join(', +')} ms, all delivered ${Date.now() - t0} ms after the burst`)
    expect(starts).toHaveLength(8)
    expect(mostInWindow(starts, 1000)).toBeLessThanOrEqual(2)
    expect(tooEarly(starts, 2)).toEqual([])
    // 8 at 2 per second: the last starts at least 3 s after the first.
    expect(starts[7]! - starts[0]!).toBeGreaterThanOrEqual(3000 - SLACK_MS)
    expect(logged(relay, 'bounced', to)).toEqual([])
    // Waiting for the cap is no failure: nothing was deferred either (the wait fits in hostWait).
    expect(logged(relay, 'deferred', to)).toEqual([])
  })

  it('the delivery events (plugins and log lines) and the metrics carry the route name', async () => {
    const delivered = events().filter((e) => e.type === 'delivered' && /@d\d+\.ps\.test$/.test(e.recipient))
    expect(delivered).toHaveLength(8)
    for (const e of delivered) expect(e).toMatchObject({ routeName: 'ses', route: 'smtp' })
    const lines = () => relay.logs.filter((l) => l.event === 'delivered' && /@d\d+\.ps\.test$/.test(String(l.recipient)))
    // The log lines may trail the plugin's events by the log's flush interval.
    await eventually(() => lines().length === 8, 5000, 'eight delivered lines')
    expect(lines().map((l) => l.routeName)).toEqual(Array(8).fill('ses'))
    expect(sample(await scrape(), 'ses', 'delivered')).toBe(8)
  })

  it('perMinute 3: 3 of 5 go out at once; 2 wait for the minute (deferred to when it frees, not the 1 h retry), none bounce', async () => {
    const to = await burst(relay, 'perminute@app.test', 'pm', 5)
    await eventually(() => logged(relay, 'delivered', to).length === 3 && logged(relay, 'deferred', to).length === 2, 15_000, '3 delivered, 2 deferred')
    const firstStart = startsOf('perminute@app.test')[0]!
    const deferred = logged(relay, 'deferred', to)
    for (const d of deferred) {
      expect(d.response).toMatch(/^4\.4\.5 Route ses-minute is at its sending cap \(3\/min\)/)
      expect(d.routeName).toBe('ses-minute')
      // Our own cap, not a failure of the provider: counted as throttling.
      expect(d.category).toBe('throttled')
      // Due when the first start leaves the minute (within a second), long before the retry policy's hour.
      const due = Date.parse(String(d.nextAttemptAt))
      expect(due).toBeGreaterThanOrEqual(firstStart + 60_000 - SLACK_MS - 1000)
      expect(due).toBeLessThanOrEqual(firstStart + 60_000 + 1000)
    }
    expect(logged(relay, 'bounced', to)).toEqual([])
    expect(startsOf('perminute@app.test')).toHaveLength(3)
    const queued = (await relay.listQueue()).flatMap((m) => m.recipients).filter((r) => to.includes(r.address))
    expect(queued.map((r) => r.state)).toEqual(['deferred', 'deferred'])
    // A wait at our own cap is no attempt: the count (and with it the retry backoff) stays 0.
    expect(queued.map((r) => r.attempts)).toEqual([0, 0])
    for (const d of deferred) expect(d.attempts).toBe(0)
    const text = await scrape()
    expect(sample(text, 'ses-minute', 'deferred')).toBe(2)
    expect(sample(text, 'ses-minute', 'delivered')).toBe(3)
  })

  it('concurrency 1: one transaction at a time at the receiver; without the cap the same burst runs in parallel', async () => {
    rx.holdMs.set('serial@app.test', 300)
    rx.holdMs.set('parallel@app.test', 300)
    const [serial, parallel] = await Promise.all([burst(relay, 'serial@app.test', 'c1', 4), burst(relay, 'parallel@app.test', 'cn', 4)])
    await eventually(() => logged(relay, 'delivered', [...serial, ...parallel]).length === 8, 15_000, '8 deliveries')
    expect(rx.maxActive.get('serial@app.test')).toBe(1)
    // The measurement can see more than one: the uncapped route had several at once.
    expect(rx.maxActive.get('parallel@app.test')).toBeGreaterThan(1)
    expect(logged(relay, 'bounced', serial)).toEqual([])
  })
})

describe('a capped route does not take every delivery slot', () => {
  it('delivery.concurrency.global 4: 12 messages at the cap, and mail on another route still goes at once', async () => {
    const small = await startRelay({ config: config('small.test', { global: 4 }) })
    try {
      const capped = await burst(small, 'persecond@app.test', 'g4', 12)
      // Meanwhile, mail through another route: half the slots stay free of waiters for it.
      await new Promise((resolve) => setTimeout(resolve, 300))
      const t0 = Date.now()
      const [other] = await burst(small, 'parallel@app.test', 'g4other', 1)
      await small.waitForLog((l) => l.event === 'delivered' && l.recipient === other, 10_000)
      const otherMs = Date.now() - t0
      await eventually(() => logged(small, 'delivered', capped).length === 12, 30_000, '12 deliveries through route ses')
      const starts = rx.tx.filter((t) => t.from === 'persecond@app.test' && t.helo === 'small.test').map((t) => t.startedAt).sort((a, b) => a - b)
      console.log(`route-caps: global 4, 12 capped: other route delivered in ${otherMs} ms; capped starts at +${starts.map((t) => t - starts[0]!).join(', +')} ms; ${logged(small, 'deferred', capped).length} deferrals`)
      expect(otherMs).toBeLessThan(1500)
      expect(mostInWindow(starts, 1000)).toBeLessThanOrEqual(2)
      expect(logged(small, 'bounced', capped)).toEqual([])
      // Those beyond the waiters were deferred to about their turn, with the cap's response.
      for (const d of logged(small, 'deferred', capped)) expect(d.response).toMatch(/^4\.4\.5 Route ses is at its sending cap/)
    } finally {
      await small.stop()
    }
  })
})

describe('per-route sending caps in cluster mode (delivery.throttle.redis)', () => {
  /** Two nodes, 4 messages each through route ses (perSecond 2): the transaction starts of both. */
  async function twoNodes(redis: boolean, tag: string): Promise<number[]> {
    const names = [`${tag}-1.test`, `${tag}-2.test`]
    const [n1, n2] = await Promise.all(names.map((n) => startRelay({ config: config(n, { redis }) })))
    try {
      // The shared counters are used once each node's Redis client is ready (it connects at start).
      await new Promise((resolve) => setTimeout(resolve, 500))
      const [a, b] = await Promise.all([burst(n1!, 'persecond@app.test', `${tag}1`, 4), burst(n2!, 'persecond@app.test', `${tag}2`, 4)])
      await eventually(() => logged(n1!, 'delivered', a).length === 4 && logged(n2!, 'delivered', b).length === 4, 20_000, '4 deliveries on each node')
      expect([...logged(n1!, 'bounced', a), ...logged(n2!, 'bounced', b)]).toEqual([])
      const mine = rx.tx.filter((t) => t.from === 'persecond@app.test' && names.includes(t.helo))
      expect(new Set(mine.map((t) => t.helo))).toEqual(new Set(names))
      return mine.map((t) => t.startedAt).sort((x, y) => x - y)
    } finally {
      await Promise.all([n1!.stop(), n2!.stop()])
    }
  }

  it('two nodes sharing Redis together stay under perSecond 2 (without Redis they go over)', async () => {
    const problem = await redisProblem()
    if (problem && skipFor(problem)) return
    try {
      const starts = await twoNodes(true, 'node')
      console.log(`route-caps: two nodes with Redis, perSecond 2, 8 messages: starts at +${starts.map((t) => t - starts[0]!).join(', +')} ms`)
      expect(starts).toHaveLength(8)
      expect(mostInWindow(starts, 1000)).toBeLessThanOrEqual(2)
      expect(tooEarly(starts, 2)).toEqual([])
      expect(starts[7]! - starts[0]!).toBeGreaterThanOrEqual(3000 - SLACK_MS)
    } finally {
      await cleanRedis()
    }
    // Control: each node alone holds 2 per second, so together they send 4: the measurement sees it.
    const apart = await twoNodes(false, 'solo')
    console.log(`route-caps: two nodes without Redis: starts at +${apart.map((t) => t - apart[0]!).join(', +')} ms`)
    expect(mostInWindow(apart, 1000)).toBeGreaterThan(2)
  })
})

async function cleanRedis(): Promise<void> {
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  r.on('error', () => undefined)
  try {
    await r.connect()
    const keys = await r.keys(`${PREFIX}*`)
    if (keys.length) await r.del(...keys)
  } catch {
    // best effort
  } finally {
    r.disconnect()
  }
}
