// PostgreSQL taken away under a running relay (through a TCP proxy on loopback, the server itself
// untouched): SMTP answers 4xx, never 250 for what was not stored and never 5xx; the process stays
// up, and once the database is back mail is taken in and delivered again, each message once.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import net from 'node:net'
import pg from 'pg'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff } from '../harness/smtp-client.js'
import { eventually, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'
import { PG_URL, connectPostgres, skipFor } from '../harness/services.js'
import { startTcpProxy, type TcpProxy } from '../harness/tcp-proxy.js'

const RUN = `${process.pid}_${crypto.randomBytes(4).toString('hex')}`
let admin: pg.Client | undefined
let pgProblem = ''
let dns: TestDns
const relays: RelayProcess[] = []
const receivers: TestReceiver[] = []
const proxies: TcpProxy[] = []
const schemas: string[] = []

beforeAll(async () => {
  const pgc = await connectPostgres()
  if (!pgc.client) return void (pgProblem = pgc.problem)
  admin = pgc.client
  dns = await startDns({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { A: ['127.0.0.2'] } })
})

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => (r.exited() ? undefined : r.stop())))
  await Promise.all(receivers.splice(0).map((r) => r.close()))
  await Promise.all(proxies.splice(0).map((p) => p.close()))
})

afterAll(async () => {
  await dns?.close()
  if (!admin) return
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => undefined)
  await admin.end().catch(() => undefined)
})

async function setup(o: { start?: boolean } = {}) {
  const schema = `relay_pg_outage_${schemas.length}_${RUN}`
  schemas.push(schema)
  const u = new URL(PG_URL)
  const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port || 5432) })
  proxies.push(proxy)
  const mx = await startReceiver({ host: '127.0.0.2' })
  receivers.push(mx)
  const config = {
    queue: { driver: 'postgres', url: proxy.via(PG_URL), schema, poolSize: 4 },
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: { port: mx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s', mtaSts: { enabled: false } },
    plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
  }
  return { proxy, mx, schema, config }
}

let counter = 0
function message(subject: string): { data: string; messageId: string } {
  const messageId = `<pg-outage-${RUN}-${++counter}@sender.test>`
  return { messageId, data: `From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: ${subject}\r\nMessage-ID: ${messageId}\r\n\r\nBody of ${subject}\r\n` }
}
const messageIdOf = (m: ReceivedMessage) => /^Message-ID: (.*)$/im.exec(m.raw.toString('latin1'))?.[1]?.trim()
const arrivals = (r: TestReceiver, id: string) => r.messages.filter((m) => messageIdOf(m) === id).length

/**
 * One transaction; the first reply that is not a success, or the reply to the final dot.
 * `beforeDot` runs after the 354, before the message is sent.
 */
async function submit(port: number, data: string, timeoutMs = 60_000, beforeDot?: () => void): Promise<string> {
  const { client, greeting } = await connectRaw(port)
  try {
    if (!greeting.startsWith('220')) return greeting
    for (const line of ['EHLO client.test', 'MAIL FROM:<alice@sender.test>', 'RCPT TO:<bob@dest.test>']) {
      const reply = await client.command(line, timeoutMs)
      if (!reply.startsWith('250')) return reply
    }
    const go = await client.command('DATA', timeoutMs)
    if (!go.startsWith('354')) return go
    beforeDot?.()
    const reply = client.read(timeoutMs)
    client.send(dotStuff(data))
    return await reply
  } finally {
    client.send('QUIT\r\n')
    setTimeout(() => client.close(), 200).unref()
  }
}

describe('PostgreSQL lost under a running relay', () => {
  it('cut: 4xx while it is gone, the process stays up; after it is back new mail is taken and everything acknowledged is delivered once', async () => {
    if (!admin) return void skipFor(pgProblem)
    const { proxy, mx, config } = await setup()
    const token = 'pg-outage-admin-token-0123456789'
    const relay = await startRelay({ config: { ...config, plugins: [...config.plugins, ['admin', { host: '127.0.0.1', port: 0, token }]] } })
    relays.push(relay)
    const adminUrl = (await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listener on'))).url as string
    const before = message('before')
    expect(await submit(relay.port, before.data)).toMatch(/^250 /)
    await eventually(() => arrivals(mx, before.messageId) === 1, 10_000, 'first message delivered')
    expect((await fetch(`${adminUrl}/readyz`)).status).toBe(200)

    await proxy.cut()
    // Not ready while the database is gone, on an idle node too (its heartbeat finds out): a load
    // balancer sends clients elsewhere instead of to a node that answers 451.
    await eventually(async () => (await fetch(`${adminUrl}/readyz`)).status === 503, 15_000, 'not ready')
    expect(await (await fetch(`${adminUrl}/readyz`)).text()).toMatch(/queue database/)
    const during = message('during')
    const t0 = Date.now()
    const reply = await submit(relay.port, during.data)
    console.log(`cut: reply ${JSON.stringify(reply)} after ${Date.now() - t0} ms`)
    expect(reply).toMatch(/^4\d\d /)
    // The log says what failed: the queue database, not only a socket error inside a plugin.
    const failed = await relay.waitForLog((l) => l.msg === 'plugin core:suppression failed in hook rcpt', 5000)
    expect((failed.err as { message?: string }).message).toMatch(/^the suppression lookup in the queue database failed: /)
    expect(relay.exited()).toBe(false)

    await proxy.restore()
    await eventually(async () => (await fetch(`${adminUrl}/readyz`)).status === 200, 15_000, 'ready again')
    const after = message('after')
    await eventually(async () => (await submit(relay.port, after.data)).startsWith('250 '), 30_000, '250 again after PostgreSQL came back')
    await eventually(() => arrivals(mx, after.messageId) === 1, 20_000, 'message after the outage delivered')
    await new Promise((r) => setTimeout(r, 1500))
    expect(arrivals(mx, before.messageId)).toBe(1)
    expect(arrivals(mx, during.messageId)).toBe(0)
    expect(relay.exited()).toBe(false)
    // A connection lost while checked out of the pool is handled, not an uncaught exception.
    expect(relay.logs.filter((l) => l.msg === 'uncaught exception')).toEqual([])
  }, 90_000)

  it('blackhole: a session in DATA is answered 4xx within a bounded time; after it is back deliveries resume', async () => {
    if (!admin) return void skipFor(pgProblem)
    const { proxy, mx, config } = await setup()
    // What bounds the wait is queue.queryTimeout (20 s by default): 5 s here.
    const relay = await startRelay({ config: { ...config, queue: { ...config.queue, queryTimeout: '5s' } } })
    relays.push(relay)
    const before = message('before')
    expect(await submit(relay.port, before.data)).toMatch(/^250 /)
    await eventually(() => arrivals(mx, before.messageId) === 1, 10_000, 'first message delivered')

    const during = message('during')
    let t0 = 0
    const reply = await submit(relay.port, during.data, 45_000, () => {
      proxy.blackhole()
      t0 = Date.now()
    }).catch((e: Error) => `error ${e.message}`)
    console.log(`blackhole: reply ${JSON.stringify(reply)} after ${Date.now() - t0} ms`)
    expect(reply).toMatch(/^4\d\d /)
    expect(Date.now() - t0).toBeLessThan(45_000)
    expect(relay.exited()).toBe(false)

    await proxy.restore()
    const after = message('after')
    await eventually(async () => (await submit(relay.port, after.data)).startsWith('250 '), 30_000, '250 again after PostgreSQL came back')
    await eventually(() => arrivals(mx, after.messageId) === 1, 30_000, 'message after the outage delivered')
  }, 180_000)

  it('mail waiting for a retry when PostgreSQL went away is delivered soon after it is back, not at the next idle scan', async () => {
    if (!admin) return void skipFor(pgProblem)
    const { proxy, mx, config } = await setup()
    // Retries 1.5 s apart: the retry falls due while the database is gone, so that scan fails.
    const relay = await startRelay({ config: { ...config, delivery: { ...config.delivery, retry: { base: '1500ms', factor: 1, max: '1500ms' } } } })
    relays.push(relay)
    mx.behaviour.reply = { rcpt: () => ({ code: 451, message: '4.3.0 try again later' }) }
    const waiting = message('waiting')
    expect(await submit(relay.port, waiting.data)).toMatch(/^250 /)
    await relay.waitForLog((l) => l.event === 'deferred', 10_000)
    await proxy.cut()
    mx.behaviour.reply = {}
    await relay.waitForLog((l) => l.msg === 'queue scan failed', 10_000)
    await new Promise((r) => setTimeout(r, 1000))
    await proxy.restore()
    const back = Date.now()
    // The idle scan comes every 30 s; a failed scan is retried within a few seconds.
    await eventually(() => arrivals(mx, waiting.messageId) === 1, 12_000, 'the waiting message delivered after the outage')
    console.log(`delivered ${Date.now() - back} ms after PostgreSQL came back`)
  }, 90_000)

  it('unreachable at start: the node starts, answers 4xx and is not ready; once PostgreSQL is reachable it takes and delivers mail', async () => {
    if (!admin) return void skipFor(pgProblem)
    const { proxy, mx, config } = await setup()
    await proxy.cut()
    const token = 'pg-outage-admin-token-0123456789'
    const relay = await startRelay({ config: { ...config, plugins: [...config.plugins, ['admin', { host: '127.0.0.1', port: 0, token }]] } })
    relays.push(relay)
    await relay.waitForLog((l) => l.msg === 'queue: PostgreSQL not reachable at start; mail is refused with 451 until it is (retrying)')
    const adminUrl = (await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listener on'))).url as string
    expect((await fetch(`${adminUrl}/readyz`)).status).toBe(503)
    const during = message('during')
    expect(await submit(relay.port, during.data)).toMatch(/^4\d\d /)
    expect(relay.exited()).toBe(false)

    await proxy.restore()
    await relay.waitForLog((l) => l.msg === 'queue: PostgreSQL reachable; taking mail', 15_000)
    await eventually(async () => (await fetch(`${adminUrl}/readyz`)).status === 200, 5000, 'ready')
    const after = message('after')
    expect(await submit(relay.port, after.data)).toMatch(/^250 /)
    await eventually(() => arrivals(mx, after.messageId) === 1, 20_000, 'message after the outage delivered')
    expect(arrivals(mx, during.messageId)).toBe(0)
  }, 90_000)
})

describe('PostgreSQL not reachable at all (a port nothing listens on)', () => {
  it('the admin API answers 503 with a JSON error naming the queue database (not 500); the CLI prints one line', async () => {
    const closed = net.createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const port = (closed.address() as net.AddressInfo).port
    await new Promise((resolve) => closed.close(resolve))
    const token = 'pg-down-admin-token-0123456789abcdef'
    const relay = await startRelay({
      config: {
        queue: { driver: 'postgres', url: `postgres://relay:pg-down-s3cret@127.0.0.1:${port}/relay`, schema: 'relay_pg_down' },
        plugins: [['admin', { host: '127.0.0.1', port: 0, token }]],
      },
    })
    relays.push(relay)
    const adminUrl = (await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listener on'))).url as string
    const api = (method: string, p: string) => fetch(`${adminUrl}${p}`, { method, headers: { Authorization: `Bearer ${token}` } })
    // The first attempt's error, and (after the background retries began) a retry's.
    for (const wait of [0, 1500]) {
      await new Promise((r) => setTimeout(r, wait))
      for (const [method, p] of [['GET', '/api/queue'], ['GET', '/api/queue-summary'], ['GET', '/api/stats'], ['GET', '/api/queue/0000000000000000'], ['GET', '/api/queue/0000000000000000/raw'], ['POST', '/api/queue/flush']] as const) {
        const res = await api(method, p)
        const text = await res.text()
        expect([res.status, `${method} ${p}`]).toEqual([503, `${method} ${p}`])
        expect(res.headers.get('content-type')).toMatch(/^application\/json/)
        const body = JSON.parse(text) as { error: string }
        expect(body.error).toMatch(/^the queue is unavailable: .*PostgreSQL at postgres:\/\/relay:\*+@127\.0\.0\.1:\d+\/relay.*ECONNREFUSED/)
        expect(text).not.toContain('s3cret')
        expect(text).not.toContain('internal error')
      }
    }
    const runs = await Promise.all([['queue', 'list'], ['queue', 'show', '0000000000000000'], ['stats']].map((args) => runCliAsync([...args, '--config', relay.configFile])))
    for (const r of runs) {
      expect(r.code, r.stderr).toBe(1)
      expect(r.stderr).toMatch(/^relay: the queue is unavailable: .*ECONNREFUSED[^\n]*\n$/)
      expect(r.stderr).not.toContain('s3cret')
    }
    expect(relay.exited()).toBe(false)
  }, 90_000)
})
