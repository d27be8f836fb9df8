// Redis (shared limits: the rate-limit plugin's store, delivery.throttle) that stops answering
// under a running relay, through a TCP proxy on loopback: sessions are not held beyond the store's
// timeout, limits fail open (logged), mail is taken and delivered, and nothing crashes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'
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
})
