// `relay queue bounce` and the one DSN per message (core/delivery/dsn.ts): the operator's bounce
// takes recipients owed a DSN by earlier jobs into its one DSN (each with its own status and
// diagnostic), leaves recipients in flight to their delivery (and says so), and its write is
// conditional: a delivery that claimed the recipients after the bounce looked at them wins, and
// the sender gets no "bounced by the administrator" for mail that was delivered. SQLite and
// PostgreSQL queues, through the admin API with the real CLI.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import path from 'node:path'
import Database from 'better-sqlite3'
import pg from 'pg'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { eventually, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'
import { dsnBlocks, submit as submitVia } from '../harness/dsn.js'
import { adminQueueUntil as queueUntil } from '../harness/admin-queue.js'
import { PG_URL, connectPostgres, skipFor } from '../harness/services.js'

const RUN = `${process.pid}_${crypto.randomBytes(4).toString('hex')}`
let dns: TestDns
let PORT = 0
let deadRx: TestReceiver // 127.0.38.11: dead.test, 550 to every recipient
let stallRx: TestReceiver // 127.0.38.12: stall.test, never answers RCPT (until told otherwise)
let parkRx: TestReceiver // 127.0.38.13: park.test, 451 to the addresses in `parked`
let senderRx: TestReceiver // 127.0.38.14: sender.test, where the DSNs go
const parked = new Set<string>()
const relays: RelayProcess[] = []
let admin: pg.Client | undefined
let pgProblem = ''
const schemas: string[] = []

beforeAll(async () => {
  deadRx = await startReceiver({ host: '127.0.38.11', port: PORT, behaviour: { noStartTls: true, reply: { rcpt: () => ({ code: 550, message: '5.1.1 No such user here (dead)' }) } } })
  PORT = deadRx.port
  stallRx = await startReceiver({ host: '127.0.38.12', port: PORT, behaviour: { noStartTls: true, stall: 'rcpt' } })
  const park = { noStartTls: true, reply: { rcpt: ({ address }: { address?: string }) => (parked.has(address!) ? { code: 451, message: '4.2.0 parked, try later' } : undefined) } }
  parkRx = await startReceiver({ host: '127.0.38.13', port: PORT, behaviour: park })
  senderRx = await startReceiver({ host: '127.0.38.14', port: PORT, behaviour: { noStartTls: true } })
  dns = await startDns({
    'dead.test': { A: ['127.0.38.11'] },
    'stall.test': { A: ['127.0.38.12'] },
    'park.test': { A: ['127.0.38.13'] },
    'sender.test': { A: ['127.0.38.14'] },
  })
  const pgc = await connectPostgres()
  if (pgc.client) admin = pgc.client
  else pgProblem = pgc.problem
})

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
})

afterAll(async () => {
  await Promise.all([dns, deadRx, stallRx, parkRx, senderRx].map((x) => x?.close()))
  if (!admin) return
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => undefined)
  await admin.end().catch(() => undefined)
})

/** A relay trusting loopback, retrying after an hour, one delivery per domain at a time, with the admin API. */
async function setup(queue?: 'postgres'): Promise<{ relay: RelayProcess; schema?: string }> {
  let extra = {}
  let schema: string | undefined
  if (queue === 'postgres') {
    schema = `relay_dsn_operator_${schemas.length}_${RUN}`
    schemas.push(schema)
    extra = { queue: { driver: 'postgres', url: PG_URL, schema, poolSize: 4 } }
  }
  const relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.0/8'] },
      delivery: { port: PORT, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s', mtaSts: { enabled: false }, delayWarning: false, concurrency: { global: 10, perDomain: 1 } },
      plugins: [
        ['admin', { host: '127.0.0.1', port: 0, token: 'dsn-operator-token-0123456789abcdef' }],
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
      ],
      ...extra,
    },
  })
  relays.push(relay)
  return { relay, schema }
}

const submit = (relay: RelayProcess, from: string, to: string[]) => submitVia(relay, from, to, 'operator bounce')

const cli = (relay: RelayProcess, ...args: string[]) => runCliAsync([...args, '--config', relay.configFile])
const text = (m: ReceivedMessage) => m.raw.toString('latin1')
const dsnsTo = (sender: string) => senderRx.messages.filter((m) => m.from === '' && m.to.includes(sender))
const blocks = dsnBlocks

/**
 * A message owes a DSN for a@dead.test (550) and its s2@stall.test is due but waits for a delivery
 * slot (stall.test's one is taken by another message): the operator bounces it. One DSN lists both.
 */
async function owedJoinsOperatorBounce(relay: RelayProcess, sender: string): Promise<void> {
  stallRx.setBehaviour({ noStartTls: true, stall: 'rcpt' })
  const rcptsBefore = stallRx.attempts.rcpt
  await submit(relay, 'other@sender.test', ['s1@stall.test'])
  await eventually(() => stallRx.attempts.rcpt > rcptsBefore, 15_000, 'the delivery to stall.test waiting for its RCPT reply')
  const id = await submit(relay, sender, ['a@dead.test', 's2@stall.test'])
  await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'a@dead.test' && l.queueId === id, 15_000)
  // The 550 is recorded; its DSN waits for s2@stall.test, which is due but not taken. (What the
  // operator reads of it, side by side: nothing changes the queue meanwhile.)
  const [shownJson, listed, summary, summaryJson, shownTextOut] = await Promise.all([
    cli(relay, 'queue', 'show', id, '--json'),
    cli(relay, 'queue', 'list'),
    cli(relay, 'queue', 'summary'),
    cli(relay, 'queue', 'summary', '--json'),
    cli(relay, 'queue', 'show', id),
  ])
  const shown = JSON.parse(shownJson.stdout) as { recipients: { address: string; state: string; leased: boolean }[] }
  expect(shown.recipients.map((r) => [r.address, r.state, r.leased])).toEqual([['a@dead.test', 'bounced', false], ['s2@stall.test', 'queued', false]])
  expect(dsnsTo(sender)).toHaveLength(0)
  // The operator is told why a bounced recipient is still listed: its DSN is owed, not sent yet.
  expect(shown.recipients.map((r) => (r as { dsnOwed?: boolean }).dsnOwed)).toEqual([true, undefined])
  expect(listed.stdout).toMatch(/^ {4}bounced +<a@dead\.test> .*last: 550 5\.1\.1 No such user here \(dead\).*  DSN owed \(not sent yet\)$/m)
  expect(listed.stdout).toMatch(/^ {4}queued +<s2@stall\.test> +attempts 0 +next \S+$/m)
  expect(summary.stdout).toMatch(/^2 messages; recipients: 2 queued, 0 deferred, 0 held; 1 kept for a DSN to the sender not sent yet\n/)
  expect(JSON.parse(summaryJson.stdout)).toMatchObject({ messages: 2, owingDsn: 1 })
  const shownText = shownTextOut.stdout
  expect(shownText).toContain('\nDSN owed:    a@dead.test: the report to the sender is not sent yet; it goes once nothing of the message is in flight or due')

  const b = await cli(relay, 'queue', 'bounce', id)
  expect(b.code, b.stderr).toBe(0)
  expect(b.stdout).toMatch(new RegExp(`^bounced ${id}: s2@stall\\.test; DSN to the sender queued as \\w+\\n$`))
  const dsn = await eventually(() => dsnsTo(sender)[0], 15_000, 'the DSN')
  const found = blocks(dsn)
  expect([...found.keys()].sort()).toEqual(['a@dead.test', 's2@stall.test'])
  expect(found.get('a@dead.test')).toContain('Status: 5.1.1')
  expect(found.get('a@dead.test')).toContain('Diagnostic-Code: smtp; 550 5.1.1 No such user here (dead)')
  expect(found.get('s2@stall.test')).toContain('Status: 5.0.0')
  expect(found.get('s2@stall.test')).toContain('5.0.0 Bounced by the administrator')
  // Nothing of it is owed any more: it left the queue with that one DSN.
  await queueUntil(relay, (q) => !q.some((e) => e.id === id) && !q.some((e) => e.sender === '' && e.recipients.some((r) => r.address === sender)), 'the message and its DSN gone')
  expect(dsnsTo(sender)).toHaveLength(1)
  // The other message still waits at stall.test: no need to wait for a graceful stop.
  await relay.kill9()
}

describe('relay queue bounce of a message that owes a DSN: one DSN', () => {
  it('SQLite: the owed 550 and the operator-bounced recipient in one DSN, each with its own status and diagnostic', async () => {
    const { relay } = await setup()
    await owedJoinsOperatorBounce(relay, 'owed@sender.test')
  })

  it('PostgreSQL: the same', async () => {
    if (!admin && skipFor(pgProblem)) return
    const { relay } = await setup('postgres')
    await owedJoinsOperatorBounce(relay, 'pg-owed@sender.test')
  })

  it('SQLite: a recipient in flight is left to its delivery and reported; the DSN for the bounced one goes with its result, once', async () => {
    const { relay } = await setup()
    const sender = 'inflight@sender.test'
    stallRx.setBehaviour({ noStartTls: true, stall: 'rcpt' })
    const rcptsBefore = stallRx.attempts.rcpt
    parked.add('d@park.test')
    const id = await submit(relay, sender, ['s@stall.test', 'd@park.test'])
    await eventually(() => stallRx.attempts.rcpt > rcptsBefore, 15_000, 'the delivery to stall.test waiting for its RCPT reply')
    await relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id && l.recipient === 'd@park.test', 15_000)

    const b = await cli(relay, 'queue', 'bounce', id)
    expect(b.code, b.stderr).toBe(0)
    expect(b.stdout).toBe(`bounced ${id}: d@park.test; in flight, left to their delivery: s@stall.test; the DSN to the sender goes once the delivery in flight is done\n`)
    const j = JSON.parse((await cli(relay, 'queue', 'show', id, '--json')).stdout) as { recipients: { address: string; state: string; leased: boolean }[] }
    expect(j.recipients.map((r) => [r.address, r.state, r.leased])).toEqual([['s@stall.test', 'queued', true], ['d@park.test', 'bounced', false]])
    // No DSN yet: once the delivery at stall.test has its result, one DSN tells of both.
    expect(dsnsTo(sender)).toHaveLength(0)
    await relay.kill9()
    stallRx.setBehaviour({ noStartTls: true, reply: { rcpt: () => ({ code: 550, message: '5.1.1 Gone (stall)' }) } })
    await relay.restart()
    const dsn = await eventually(() => dsnsTo(sender)[0], 15_000, 'the DSN after the delivery')
    expect([...blocks(dsn).keys()].sort()).toEqual(['d@park.test', 's@stall.test'])
    expect(blocks(dsn).get('d@park.test')).toContain('5.0.0 Bounced by the administrator')
    expect(blocks(dsn).get('s@stall.test')).toContain('Diagnostic-Code: smtp; 550 5.1.1 Gone (stall)')
    await queueUntil(relay, (q) => q.length === 0, 'an empty queue')
    expect(dsnsTo(sender)).toHaveLength(1)
    stallRx.setBehaviour({ noStartTls: true, stall: 'rcpt' })
  })
})

describe('relay queue bounce on a stopped data directory', () => {
  it('SQLite: a DSN left owed by a crash goes with the bounced recipient: one DSN after the restart', async () => {
    const { relay } = await setup()
    const sender = 'stopped@sender.test'
    parked.add('d2@park.test')
    const id = await submit(relay, sender, ['a2@dead.test', 'd2@park.test'])
    await eventually(() => dsnsTo(sender)[0], 15_000, 'the bounce for a2@dead.test')
    await relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id && l.recipient === 'd2@park.test', 15_000)
    expect(await relay.stop()).toBe(0)
    // What a crash right after the complete that recorded the 550 leaves: the result, and its DSN owed.
    const db = new Database(path.join(relay.dataDir, 'queue.sqlite'))
    try {
      expect(db.prepare(`UPDATE recipients SET dsn = '{"action":"failed","status":"5.1.1","remote":true}' WHERE message_id = ? AND address = 'a2@dead.test'`).run(id).changes).toBe(1)
    } finally {
      db.close()
    }
    const listed = await cli(relay, 'queue', 'list')
    expect(listed.stdout).toMatch(/^ {4}bounced +<a2@dead\.test> .*  DSN owed \(not sent yet\)$/m)
    const b = await cli(relay, 'queue', 'bounce', id, '--json')
    expect(b.code, b.stderr).toBe(0)
    expect(JSON.parse(b.stdout)).toEqual({ id, bounced: ['d2@park.test'], dsn: expect.any(String) })
    await relay.restart()
    const second = await eventually(() => dsnsTo(sender)[1], 15_000, 'the DSN after the restart')
    expect([...blocks(second).keys()].sort()).toEqual(['a2@dead.test', 'd2@park.test'])
    await queueUntil(relay, (q) => q.length === 0, 'an empty queue')
    expect(dsnsTo(sender)).toHaveLength(2)
  })
})

describe('relay queue on the data directory of a relay that died with deliveries in flight', () => {
  it('SQLite: nothing is "delivering" once the relay is gone: show says so, and bounce bounces (as a restart would free the work)', async () => {
    const { relay } = await setup()
    const sender = 'died@sender.test'
    stallRx.setBehaviour({ noStartTls: true, stall: 'rcpt' })
    const rcptsBefore = stallRx.attempts.rcpt
    const id = await submit(relay, sender, ['s3@stall.test'])
    await eventually(() => stallRx.attempts.rcpt > rcptsBefore, 15_000, 'the delivery to stall.test waiting for its RCPT reply')
    await relay.kill9()
    const shown = await cli(relay, 'queue', 'show', id)
    expect(shown.code, shown.stderr).toBe(0)
    expect(shown.stdout).toMatch(/\n {2}s3@stall\.test +queued +0 /)
    expect(shown.stdout).not.toContain('delivering')
    const b = await cli(relay, 'queue', 'bounce', id, '--json')
    expect(b.code, b.stderr).toBe(0)
    expect(JSON.parse(b.stdout)).toEqual({ id, bounced: ['s3@stall.test'], dsn: expect.any(String) })
    await relay.restart()
    const dsn = await eventually(() => dsnsTo(sender)[0], 15_000, 'the DSN after the restart')
    expect(blocks(dsn).get('s3@stall.test')).toContain('5.0.0 Bounced by the administrator')
    await queueUntil(relay, (q) => q.length === 0, 'an empty queue')
    expect(dsnsTo(sender)).toHaveLength(1)
  })
})

describe('relay queue bounce racing a delivery', () => {
  it('PostgreSQL: a delivery claims the recipient after the bounce looked at it: the mail is delivered, the bounce does nothing, no DSN', async () => {
    if (!admin && skipFor(pgProblem)) return
    const { relay, schema } = await setup('postgres')
    const sender = 'race@sender.test'
    parked.add('r@park.test')
    const id = await submit(relay, sender, ['r@park.test'])
    await relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id && l.recipient === 'r@park.test', 15_000)
    parked.delete('r@park.test')

    // Another session holds the message row: the bounce reads the message, then waits to write.
    const holder = new pg.Client({ connectionString: PG_URL })
    await holder.connect()
    try {
      await holder.query('BEGIN')
      await holder.query(`SELECT id FROM ${schema}.messages WHERE id = $1 FOR UPDATE`, [id])
      const bounce = cli(relay, 'queue', 'bounce', id)
      const waiting = async () =>
        (await admin!.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1`, [`%${schema}%.messages %FOR UPDATE%`])).rows[0].n >= 1
      await eventually(waiting, 15_000, "the bounce's write waiting for the message row")
      // Meanwhile a delivery claims the recipient and delivers it.
      const f = await cli(relay, 'queue', 'flush', '--id', id)
      expect(f.code, f.stderr).toBe(0)
      await eventually(() => parkRx.messages.some((m) => m.to.includes('r@park.test')), 15_000, 'the delivery')
      await holder.query('COMMIT')
      const b = await bounce
      expect([b.code, b.stderr]).toEqual([1, `relay: message ${id} is being delivered right now (r@park.test): nothing bounced; try again in a moment\n`])
    } finally {
      await holder.end().catch(() => undefined)
    }
    // Delivered, and the sender is told nothing: no DSN queued, none sent.
    await queueUntil(relay, (q) => q.length === 0, 'an empty queue')
    expect(parkRx.messages.filter((m) => m.to.includes('r@park.test'))).toHaveLength(1)
    expect(dsnsTo(sender)).toHaveLength(0)
  })
})
