// The webhook plugin against a real HTTP endpoint on loopback that is down (connection refused,
// then 503) while mail is delivered, with a relay restart in the middle of the outage: once the
// endpoint answers 200, every event arrives exactly once, in order, signed. A second restart
// after kill -9 loses nothing either.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import http from 'node:http'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import Database from 'better-sqlite3'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { outboxFile } from '../../plugins/webhook/index.js'

const SECRET = 'webhook-test-secret-5e2b9c0d'

interface Hit {
  status: number
  body: string
  timestamp: string | undefined
  signature: string | undefined
  contentType: string | undefined
}

interface WireEvent {
  id: string
  type: string
  at: string
  queueId?: string
  recipient?: string
  recipients?: string[]
  [key: string]: unknown
}

let dns: TestDns
let mx: TestReceiver
let relay: RelayProcess
let port: number
let endpoint: http.Server | undefined
let answer = 503
const hits: Hit[] = []

/** A port nothing listens on yet: the endpoint refuses connections until it is started. */
async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const p = (s.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return p
}

async function startEndpoint(): Promise<void> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const h = (name: string) => req.headers[name] as string | undefined
      hits.push({ status: answer, body: Buffer.concat(chunks).toString('utf8'), timestamp: h('x-relay-timestamp'), signature: h('x-relay-signature'), contentType: h('content-type') })
      res.writeHead(answer, { 'Content-Type': 'text/plain' })
      res.end(answer === 200 ? 'ok' : 'unavailable')
    })
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  endpoint = server
}

const outboxRows = () => {
  const db = new Database(path.join(relay.dataDir, outboxFile(`http://127.0.0.1:${port}/hooks/relay`)), { readonly: true })
  try {
    return (db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n
  } finally {
    db.close()
  }
}

const message = (n: string) => `From: alice@sender.test\r\nTo: someone@dest.test\r\nSubject: ${n}\r\nMessage-ID: <${n}@sender.test>\r\n\r\nHello ${n}\r\n`

async function send(to: string, n: string): Promise<string> {
  const r = await sendMail(relay.port, { from: '', to: [to], data: message(n) })
  expect(r.lastReply).toMatch(/^250 /)
  return /queued as (\w+)/.exec(r.lastReply)![1]!
}

const outcome = (to: string) => relay.waitForLog((l) => l.recipient === to && ['delivered', 'deferred', 'bounced'].includes(l.event as string) && l.msg === l.event, 15_000)

beforeAll(async () => {
  port = await freePort()
  mx = await startReceiver({ host: '127.0.0.2' })
  mx.setBehaviour({
    reply: {
      rcpt: ({ address }) => (address === 'gone@two.test' ? { code: 550, message: '5.1.1 no such user' } : address === 'busy@two.test' ? { code: 451, message: '4.3.0 try again later' } : undefined),
    },
  })
  dns = await startDns({
    'one.test': { MX: [{ exchange: 'mx.test', priority: 10 }] },
    'two.test': { MX: [{ exchange: 'mx.test', priority: 10 }] },
    'mx.test': { A: ['127.0.0.2'] },
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s' },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }],
        ['webhook', { url: `http://127.0.0.1:${port}/hooks/relay`, secret: SECRET, batchSize: 3, flushInterval: '100ms', timeout: '2s', retry: { base: '100ms', max: '400ms' } }],
      ],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), mx?.close(), endpoint && new Promise((r) => endpoint!.close(r))])
})

describe('webhook plugin', () => {
  it('keeps every event through an outage and two restarts (SIGTERM, kill -9), then delivers each exactly once, in order, signed', async () => {
    // 1. Endpoint not listening: connection refused.
    const q1 = await send('a@one.test', 'a')
    expect((await outcome('a@one.test')).event).toBe('delivered')
    const q2 = await send('gone@two.test', 'gone')
    expect((await outcome('gone@two.test')).event).toBe('bounced')
    const refused = await relay.waitForLog((l) => l.msg === 'webhook POST failed; will retry' && l.reason === 'ECONNREFUSED', 10_000)
    expect(refused.url).toBe(`http://127.0.0.1:${port}/hooks/relay`)

    // 2. Endpoint up but answering 503: the relay keeps retrying (with backoff), and is restarted.
    await startEndpoint()
    const q3 = await send('busy@two.test', 'busy')
    expect((await outcome('busy@two.test')).event).toBe('deferred')
    await eventually(() => hits.length >= 2, 10_000, 'two POSTs answered 503')
    expect(await relay.stop()).toBe(0)
    expect(outboxRows()).toBe(6) // 3 accepted, delivered, bounced, deferred: nothing was taken
    await relay.restart()
    // The suppression list outlives the restart too: RCPT refused, a `suppressed` event.
    const refusedRcpt = await sendMail(relay.port, { from: '', to: ['gone@two.test'], data: message('again') })
    expect(refusedRcpt.lastReply).toMatch(/^550 5\.1\.1 /)
    const q4 = await send('b@one.test', 'b')
    expect((await outcome('b@one.test')).event).toBe('delivered')
    await eventually(() => outboxRows() === 9, 10_000, '9 events in the outbox')
    let failedBefore = hits.length
    await eventually(() => hits.length >= failedBefore + 1, 10_000, 'a POST after the restart')
    // A relay that dies (kill -9) in the outage: its successor takes over the outbox at once.
    await relay.kill9()
    expect(outboxRows()).toBe(9)
    await relay.restart()
    failedBefore = hits.length
    await eventually(() => hits.length >= failedBefore + 1, 10_000, 'a POST after the second restart')

    // 3. The endpoint recovers.
    answer = 200
    await eventually(() => outboxRows() === 0, 10_000, 'the outbox to empty')
    // Let any stray retry show up before counting.
    await new Promise((r) => setTimeout(r, 500))

    for (const h of hits) {
      expect(h.contentType).toBe('application/json')
      expect(Math.abs(Number(h.timestamp) - Date.now() / 1000)).toBeLessThan(120)
      const expected = 'sha256=' + crypto.createHmac('sha256', SECRET).update(`${h.timestamp}.${h.body}`).digest('hex')
      expect(h.signature).toBe(expected)
    }
    // A 503 batch was sent again later; a 200 batch never.
    const delivered = hits.filter((h) => h.status === 200).flatMap((h) => (JSON.parse(h.body) as { events: WireEvent[] }).events)
    expect(hits.filter((h) => h.status === 200).every((h) => (JSON.parse(h.body) as { events: unknown[] }).events.length <= 3)).toBe(true)
    expect(new Set(delivered.map((e) => e.id)).size).toBe(delivered.length)
    expect(delivered.map((e) => [e.type, e.queueId ?? null, e.recipient ?? e.recipients?.join(',') ?? null])).toEqual([
      ['accepted', q1, 'a@one.test'],
      ['delivered', q1, 'a@one.test'],
      ['accepted', q2, 'gone@two.test'],
      ['bounced', q2, 'gone@two.test'],
      ['accepted', q3, 'busy@two.test'],
      ['deferred', q3, 'busy@two.test'],
      ['suppressed', null, 'gone@two.test'],
      ['accepted', q4, 'b@one.test'],
      ['delivered', q4, 'b@one.test'],
    ])
    const times = delivered.map((e) => Date.parse(e.at))
    expect(times.every((t, i) => !Number.isNaN(t) && (i === 0 || t >= times[i - 1]!))).toBe(true)
    // The event data: what the log line has too.
    const bounced = delivered.find((e) => e.type === 'bounced')!
    expect(bounced).toMatchObject({ category: 'bad-mailbox', domain: 'two.test', sender: '', attempts: 1 })
    expect(bounced.response).toMatch(/^550 5\.1\.1/)
    const suppressed = delivered.find((e) => e.type === 'suppressed')!
    expect(suppressed).toMatchObject({ reason: expect.stringMatching(/no such user/), source: q2, session: { remoteAddress: '127.0.0.1', listener: { role: 'mx' } } })
    // The secret signs; it is never written to the log.
    expect(relay.logs.some((l) => JSON.stringify(l).includes(SECRET))).toBe(false)
  }, 60_000)
})

// Bounds on the outbox: a batch the endpoint refuses for good (4xx but 408/425/429) is dropped after
// maxRejects (3) tries; maxEvents and maxAge drop the oldest events. Each drop: a warn line and a
// count on /metrics. And a url that holds credentials is refused; a query-string key is never logged.
const ADMIN_TOKEN = 'webhook-test-admin-token-0123456789'

class Endpoint {
  answer = 200
  /** When set, decides the answer from the batch's events (else `answer`). */
  answerFor: ((events: WireEvent[]) => number) | undefined
  /** Answer 2xx, then send body bytes without end (an endpoint with a runaway or stuck response). */
  endless = false
  readonly hits: { status: number; path: string; events: WireEvent[] }[] = []
  private server!: http.Server
  url = ''

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const events = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { events: WireEvent[] }).events
        const status = this.answerFor?.(events) ?? this.answer
        this.hits.push({ status, path: req.url ?? '', events })
        if (this.endless) {
          res.writeHead(status, { 'Content-Type': 'text/plain' })
          const chunk = Buffer.alloc(64 * 1024, 'x')
          const pump = () => {
            while (!res.destroyed && res.write(chunk));
            if (!res.destroyed) res.once('drain', pump)
          }
          return pump()
        }
        res.writeHead(status, { 'Content-Type': 'text/plain' }).end(String(status))
      })
    })
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}/hooks`
  }

  count(status: number): number {
    return this.hits.filter((h) => h.status === status).length
  }

  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

describe('webhook outbox bounds', () => {
  const started: RelayProcess[] = []
  const endpoints: Endpoint[] = []

  afterAll(async () => {
    await Promise.all(started.map((r) => r.stop()))
    await Promise.all(endpoints.map((e) => e.close()))
  })

  /** `query`: added to the endpoint's url in the webhook's `url`. */
  async function setup(webhook: Record<string, unknown>, query = ''): Promise<{ r: RelayProcess; ep: Endpoint }> {
    const ep = new Endpoint()
    await ep.start()
    endpoints.push(ep)
    const r = await startRelay({
      config: {
        dns: { servers: [dns.server], timeout: '1s' },
        delivery: { port: mx.port, connectTimeout: '2s' },
        plugins: [
          ['admin', { host: '127.0.0.1', port: 0, token: ADMIN_TOKEN }],
          ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }],
          ['webhook', { url: ep.url + query, secret: SECRET, events: ['accepted'], flushInterval: '50ms', timeout: '2s', retry: { base: '50ms', max: '100ms' }, ...webhook }],
        ],
      },
    })
    started.push(r)
    return { r, ep }
  }

  const rows = (r: RelayProcess) => {
    // The relay's one webhook entry: its url's outbox.
    const db = new Database(path.join(r.dataDir, fs.readdirSync(r.dataDir).find((f) => /^webhook-outbox-\w+\.sqlite$/.test(f))!), { readonly: true })
    try {
      return (db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n
    } finally {
      db.close()
    }
  }

  async function scrape(r: RelayProcess): Promise<string> {
    const { url } = JSON.parse(fs.readFileSync(path.join(r.dataDir, 'admin.json'), 'utf8')) as { url: string }
    return (await fetch(url + '/metrics', { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } })).text()
  }

  async function metric(r: RelayProcess, name: string): Promise<number | undefined> {
    const text = await scrape(r)
    const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
    return m ? Number(m[1]) : undefined
  }

  async function accept(r: RelayProcess, n: string): Promise<string> {
    const res = await sendMail(r.port, { from: '', to: [`${n}@one.test`], data: message(n) })
    expect(res.lastReply).toMatch(/^250 /)
    return /queued as (\w+)/.exec(res.lastReply)![1]!
  }

  it('check-config refuses a url with a user name and password, naming the key and `secret`, without echoing it', () => {
    const dir = tempDir()
    const file = path.join(dir, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify({ dataDir: path.join(dir, 'data'), plugins: [['webhook', { url: 'http://user:Pw-s3cret@127.0.0.1:6591/hook?key=qsecret', secret: SECRET }]] }))
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(webhook\) options\.url: must not hold a user name or password .*`secret`/m)
    expect(r.stdout + r.stderr).not.toMatch(/Pw-s3cret|qsecret/)
  })

  it('a batch refused for good (404) is dropped after 3 tries (warn, counted); 429 is retried; a query-string key is never logged', async () => {
    const { r: r2, ep } = await setup({}, '?key=qsecret-hook-71')
    ep.answer = 404
    const q1 = await accept(r2, 'refused')
    const drop = await r2.waitForLog((l) => /endpoint refused a batch 3 times/.test(l.msg as string), 10_000)
    expect(drop).toMatchObject({ level: 40, status: 404, dropped: 1, url: ep.url })
    expect(ep.count(404)).toBe(3)
    expect(ep.hits[0]!.path).toBe('/hooks?key=qsecret-hook-71')
    expect(ep.hits[0]!.events.map((e) => e.queueId)).toEqual([q1])
    await eventually(() => rows(r2) === 0, 5000, 'the refused batch gone')
    expect(await metric(r2, 'relay_plugin_webhook_dropped_events_rejected_total')).toBe(1)

    // 429 (and 5xx) is not for good: retried past 3 tries, kept.
    ep.answer = 429
    const q2 = await accept(r2, 'later')
    await eventually(() => ep.count(429) >= 6, 10_000, 'six 429s')
    expect(rows(r2)).toBe(1)
    ep.answer = 200
    await eventually(() => rows(r2) === 0, 10_000, 'the outbox to empty')
    expect(ep.hits.filter((h) => h.status === 200).flatMap((h) => h.events.map((e) => e.queueId))).toEqual([q2])
    expect(await metric(r2, 'relay_plugin_webhook_dropped_events_rejected_total')).toBe(1)
    const failed = r2.logs.filter((l) => l.msg === 'webhook POST failed; will retry')
    expect(failed.length).toBeGreaterThanOrEqual(6)
    for (const l of failed) expect(l.url).toBe(ep.url)
    expect(JSON.stringify(r2.logs)).not.toContain('qsecret-hook-71')
  }, 40_000)

  it('a 2xx whose body never ends counts as taken at once: each batch is POSTed once, not re-sent after the timeout, and the body is not read into memory', async () => {
    const { r: r2, ep } = await setup({ timeout: '1s' })
    ep.endless = true
    const q1 = await accept(r2, 'endless-1')
    await eventually(() => rows(r2) === 0, 5000, 'the batch taken off the outbox')
    const q2 = await accept(r2, 'endless-2')
    await eventually(() => rows(r2) === 0 && ep.hits.length >= 2, 5000, 'the second batch taken')
    await new Promise((resolve) => setTimeout(resolve, 1500)) // past the 1 s timeout: nothing is sent again
    expect(ep.hits.map((h) => h.events.map((e) => e.queueId))).toEqual([[q1], [q2]])
    expect(r2.logs.some((l) => l.msg === 'webhook POST failed; will retry')).toBe(false)
  })

  it('a batch too large for the endpoint (413) is halved until it is taken: no event dropped, order kept, and the size grows back', async () => {
    const { r, ep } = await setup({})
    ep.answer = 503
    const ids: string[] = []
    for (const n of ['b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7']) ids.push(await accept(r, n))
    await eventually(() => ep.count(503) > 0 && rows(r) === 7, 10_000, 'seven events waiting')
    // The endpoint takes at most 2 events a request (a body limit).
    ep.answerFor = (events) => (events.length > 2 ? 413 : 200)
    await eventually(() => rows(r) === 0, 10_000, 'the outbox to empty')
    const taken = ep.hits.filter((h) => h.status === 200)
    expect(taken.flatMap((h) => h.events.map((e) => e.queueId))).toEqual(ids)
    expect(taken.every((h) => h.events.length <= 2)).toBe(true)
    expect(ep.count(413)).toBeGreaterThan(0)
    // The relay writes info lines within a tenth of a second: waited for, not looked up at once.
    await r.waitForLog((l) => /refused a batch of \d+ events as too large \(HTTP 413\); sending \d+ at a time/.test(l.msg as string), 5000)
    expect(r.logs.some((l) => /dropped unsent/.test(l.msg as string))).toBe(false)
    expect(await metric(r, 'relay_plugin_webhook_dropped_events_rejected_total')).toBe(0)
    // A single event the endpoint will not take even alone is still dropped after maxRejects.
    ep.answerFor = () => 413
    await accept(r, 'huge')
    await r.waitForLog((l) => /endpoint refused a batch 3 times \(HTTP 413\)/.test(l.msg as string), 10_000)
    expect(await metric(r, 'relay_plugin_webhook_dropped_events_rejected_total')).toBe(1)
  }, 40_000)

  it('maxEvents: beyond it the oldest events are dropped (warn, counted); the newest are sent once the endpoint answers', async () => {
    const { r, ep } = await setup({ maxEvents: 2 })
    ep.answer = 500
    const ids: string[] = []
    for (const n of ['m1', 'm2', 'm3', 'm4', 'm5']) ids.push(await accept(r, n))
    await eventually(() => rows(r) === 2, 10_000, 'the outbox trimmed to 2')
    await eventually(() => r.logs.filter((l) => /over maxEvents/.test(l.msg as string)).reduce((n, l) => n + (l.dropped as number), 0) === 3, 5000, 'drop lines for 3 events')
    const line = r.logs.find((l) => /over maxEvents/.test(l.msg as string))!
    expect(line).toMatchObject({ level: 40, reason: 'overflow', maxEvents: 2 })
    expect(await metric(r, 'relay_plugin_webhook_dropped_events_overflow_total')).toBe(3)
    // A count that only grows is a Prometheus counter (rate() and increase() work on it).
    expect(await scrape(r)).toMatch(/^# TYPE relay_plugin_webhook_dropped_events_overflow_total counter$/m)
    ep.answer = 200
    await eventually(() => rows(r) === 0, 10_000, 'the outbox to empty')
    expect(ep.hits.filter((h) => h.status === 200).flatMap((h) => h.events.map((e) => e.queueId))).toEqual(ids.slice(3))
  }, 40_000)

  it('maxAge: events older than it are dropped unsent (warn, counted)', async () => {
    // 3 s: the POSTs refused meanwhile (503, retried every 100 ms) happen before it also on a loaded machine.
    const { r, ep } = await setup({ maxAge: '3s' })
    ep.answer = 503
    await accept(r, 'old')
    const line = await r.waitForLog((l) => /older than maxAge/.test(l.msg as string), 15_000)
    expect(line).toMatchObject({ level: 40, reason: 'expired', dropped: 1, maxAge: 3000 })
    expect(rows(r)).toBe(0)
    expect(await metric(r, 'relay_plugin_webhook_dropped_events_expired_total')).toBe(1)
    expect(ep.count(503)).toBeGreaterThan(0)
  }, 40_000)
})
