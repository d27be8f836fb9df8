// One failure DSN per message, as Postfix sends one bounce per message and delivery pass: a trusted
// client's message to recipients at several domains whose next hops all answer 5xx gets one DSN
// listing every failed recipient (each with its own Status, Diagnostic-Code and Remote-MTA), not one
// per domain; a recipient deferred to a later attempt does not hold the DSN back. On the SQLite and
// the PostgreSQL queue, and across kill -9 (what is owed is in the queue with the results).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import path from 'node:path'
import Database from 'better-sqlite3'
import pg from 'pg'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'
import { dsnBlocks, queueUntil, submit as submitVia } from '../harness/dsn.js'
import { PG_URL, connectPostgres, skipFor } from '../harness/services.js'

const RUN = `${process.pid}_${crypto.randomBytes(4).toString('hex')}`
/** What each dead domain's MX answers to every RCPT. */
const DEAD: Record<string, { code: number; message: string }> = {
  'dead1.test': { code: 550, message: '5.1.1 No such user here (dead1)' },
  'dead2.test': { code: 550, message: '5.7.1 Refused by policy (dead2)' },
  'dead3.test': { code: 550, message: '5.2.1 Mailbox disabled (dead3)' },
}

let dns: TestDns
let PORT = 0
const dead: TestReceiver[] = [] // 127.0.36.11-13: dead1..3.test, 550 to every recipient
let deferRx: TestReceiver // 127.0.36.14: defer.test, 450 to every recipient
let stallRx: TestReceiver // 127.0.36.15: stall.test, never answers RCPT (until told otherwise)
let senderRx: TestReceiver // 127.0.36.16: sender.test, where the DSNs go
const relays: RelayProcess[] = []
let admin: pg.Client | undefined
let pgProblem = ''
const schemas: string[] = []

beforeAll(async () => {
  const names = Object.keys(DEAD)
  for (const [i, name] of names.entries()) {
    const rx = await startReceiver({ host: `127.0.36.${11 + i}`, port: PORT, behaviour: { noStartTls: true, reply: { rcpt: () => DEAD[name] } } })
    PORT = rx.port
    dead.push(rx)
  }
  deferRx = await startReceiver({ host: '127.0.36.14', port: PORT, behaviour: { noStartTls: true, reply: { rcpt: () => ({ code: 450, message: '4.2.0 Mailbox busy, try later' }) } } })
  stallRx = await startReceiver({ host: '127.0.36.15', port: PORT, behaviour: { noStartTls: true, stall: 'rcpt' } })
  senderRx = await startReceiver({ host: '127.0.36.16', port: PORT, behaviour: { noStartTls: true } })
  dns = await startDns({
    'dead1.test': { A: ['127.0.36.11'] },
    'dead2.test': { A: ['127.0.36.12'] },
    'dead3.test': { A: ['127.0.36.13'] },
    'defer.test': { A: ['127.0.36.14'] },
    'stall.test': { A: ['127.0.36.15'] },
    'sender.test': { A: ['127.0.36.16'] },
  })
  const pgc = await connectPostgres()
  if (pgc.client) admin = pgc.client
  else pgProblem = pgc.problem
})

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
})

afterAll(async () => {
  await Promise.all([dns, ...dead, deferRx, stallRx, senderRx].map((x) => x?.close()))
  if (!admin) return
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => undefined)
  await admin.end().catch(() => undefined)
})

/** A relay whose clients on loopback are trusted (smtp.trustedNetworks, relay-acl), retrying after an hour. */
async function setup(queue?: 'postgres'): Promise<RelayProcess> {
  let extra = {}
  if (queue === 'postgres') {
    const schema = `relay_dsn_per_message_${schemas.length}_${RUN}`
    schemas.push(schema)
    extra = { queue: { driver: 'postgres', url: PG_URL, schema, poolSize: 4 } }
  }
  const relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.0/8'] },
      delivery: { port: PORT, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s', mtaSts: { enabled: false } },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      ...extra,
    },
  })
  relays.push(relay)
  return relay
}

const submit = (relay: RelayProcess, from: string, to: string[]) => submitVia(relay, from, to, 'one message, many domains')

const text = (m: ReceivedMessage) => m.raw.toString('latin1')
const dsnsTo = (sender: string) => senderRx.messages.filter((m) => m.from === '' && m.to.includes(sender))
const blocks = dsnBlocks

async function threeDomainsFail(relay: RelayProcess, sender: string): Promise<void> {
  const to = ['a@dead1.test', 'b@dead2.test', 'c@dead3.test']
  await submit(relay, sender, to)
  await eventually(() => dsnsTo(sender)[0], 15_000, 'the bounce')
  // Every DSN is queued before its message leaves the queue: once it is empty, all of them arrived.
  await queueUntil(relay, (q) => q.length === 0, 'an empty queue')
  const dsns = dsnsTo(sender)
  expect(dsns.map((m) => [...blocks(m).keys()])).toEqual([expect.arrayContaining(to)])
  const dsn = blocks(dsns[0]!)
  expect(dsn.size).toBe(3)
  for (const [i, [domain, reply]] of Object.entries(DEAD).entries()) {
    const block = dsn.get(to[i]!)!
    expect(block).toContain('Action: failed')
    expect(block).toContain(`Status: ${reply.message.slice(0, 5)}`)
    expect(block).toContain(`Remote-MTA: dns; ${domain}`)
    expect(block).toContain(`Diagnostic-Code: smtp; ${reply.code} ${reply.message}`)
  }
  expect(text(dsns[0]!)).toContain('Subject: Undelivered Mail Returned to Sender')
}

async function deferredDoesNotHoldBack(relay: RelayProcess, sender: string): Promise<void> {
  const id = await submit(relay, sender, ['a@dead1.test', 'd@defer.test'])
  const dsn = await eventually(() => dsnsTo(sender)[0], 15_000, 'the bounce for the 550 recipient')
  expect([...blocks(dsn).keys()]).toEqual(['a@dead1.test'])
  expect(text(dsn)).not.toContain('d@defer.test>:')
  // The deferred recipient is still queued, to be retried in an hour.
  const entry = (await relay.listQueue()).find((e) => e.id === id)
  expect(entry?.recipients.map((r) => [r.address, r.state])).toEqual(expect.arrayContaining([['d@defer.test', 'deferred']]))
  expect(entry?.recipients.find((r) => r.address === 'a@dead1.test')?.state ?? 'gone').toMatch(/bounced|gone/)
  expect(dsnsTo(sender)).toHaveLength(1)
}

describe('one DSN per message (SQLite queue)', () => {
  it('three domains answering 550: exactly one DSN, with three Final-Recipient blocks, each its own Status, Diagnostic-Code and Remote-MTA', async () => {
    await threeDomainsFail(await setup(), 'three@sender.test')
  })

  it('one domain 550, one 450: the DSN for the 550 recipient goes at once, not held back by the deferred one', async () => {
    await deferredDoesNotHoldBack(await setup(), 'partial@sender.test')
  })

  it('kill -9 while another job of the message is in flight: after the restart one DSN lists both failures', async () => {
    const relay = await setup()
    const sender = 'crash@sender.test'
    stallRx.setBehaviour({ noStartTls: true, stall: 'rcpt' })
    const id = await submit(relay, sender, ['a@dead1.test', 's@stall.test'])
    await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'a@dead1.test' && l.queueId === id, 15_000)
    await eventually(() => stallRx.attempts.rcpt >= 1, 15_000, 'the attempt at stall.test waiting for its RCPT reply')
    await relay.kill9()
    stallRx.setBehaviour({ noStartTls: true, reply: { rcpt: () => ({ code: 550, message: '5.1.1 Gone (stall)' }) } })
    await relay.restart()
    await eventually(() => dsnsTo(sender)[0], 15_000, 'the bounce after the restart')
    await queueUntil(relay, (q) => q.length === 0, 'an empty queue')
    const dsns = dsnsTo(sender)
    expect(dsns).toHaveLength(1)
    expect([...blocks(dsns[0]!).keys()].sort()).toEqual(['a@dead1.test', 's@stall.test'])
    expect(blocks(dsns[0]!).get('s@stall.test')).toContain('Diagnostic-Code: smtp; 550 5.1.1 Gone (stall)')
  })

  it('a DSN still owed when the relay died (its results written, the DSN not yet queued) goes at the next start', async () => {
    const relay = await setup()
    const sender = 'sweep@sender.test'
    const id = await submit(relay, sender, ['a@dead1.test', 'd@defer.test'])
    await eventually(() => dsnsTo(sender)[0], 15_000, 'the first bounce')
    await queueUntil(relay, (q) => q.some((e) => e.id === id && e.recipients.some((r) => r.state === 'deferred')), 'd@defer.test deferred')
    expect(await relay.stop()).toBe(0)
    // What a crash right after the complete that recorded the 550 leaves: the result, and the DSN owed for it.
    const db = new Database(path.join(relay.dataDir, 'queue.sqlite'))
    try {
      const marked = db.prepare(`UPDATE recipients SET dsn = '{"action":"failed","status":"5.1.1","remote":true}' WHERE message_id = ? AND address = 'a@dead1.test' AND state = 'bounced'`).run(id)
      expect(marked.changes).toBe(1)
    } finally {
      db.close()
    }
    await relay.restart()
    const again = await eventually(() => dsnsTo(sender)[1], 15_000, 'the owed bounce after the restart')
    expect([...blocks(again).keys()]).toEqual(['a@dead1.test'])
    expect(blocks(again).get('a@dead1.test')).toContain('Diagnostic-Code: smtp; 550 5.1.1 No such user here (dead1)')
    // Sent once: the mark is gone, and d@defer.test waits for its retry.
    await queueUntil(relay, (q) => q.length === 1, 'only the deferred message left')
    expect((await relay.listQueue())[0]!.id).toBe(id)
    expect(dsnsTo(sender)).toHaveLength(2)
  })
})

describe('one DSN per message (PostgreSQL queue)', () => {
  it('three domains answering 550: exactly one DSN with three Final-Recipient blocks', async () => {
    if (!admin && skipFor(pgProblem)) return
    await threeDomainsFail(await setup('postgres'), 'pg-three@sender.test')
  })

  it('one domain 550, one 450: the DSN for the 550 recipient goes at once', async () => {
    if (!admin && skipFor(pgProblem)) return
    await deferredDoesNotHoldBack(await setup('postgres'), 'pg-partial@sender.test')
  })
})
