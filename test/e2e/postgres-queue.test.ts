// The built relay with its queue in PostgreSQL (queue.driver 'postgres', a schema of its own per
// run, dropped afterwards): mail taken over SMTP is delivered to a real receiving server, large
// bodies included, and nothing acknowledged with 250 is lost to kill -9.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import pg from 'pg'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'
import { PG_URL, connectPostgres, skipFor } from '../harness/services.js'

const RUN = `${process.pid}_${crypto.randomBytes(4).toString('hex')}`


let admin: pg.Client | undefined
let pgProblem = ''
let dns: TestDns
const relays: RelayProcess[] = []
const receivers: TestReceiver[] = []
const schemas: string[] = []

beforeAll(async () => {
  const pgc = await connectPostgres()
  if (!pgc.client) {
    pgProblem = pgc.problem
    return
  }
  admin = pgc.client
  dns = await startDns({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.2'] },
  })
})

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
  await Promise.all(receivers.splice(0).map((r) => r.close()))
})

afterAll(async () => {
  await dns?.close()
  if (!admin) return
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => undefined)
  await admin.end().catch(() => undefined)
})

/** True when PostgreSQL is missing and the test should stop here (with a visible notice). */
function noPostgres(): boolean {
  return admin ? false : skipFor(pgProblem)
}

/** The MX of dest.test and a relay on a fresh PostgreSQL schema that delivers to it. */
async function setup(behaviour: Parameters<TestReceiver['setBehaviour']>[0] = {}, extra: Record<string, unknown> = {}) {
  const schema = `relay_pgq_e2e_${schemas.length}_${RUN}`
  schemas.push(schema)
  const mx = await startReceiver({ host: '127.0.0.2', behaviour })
  receivers.push(mx)
  const relay = await startRelay({
    config: {
      queue: { driver: 'postgres', url: PG_URL, schema, poolSize: 4 },
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s', mtaSts: { enabled: false } },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      ...extra,
    },
  })
  relays.push(relay)
  return { mx, relay, schema }
}

/** Queue ids in the relay's PostgreSQL schema. */
async function queued(schema: string): Promise<string[]> {
  const { rows } = await admin!.query<{ id: string }>(`SELECT id FROM ${schema}.messages ORDER BY id`)
  return rows.map((r) => r.id)
}

let counter = 0
function message(subject: string, bodyBytes = 0): { data: string; messageId: string; body: string } {
  const messageId = `<pg-queue-${RUN}-${++counter}@sender.test>`
  // Lines of 76 random characters: a body of about bodyBytes, different per message.
  let body = `Body of ${subject}.\r\n`
  while (body.length < bodyBytes) body += `${crypto.randomBytes(57).toString('base64')}\r\n`
  return { messageId, body, data: `From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: ${subject}\r\nMessage-ID: ${messageId}\r\n\r\n${body}` }
}

const messageIdOf = (m: ReceivedMessage) => /^Message-ID: (.*)$/im.exec(m.raw.toString('latin1'))?.[1]?.trim()
const bodyOf = (m: ReceivedMessage) => {
  const raw = m.raw.toString('latin1')
  return raw.slice(raw.indexOf('\r\n\r\n') + 4)
}

/** How many times each Message-ID arrived. */
function arrivals(r: TestReceiver): Map<string, number> {
  const counts = new Map<string, number>()
  for (const m of r.messages) {
    const id = messageIdOf(m) ?? '(none)'
    counts.set(id, (counts.get(id) ?? 0) + 1)
  }
  return counts
}

/** One submission on a raw connection; resolves with the reply to the final dot as soon as it is read. */
async function submit(port: number, data: string): Promise<string> {
  const { client, greeting } = await connectRaw(port)
  try {
    expect(greeting).toMatch(/^220 /)
    for (const line of ['EHLO client.test', 'MAIL FROM:<alice@sender.test>', 'RCPT TO:<bob@dest.test>']) {
      const reply = await client.command(line)
      if (!reply.startsWith('250')) return reply
    }
    const go = await client.command('DATA')
    if (!go.startsWith('354')) return go
    const reply = client.read(10_000)
    client.send(dotStuff(data))
    return await reply
  } finally {
    client.send('QUIT\r\n')
    setTimeout(() => client.close(), 200).unref()
  }
}

describe('relay with its queue in PostgreSQL', () => {
  it('delivers a small and a 1 MB message byte for byte; the queue and the spool are empty after', async () => {
    if (noPostgres()) return
    const { mx, relay, schema } = await setup()
    const small = message('small')
    const large = message('large', 1024 * 1024)
    for (const m of [small, large]) {
      const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: m.data })
      expect(r.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as \w+$/)
    }
    await mx.waitForMessages(2, 15_000)
    const byId = new Map(mx.messages.map((m) => [messageIdOf(m), m]))
    expect(bodyOf(byId.get(small.messageId)!)).toBe(small.body)
    expect(bodyOf(byId.get(large.messageId)!)).toBe(large.body)
    expect(byId.get(large.messageId)!.to).toEqual(['bob@dest.test'])
    await eventually(async () => (await queued(schema)).length === 0, 10_000, 'an empty queue')
    expect((await admin!.query(`SELECT count(*)::int AS n FROM ${schema}.body_chunks`)).rows[0].n).toBe(0)
    expect(fs.readdirSync(path.join(relay.dataDir, 'spool'))).toEqual([])
    // The sent log and the counters are in PostgreSQL too.
    const stats = await admin!.query(`SELECT sum(count)::int AS n FROM ${schema}.stats WHERE outcome = 'delivered' AND sender_domain = 'sender.test'`)
    expect(stats.rows[0].n).toBe(2)
  })

  it('workers: 2 on PostgreSQL: small messages (delivered by the SMTP workers) and a 400 KB one (its body in the database: by the primary) arrive once, byte for byte', async () => {
    if (noPostgres()) return
    const { mx, relay, schema } = await setup({}, { workers: 2 })
    const sent = [message('w small 1'), message('w large', 400 * 1024), message('w small 2'), message('w small 3')]
    for (const m of sent) expect(await submit(relay.port, m.data)).toMatch(/^250 /)
    await mx.waitForMessages(sent.length, 15_000)
    const byId = new Map(mx.messages.map((m) => [messageIdOf(m), m]))
    for (const m of sent) expect(bodyOf(byId.get(m.messageId)!), m.messageId).toBe(m.body)
    expect([...arrivals(mx).values()]).toEqual(sent.map(() => 1))
    await eventually(async () => (await queued(schema)).length === 0, 10_000, 'an empty queue')
    expect(fs.readdirSync(path.join(relay.dataDir, 'spool'))).toEqual([])
    // Each at its first attempt: none failed for want of its body.
    expect(relay.logs.filter((l) => l.msg === 'deferred' || /delivery attempt failed/.test(String(l.msg)))).toEqual([])
  })

  it('kill -9 right after the last 250: every acknowledged message is delivered after a restart', async () => {
    if (noPostgres()) return
    const N = 16
    // The MX defers every message after receiving it, so attempts run while mail comes in.
    const { mx, relay, schema } = await setup({ reply: { data: () => ({ code: 451, message: '4.3.0 try again later' }) } })
    // Every fourth message is large (its body goes to PostgreSQL in chunks).
    const sent = Array.from({ length: N }, (_, i) => message(`crash ${i}`, i % 4 === 0 ? 400 * 1024 : 0))
    const acknowledged: string[] = []
    const waiting = [...sent]
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let m = waiting.shift(); m; m = waiting.shift()) {
          const reply = await submit(relay.port, m.data)
          if (reply.startsWith('250 ')) acknowledged.push(m.messageId)
        }
      }),
    )
    await relay.kill9()
    expect(acknowledged).toHaveLength(N)
    expect(mx.messages).toHaveLength(0)
    expect(await queued(schema)).toHaveLength(N)

    mx.setBehaviour({})
    await relay.restart()
    await eventually(() => acknowledged.every((id) => arrivals(mx).has(id)), 20_000, `all ${N} acknowledged messages at the MX`).catch((err: Error) => {
      const missing = acknowledged.filter((id) => !arrivals(mx).has(id))
      throw new Error(`${err.message}; ${missing.length} acknowledged with 250 but never delivered: ${missing.join(' ')}`)
    })
    await eventually(async () => (await queued(schema)).length === 0, 10_000, 'an empty queue')
    const bodies = new Map(sent.map((m) => [m.messageId, m.body]))
    for (const m of mx.messages) expect(bodyOf(m)).toBe(bodies.get(messageIdOf(m)!))
    const counts = arrivals(mx)
    const duplicates = [...counts].filter(([, n]) => n > 1)
    if (duplicates.length) console.warn(`kill -9 test: ${duplicates.length} message(s) delivered more than once:`, duplicates)
    expect([...counts.keys()].every((id) => acknowledged.includes(id))).toBe(true)
  })

  it('kill -9 with deliveries in flight: the restarted node takes its leased work back at once', async () => {
    if (noPostgres()) return
    // The MX takes the whole message and then never answers: the relay holds the work leased.
    const { mx, relay, schema } = await setup({ stall: 'data' })
    const sent = [message('in flight 1'), message('in flight 2', 300 * 1024)]
    for (const m of sent) {
      const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: m.data })
      expect(r.lastReply).toMatch(/^250 /)
    }
    await eventually(() => mx.refused.filter((m) => m.outcome === 'stall').length >= 2, 10_000, '2 deliveries stalled at DATA')
    // Leased in PostgreSQL by this node, due only when the lease (15 minutes) ends.
    const leased = await admin!.query<{ leased_by: string; next_attempt: number }>(`SELECT leased_by, next_attempt::float8 AS next_attempt FROM ${schema}.recipients`)
    expect(leased.rows).toHaveLength(2)
    for (const r of leased.rows) {
      expect(r.leased_by).toMatch(/^relay\.test\//)
      expect(r.next_attempt).toBeGreaterThan(Date.now() + 14 * 60_000)
    }

    await relay.kill9()
    mx.setBehaviour({})
    await relay.restart()
    const recovered = await relay.waitForLog((l) => l.msg === 'recovered deliveries the last run left unfinished (a crash, or a stop with deliveries in flight): due again', 5000)
    expect(recovered.recovered).toBe(2)
    await eventually(() => sent.every((m) => arrivals(mx).has(m.messageId)), 10_000, 'the 2 messages at the MX')
    await eventually(async () => (await queued(schema)).length === 0, 10_000, 'an empty queue')
    const byId = new Map(mx.messages.map((m) => [messageIdOf(m), m]))
    for (const m of sent) expect(bodyOf(byId.get(m.messageId)!)).toBe(m.body)
  })
})
