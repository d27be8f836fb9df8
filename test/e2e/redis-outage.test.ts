// Redis (shared limits: the rate-limit plugin's store, delivery.throttle) that stops answering
// under a running relay, through a TCP proxy on loopback: sessions are not held beyond the store's
// timeout, limits fail open (logged), mail is taken and delivered, and nothing crashes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'
import { connectRaw } from '../harness/smtp-client.js'
import { Redis } from 'ioredis'
import { REDIS_URL, redisProblem, skipFor } from '../harness/services.js'
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy.js'

const RUN = `${process.pid}-${crypto.randomBytes(3).toString('hex')}`
let problem: string | undefined
let dns: TestDns
let mx: TestReceiver
let proxy: TcpProxy
let relay: RelayProcess

beforeAll(async () => {
  problem = await redisProblem()
  if (problem) return
  dns = await startDns({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { A: ['127.0.0.2'] } })
  mx = await startReceiver({ host: '127.0.0.2' })
  const u = new URL(REDIS_URL)
  proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port || 6379) })
  const redis = proxy.via(REDIS_URL)
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, mtaSts: { enabled: false }, throttle: { redis, keyPrefix: `relay-thr-${RUN}:`, domains: { 'dest.test': { concurrency: 2, perMinute: 100 } } } },
      plugins: [
        ['rate-limit', { store: { redis, timeout: '1s' }, keyPrefix: `relay-rl-${RUN}`, perIp: { concurrent: 5, connectionsPerMinute: 100 }, perSenderDomain: { messagesPerHour: 100 } }],
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
      ],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([proxy?.close(), mx?.close(), dns?.close()])
})

const messageIdOf = (m: ReceivedMessage) => /^Message-ID: (.*)$/im.exec(m.raw.toString('latin1'))?.[1]?.trim()
let n = 0
async function send(): Promise<{ reply: string; ms: number; id: string }> {
  const id = `<redis-outage-${RUN}-${++n}@sender.test>`
  const t0 = Date.now()
  const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: `From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: ${n}\r\nMessage-ID: ${id}\r\n\r\nhi\r\n`, timeoutMs: 30_000 })
  return { reply: r.lastReply, ms: Date.now() - t0, id }
}

describe('Redis that stops answering', () => {
  it('hung, then caught up: what Redis ran late is undone; no connection or destination slot stays taken, the limits let clients and mail through', async () => {
    if (problem) return void skipFor(problem)
    // Both of the relay's Redis clients connected and in use first.
    const first = await send()
    await eventually(() => mx.messages.some((m) => messageIdOf(m) === first.id), 10_000, 'first delivered')
    proxy.hold()
    const during = [await send(), await send()]
    for (const d of during) expect(d.reply).toMatch(/^250 /)
    await eventually(() => during.every((d) => mx.messages.some((m) => messageIdOf(m) === d.id)), 30_000, 'delivered while Redis hangs')
    // Redis runs what it held back: the slots those timed-out commands took, and the relay's undo after them.
    await proxy.restore()
    const probe = new Redis(REDIS_URL)
    const taken = async () => {
      const keys = [...(await probe.keys(`relay-thr-${RUN}:*:conc`)), ...(await probe.keys(`relay-rl-${RUN}:concurrent:slots:*`))]
      let n = 0
      for (const k of keys) n += await probe.zcard(k)
      return n
    }
    try {
      await eventually(async () => (await taken()) === 0, 10_000, 'no slot left taken in Redis')
      // perIp.concurrent 5: five sessions at once from one address are all let in.
      const five = await Promise.all(Array.from({ length: 5 }, () => connectRaw(relay.port)))
      for (const { greeting } of five) expect(greeting).toMatch(/^220 /)
      for (const { client } of five) client.close()
      await eventually(async () => (await taken()) === 0, 10_000, 'the five slots given back')
    } finally {
      await probe.quit()
    }
    // dest.test (concurrency 2, shared): new mail is delivered at once, not after delivery.lease.
    const after = [await send(), await send()]
    for (const d of after) expect(d.reply).toMatch(/^250 /)
    await eventually(() => after.every((d) => mx.messages.some((m) => messageIdOf(m) === d.id)), 15_000, 'delivered after Redis caught up')
  }, 120_000)

  it('blackholed: sessions finish within the store timeout, limits fail open (logged), mail is delivered; after it is back all is well', async () => {
    if (problem) return void skipFor(problem)
    const first = await send()
    expect(first.reply).toMatch(/^250 /)
    await eventually(() => mx.messages.some((m) => messageIdOf(m) === first.id), 10_000, 'first delivered')

    proxy.blackhole()
    const during = [await send(), await send()]
    console.log('blackhole:', during.map((d) => `${d.reply.slice(0, 40)} ${d.ms}ms`))
    for (const d of during) {
      expect(d.reply).toMatch(/^250 /)
      expect(d.ms).toBeLessThan(10_000)
    }
    await eventually(() => during.every((d) => mx.messages.some((m) => messageIdOf(m) === d.id)), 30_000, 'delivered while Redis hangs')
    expect(relay.exited()).toBe(false)

    await proxy.restore()
    const after = await send()
    console.log('after:', after.reply, after.ms)
    expect(after.reply).toMatch(/^250 /)
    await eventually(() => mx.messages.some((m) => messageIdOf(m) === after.id), 30_000, 'delivered after Redis came back')

    const ids = mx.messages.map(messageIdOf)
    expect(new Set(ids).size).toBe(ids.length)
  }, 120_000)

  it('connections whose path is lost for good (a firewall or NAT forgot them; Redis and new connections are fine) are replaced: sessions are fast and limits shared again within seconds', async () => {
    if (problem) return void skipFor(problem)
    const probe = new Redis(REDIS_URL)
    try {
      // Values only (a TTL changes by itself): a counter's value, a set's members.
      const value = async (k: string) => {
        const type = await probe.type(k)
        return type === 'string' ? probe.get(k) : type === 'zset' ? probe.zrange(k, 0, -1) : type === 'hash' ? probe.hgetall(k) : type
      }
      // The rate limits' counters in Redis: a session that counts there changes them.
      const counters = async () => {
        const keys = (await probe.keys(`relay-rl-${RUN}*`)).sort()
        return JSON.stringify(await Promise.all(keys.map(async (k) => [k, await value(k)])))
      }
      const counted = async () => {
        const before = await counters()
        const s = await send()
        return { ...s, shared: (await counters()) !== before }
      }
      // Shared again after the earlier tests' outages (a failure makes a node decide alone for 10 s).
      await eventually(async () => { const s = await counted(); return s.shared && s.ms < 500 }, 20_000, 'limits shared before the test')
      proxy.strandOpen() // every open connection passes nothing from now on
      const made = proxy.connections()
      const t0 = Date.now()
      // Commands on the stranded connections time out (1 s); each client drops its connection and makes a new one.
      await eventually(async () => { const s = await counted(); return s.shared && s.ms < 500 }, 30_000, 'limits shared and sessions fast again')
      console.log(`stranded: shared and fast again after ${Date.now() - t0} ms; new connections ${proxy.connections() - made}`)
      expect(proxy.connections()).toBeGreaterThan(made)
      for (let i = 0; i < 3; i++) {
        const s = await counted()
        expect(s.ms).toBeLessThan(500)
        expect(s.shared).toBe(true)
      }
      // The shared destination throttle's client too (it makes its connection anew at its second
      // timeout in a row, after the 10 s it decides alone): deliveries count in Redis again.
      const throttle = async () => JSON.stringify(await Promise.all((await probe.keys(`relay-thr-${RUN}*`)).sort().map(async (k) => [k, await value(k)])))
      const t1 = Date.now()
      await eventually(async () => {
        const before = await throttle()
        const s = await send()
        // Up to the slot TTL (30 s): a slot whose release was sent on the lost connection holds until then.
        await eventually(() => mx.messages.some((m) => messageIdOf(m) === s.id), 60_000, 'delivered')
        return (await throttle()) !== before
      }, 120_000, 'the shared throttle counting in Redis again')
      console.log(`stranded: the throttle shared again after ${Date.now() - t1} ms more`)
    } finally {
      await probe.quit()
    }
  }, 240_000)
})
