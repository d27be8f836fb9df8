// Per-destination throttles (core/delivery/throttle.ts): per-domain concurrency and per-minute
// limits, messages per connection per destination, automatic backoff when a destination says
// 421 / 4.7.x while another keeps full speed, and (with Redis) one limit held by two relays.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Redis } from 'ioredis'
import { SMTPServer } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'
import { REDIS_URL, redisProblem, skipFor } from '../harness/services.js'

const PREFIX = `relay-throttle-test-${process.pid}-${Date.now().toString(36)}:`

let dns: TestDns
let fast: TestReceiver // 127.0.0.2: always accepts
let slow: TestReceiver // 127.0.0.3: 421 at connect while `throttling`
let limited: TestReceiver // 127.0.0.4: concurrency 2 (stalls at DATA until switched to accept)
let minute: TestReceiver // 127.0.0.5: 3 per minute
let mpc: TestReceiver // 127.0.0.6: 2 messages per connection
let shared: TestReceiver // 127.0.0.7: the Redis test's destination
let relay: RelayProcess
let throttling = true

const msg = (subject: string) => `From: a@sender.test\r\nTo: x@y.test\r\nSubject: ${subject}\r\n\r\nbody\r\n`
const send = (r: RelayProcess, to: string, subject: string) => sendMail(r.port, { from: 'a@sender.test', to: [to], data: msg(subject) })
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function throttleConfig() {
  return {
    domains: {
      'limited.test': { concurrency: 2 },
      'minute.test': { perMinute: 3 },
      '*.mpc.test': { concurrency: 1, messagesPerConnection: 2 },
    },
    backoff: { base: '1500ms', max: '5s', recoverAfter: 2 },
    hostWait: '5s',
  }
}

function baseConfig(port: number, throttle: Record<string, unknown>) {
  return {
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: {
      port,
      retry: { base: '300ms', factor: 1, max: '300ms' },
      connectTimeout: '2s',
      commandTimeout: '2s', dataDoneTimeout: '2s',
      mtaSts: { enabled: false },
      delayWarning: false,
      throttle,
    },
    plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
  }
}

beforeAll(async () => {
  fast = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
  const port = fast.port
  slow = await startReceiver({
    host: '127.0.0.3',
    port,
    behaviour: { noStartTls: true, reply: { connect: () => (throttling ? { code: 421, message: '4.7.0 Too many connections, slow down' } : undefined) } },
  })
  limited = await startReceiver({ host: '127.0.0.4', port, behaviour: { noStartTls: true, stall: 'data' } })
  minute = await startReceiver({ host: '127.0.0.5', port, behaviour: { noStartTls: true } })
  mpc = await startReceiver({ host: '127.0.0.6', port, behaviour: { noStartTls: true } })
  shared = await startReceiver({ host: '127.0.0.7', port, behaviour: { noStartTls: true, stall: 'data' } })
  dns = await startDns({
    'fast.test': { A: ['127.0.0.2'] },
    'slow.test': { A: ['127.0.0.3'] },
    'limited.test': { A: ['127.0.0.4'] },
    'minute.test': { A: ['127.0.0.5'] },
    'a.mpc.test': { A: ['127.0.0.6'] },
    'shared.test': { A: ['127.0.0.7'] },
  })
  relay = await startRelay({ config: baseConfig(port, throttleConfig()) })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, fast, slow, limited, minute, mpc, shared].map((x) => x?.close()))
})

describe('per-destination throttles', () => {
  it('per-domain concurrency: at most 2 connections at once to limited.test', async () => {
    await Promise.all(Array.from({ length: 6 }, (_, i) => send(relay, `u${i}@limited.test`, `limited ${i}`)))
    await eventually(() => limited.connections >= 2, 5000, 'two connections to limited.test')
    // Every connection stalls at DATA (until commandTimeout, 2 s): more would show up now.
    await sleep(1200)
    expect(limited.connections).toBe(2)
    limited.behaviour = { noStartTls: true }
    await limited.waitForMessages(6, 12_000)
  })

  it('per-minute limit: 3 of 5 messages to minute.test go out, the rest wait for the minute', async () => {
    await Promise.all(Array.from({ length: 5 }, (_, i) => send(relay, `u${i}@minute.test`, `minute ${i}`)))
    await minute.waitForMessages(3, 5000)
    await sleep(1500)
    expect(minute.messages.length).toBe(3)
    const waiting = (await relay.listQueue()).flatMap((m) => m.recipients).filter((r) => r.address.endsWith('@minute.test'))
    expect(waiting).toHaveLength(2)
  })

  it('messagesPerConnection per destination (wildcard rule): 6 messages, 2 per connection = 3 connections', async () => {
    for (let i = 0; i < 6; i++) await send(relay, `u${i}@a.mpc.test`, `mpc ${i}`)
    await mpc.waitForMessages(6, 8000)
    expect(mpc.connections).toBe(3)
  })

  it('a destination answering 421 is slowed while another keeps full speed', async () => {
    throttling = true
    await send(relay, 'first@slow.test', 'slow 0')
    const line = await relay.waitForLog((l) => /throttle: slow\.test asked to slow down/.test(l.msg), 5000)
    expect(line.msg).toMatch(/paused 1500 ms, concurrency 1/)
    const pausedAt = Date.now()
    // When each new connection to slow.test came (polled every 10 ms).
    const connectedAt: number[] = []
    let seen = slow.connections
    const poll = setInterval(() => {
      for (; seen < slow.connections; seen++) connectedAt.push(Date.now())
    }, 10)
    try {
      // While slow.test is paused, 20 messages to fast.test all arrive at full speed.
      const t0 = Date.now()
      await Promise.all([
        ...Array.from({ length: 20 }, (_, i) => send(relay, `u${i}@fast.test`, `fast ${i}`)),
        ...Array.from({ length: 4 }, (_, i) => send(relay, `u${i + 1}@slow.test`, `slow ${i + 1}`)),
      ])
      await fast.waitForMessages(20, 3000)
      expect(Date.now() - t0).toBeLessThan(2500)

      // It recovers: the server takes mail again, the pause ends, everything is delivered.
      throttling = false
      await slow.waitForMessages(5, 12_000)
      await eventually(() => relay.logs.filter((l) => l.msg === 'delivered' && l.event === 'delivered' && /@slow\.test$/.test(String(l.recipient))).length === 5, 3000, 'five deliveries to slow.test logged')
    } finally {
      clearInterval(poll)
    }
    // No connection to slow.test during its pause (1.5 s; 100 ms for polling and timers).
    expect(connectedAt.filter((t) => t < pausedAt + 1400)).toEqual([])
    expect(connectedAt.length).toBeGreaterThan(0)
  })

  it('a host throttle with no slot within hostWait: deferred as "not tried" (the host was never asked), category throttled', async () => {
    const capped = await startReceiver({ host: '127.0.0.8', behaviour: { noStartTls: true, stall: 'data' } })
    const zones = await startDns({ 'cap1.test': { A: ['127.0.0.8'] }, 'cap2.test': { A: ['127.0.0.8'] } })
    const r = await startRelay({ config: { ...baseConfig(capped.port, { hosts: { '127.0.0.8': { concurrency: 1 } }, hostWait: '300ms' }), dns: { servers: [zones.server], timeout: '1s' } } })
    try {
      await send(r, 'u@cap1.test', 'holds the slot')
      await eventually(() => capped.connections === 1 || undefined, 5000, 'the first message at the host')
      await send(r, 'u@cap2.test', 'waits for it')
      const deferred = await r.waitForLog((l) => l.event === 'deferred' && l.recipient === 'u@cap2.test', 10_000)
      expect(deferred.response).toMatch(/^4\.4\.1 Host cap2\.test\[127\.0\.0\.8\]:\d+ not tried: local throttle: no slot for this host within 300 ms/)
      expect(deferred.category).toBe('throttled')
      expect(capped.connections).toBe(1)
    } finally {
      await r.stop()
      await Promise.all([capped.close(), zones.close()])
    }
  })

  it('a host throttle of concurrency 1 holds the connections, not only the transactions: an idle one kept for another of its names is closed first', async () => {
    // A server that refuses a second connection from the same client while one is open (a per-IP cap).
    let open = 0
    let most = 0
    let refused = 0
    let received = 0
    const server = new SMTPServer({
      authOptional: true,
      disableReverseLookup: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      onConnect(_session, cb) {
        open++
        most = Math.max(most, open)
        if (open > 1) {
          refused++
          return cb(Object.assign(new Error('4.7.0 too many connections from your IP'), { responseCode: 421 }))
        }
        cb()
      },
      onClose: () => void open--,
      onData(stream, _session, cb) {
        stream.on('data', () => undefined)
        stream.on('end', () => {
          received++
          cb()
        })
      },
    })
    await new Promise<void>((resolve) => server.listen(fast.port, '127.0.0.9', resolve))
    // Two domains, two MX names, one address.
    const zones = await startDns({ 'k1.test': { MX: [{ exchange: 'mx.k1.test', priority: 10 }] }, 'mx.k1.test': { A: ['127.0.0.9'] }, 'k2.test': { MX: [{ exchange: 'mx.k2.test', priority: 10 }] }, 'mx.k2.test': { A: ['127.0.0.9'] } })
    const r = await startRelay({ config: { ...baseConfig(fast.port, { hosts: { '127.0.0.9': { concurrency: 1 } }, hostWait: '10s' }), dns: { servers: [zones.server], timeout: '1s' } } })
    try {
      for (let i = 0; i < 4; i++) {
        await send(r, `a${i}@k1.test`, `k1 ${i}`)
        await send(r, `b${i}@k2.test`, `k2 ${i}`)
      }
      await eventually(() => received === 8 || undefined, 20_000, 'all 8 messages at the host')
      expect(most).toBe(1)
      expect(refused).toBe(0)
      expect(r.logs.filter((l) => l.event === 'deferred')).toEqual([])
    } finally {
      await r.stop()
      await zones.close()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  })

  it("a 4.2.1 to one RCPT (one mailbox's rate) defers that recipient and pauses nobody else of the domain", async () => {
    const rx = await startReceiver({ host: '127.0.0.10', behaviour: { noStartTls: true, reply: { rcpt: ({ address }) => (address === 'busy@rate.test' ? { code: 450, message: '4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered' } : undefined) } } })
    const zones = await startDns({ 'rate.test': { A: ['127.0.0.10'] } })
    const r = await startRelay({ config: { ...baseConfig(rx.port, throttleConfig()), dns: { servers: [zones.server], timeout: '1s' } } })
    try {
      await send(r, 'busy@rate.test', 'busy mailbox')
      const deferred = await r.waitForLog((l) => l.event === 'deferred' && l.recipient === 'busy@rate.test', 10_000)
      expect(deferred.category).toBe('throttled')
      await send(r, 'other@rate.test', 'another mailbox')
      await rx.waitForMessages(1, 1000)
      expect(r.logs.filter((l) => /asked to slow down/.test(String(l.msg)))).toEqual([])
    } finally {
      await r.stop()
      await Promise.all([rx.close(), zones.close()])
    }
  })

  it('with Redis: two relays hold one per-domain concurrency limit together', async () => {
    const problem = await redisProblem()
    if (problem && skipFor(problem)) return
    const throttle = { domains: { 'shared.test': { concurrency: 2 } }, redis: REDIS_URL, keyPrefix: PREFIX }
    const [r1, r2] = await Promise.all([startRelay({ config: baseConfig(fast.port, throttle) }), startRelay({ config: baseConfig(fast.port, throttle) })])
    try {
      await Promise.all([
        ...Array.from({ length: 3 }, (_, i) => send(r1, `a${i}@shared.test`, `r1 ${i}`)),
        ...Array.from({ length: 3 }, (_, i) => send(r2, `b${i}@shared.test`, `r2 ${i}`)),
      ])
      await eventually(() => shared.connections >= 2, 5000, 'two connections to shared.test')
      await sleep(1200)
      expect(shared.connections).toBe(2)
      shared.behaviour = { noStartTls: true }
      await shared.waitForMessages(6, 15_000)
    } finally {
      await Promise.all([r1.stop(), r2.stop()])
      await cleanRedis()
    }
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
