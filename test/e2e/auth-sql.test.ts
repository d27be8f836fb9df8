// auth-sql against a real PostgreSQL (a schema of its own per run, dropped afterwards) and a real
// SQLite file, through the built relay's submission listener: STARTTLS with a certificate from a
// test CA, then AUTH PLAIN, then MAIL FROM to see that the senders from the database are enforced.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import pg from 'pg'
import Database from 'better-sqlite3'
import { connectRaw, type RawSmtp } from '../harness/smtp-client.js'
import { runCli, runCliAsync, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { connectionsDuring } from '../harness/silent-port.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { PG_URL, connectPostgres, skipFor } from '../harness/services.js'

const SCHEMA = `relay_auth_sql_${process.pid}_${crypto.randomBytes(4).toString('hex')}`


/** PG_URL with this run's schema first on the search path, so the default query finds its relay_users. */
function pgUrlWithSchema(): string {
  return `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${SCHEMA}`)}`
}

/** The hash format auth-sql (and auth-file) read: scrypt$N$r$p$saltB64$hashB64, computed here. */
function scryptHash(password: string, N = 16384, r = 8, p = 1): string {
  const salt = crypto.randomBytes(16)
  const key = crypto.scryptSync(password, salt, 32, { N, r, p, maxmem: 256 * N * r + 2 ** 20 })
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`
}

const PASSWORDS = {
  alice: 'alice-Secret-1',
  carol: 'carol-Secret-2',
  dave: 'dave-Secret-3',
  erin: 'erin-Secret-4',
  plain: 'plain-Stored-5',
}

let ca: TestCa
let cert: { key: string; cert: string }
let admin: pg.Client | undefined
let pgProblem = ''
const relays: RelayProcess[] = []

beforeAll(async () => {
  ca = makeCa()
  cert = ca.issue(['relay.test'])
  const pgc = await connectPostgres()
  if (!pgc.client) {
    pgProblem = pgc.problem
    return
  }
  const client = (admin = pgc.client)
  await client.query(`CREATE SCHEMA ${SCHEMA}`)
  // The documented default table.
  await client.query(`CREATE TABLE ${SCHEMA}.relay_users (username text PRIMARY KEY, password_hash text NOT NULL, senders text)`)
  const insert = `INSERT INTO ${SCHEMA}.relay_users (username, password_hash, senders) VALUES ($1, $2, $3)`
  await client.query(insert, ['alice@example.com', scryptHash(PASSWORDS.alice), 'alice@example.com, sales@example.com example.org'])
  await client.query(insert, ['carol@example.net', scryptHash(PASSWORDS.carol), null])
  // A plain password where a hash belongs: must never log anyone in.
  await client.query(insert, ['plain@example.com', PASSWORDS.plain, null])
  // A table of another shape, read through a custom query, with a text[] of senders.
  await client.query(`CREATE TABLE ${SCHEMA}.accounts (login text, pw text, aliases text[], active boolean)`)
  await client.query(`INSERT INTO ${SCHEMA}.accounts VALUES ($1, $2, $3, true), ($4, $5, NULL, false)`, [
    'Dave@Example.com', scryptHash(PASSWORDS.dave), ['dave@example.com', 'example.net'],
    'frank@example.com', scryptHash('frank-pw'),
  ])
}, 20_000)

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
})

afterAll(async () => {
  if (admin) {
    await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`).catch(() => undefined)
    await admin.end().catch(() => undefined)
  }
})

/** True when PostgreSQL is missing and the test should stop here (with a visible notice). */
function noPostgres(): boolean {
  return admin ? false : skipFor(pgProblem)
}

async function relayWith(pluginOptions: Record<string, unknown>): Promise<RelayProcess> {
  const relay = await startRelay({
    config: {
      listen: [{ host: '127.0.0.1', port: 0, role: 'submission', tls: 'starttls' }],
      tls: { cert: cert.cert, key: cert.key },
      smtp: { reverseLookup: false, authFailureDelay: '10ms' },
      plugins: [['auth-sql', pluginOptions]],
    },
  })
  relays.push(relay)
  return relay
}

const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64')

/** Connects, STARTTLS (verified against the test CA), EHLO: a session where AUTH is on offer. */
async function tlsSession(port: number): Promise<RawSmtp> {
  const { client, greeting } = await connectRaw(port)
  expect(greeting).toMatch(/^220 /)
  expect(await client.command('EHLO client.test')).toMatch(/^250-STARTTLS$/m)
  expect(await client.command('STARTTLS')).toMatch(/^220 /)
  await client.startTls({ ca: ca.caPem, servername: 'relay.test' })
  expect(await client.command('EHLO client.test')).toMatch(/^250-AUTH PLAIN LOGIN$/m)
  return client
}

/** Connects, STARTTLS (verified against the test CA), EHLO, AUTH PLAIN; gives the AUTH reply and its time. */
async function login(port: number, user: string, pass: string): Promise<{ client: RawSmtp; reply: string; ms: number }> {
  const client = await tlsSession(port)
  const started = performance.now()
  const reply = await client.command(`AUTH PLAIN ${plain(user, pass)}`, 10_000)
  return { client, reply, ms: performance.now() - started }
}

/** Logs in and closes; gives the AUTH reply. */
async function authReply(port: number, user: string, pass: string): Promise<string> {
  const { client, reply } = await login(port, user, pass)
  client.close()
  return reply
}

// A busy machine only ever adds time, so each path's fastest try is its own cost, free of the
// load spikes that move a median of a handful of tries by 2× on a shared CI box.
const fastest = (xs: number[]) => Math.min(...xs)
const logText = (relay: RelayProcess) => relay.logs.map((l) => JSON.stringify(l)).join('\n')

describe('auth-sql with PostgreSQL', () => {
  it('default query on relay_users: 235 for the right password, 535 5.7.8 otherwise, senders enforced', async () => {
    if (noPostgres()) return
    const relay = await relayWith({ driver: 'postgres', url: pgUrlWithSchema() })

    const { client, reply } = await login(relay.port, 'alice@example.com', PASSWORDS.alice)
    expect(reply).toMatch(/^235 2\.7\.0/)
    // senders 'alice@example.com, sales@example.com example.org' (commas and spaces)
    expect(await client.command('MAIL FROM:<mallory@evil.test>')).toMatch(/^553 5\.7\.1 /)
    expect(await client.command('MAIL FROM:<bob@example.com>')).toMatch(/^553 5\.7\.1 /)
    expect(await client.command('MAIL FROM:<sales@example.com>')).toMatch(/^250 /)
    expect(await client.command('RSET')).toMatch(/^250 /)
    expect(await client.command('MAIL FROM:<anyone@example.org>')).toMatch(/^250 /)
    client.close()

    expect(await authReply(relay.port, 'alice@example.com', 'wrong-password')).toMatch(/^535 5\.7\.8 /)
    expect(await authReply(relay.port, 'nobody@example.com', PASSWORDS.alice)).toMatch(/^535 5\.7\.8 /)
    // A stored plain password is not a hash: refused even when it is typed exactly.
    expect(await authReply(relay.port, 'plain@example.com', PASSWORDS.plain)).toMatch(/^535 5\.7\.8 /)
    await relay.waitForLog((l) => l.plugin === 'auth-sql' && l.user === 'plain@example.com' && /not a supported hash/.test(l.msg))

    // NULL senders: the relay's default, the user name itself.
    const carol = await login(relay.port, 'carol@example.net', PASSWORDS.carol)
    expect(carol.reply).toMatch(/^235 /)
    expect(await carol.client.command('MAIL FROM:<other@example.net>')).toMatch(/^553 5\.7\.1 /)
    expect(await carol.client.command('MAIL FROM:<carol@example.net>')).toMatch(/^250 /)
    carol.client.close()

    const logs = logText(relay)
    for (const p of [PASSWORDS.alice, PASSWORDS.carol, PASSWORDS.plain, 'wrong-password']) expect(logs).not.toContain(p)
    expect(relay.exited()).toBe(false)
    // The teardown closes the pool: a clean exit.
    expect(await relay.stop()).toBe(0)
  })

  it('an unknown user takes about as long as a wrong password (the scrypt work is done either way)', async () => {
    if (noPostgres()) return
    const relay = await relayWith({ driver: 'postgres', url: pgUrlWithSchema() })
    expect(await authReply(relay.port, 'alice@example.com', PASSWORDS.alice)).toMatch(/^235 /) // warm pool
    const unknown: number[] = []
    const wrong: number[] = []
    for (let i = 0; i < 7; i++) {
      for (const [user, into] of [['ghost@example.com', unknown], ['alice@example.com', wrong]] as const) {
        const { client, reply, ms } = await login(relay.port, user, `guess-${i}`)
        client.close()
        expect(reply).toMatch(/^535 5\.7\.8 /)
        into.push(ms)
      }
    }
    // Without the stand-in check an unknown user answers in ~authFailureDelay (10 ms), a wrong
    // password in that plus one scrypt (N=16384: tens of ms).
    const tries = `unknown ${unknown.map(Math.round)} vs wrong ${wrong.map(Math.round)} ms`
    expect(fastest(unknown), tries).toBeGreaterThan(fastest(wrong) * 0.5)
    expect(fastest(wrong), tries).toBeGreaterThan(fastest(unknown) * 0.5)
  })

  it('a custom query over another table: case-insensitive login, text[] senders, inactive users refused', async () => {
    if (noPostgres()) return
    const relay = await relayWith({
      driver: 'postgres',
      url: PG_URL,
      query: `SELECT pw AS password_hash, aliases AS senders FROM ${SCHEMA}.accounts WHERE lower(login) = lower($1) AND active`,
      poolSize: 2,
    })
    const { client, reply } = await login(relay.port, 'dave@example.com', PASSWORDS.dave)
    expect(reply).toMatch(/^235 /)
    expect(await client.command('MAIL FROM:<intruder@example.com>')).toMatch(/^553 5\.7\.1 /)
    expect(await client.command('MAIL FROM:<dave@example.com>')).toMatch(/^250 /)
    expect(await client.command('RSET')).toMatch(/^250 /)
    expect(await client.command('MAIL FROM:<team@example.net>')).toMatch(/^250 /)
    client.close()
    expect(await authReply(relay.port, 'frank@example.com', 'frank-pw')).toMatch(/^535 5\.7\.8 /)
  })

  it('a query slower than queryTimeout: 454 4.7.0 at the timeout, an error log, the relay carries on', async () => {
    if (noPostgres()) return
    const relay = await relayWith({
      driver: 'postgres',
      url: pgUrlWithSchema(),
      query: 'SELECT password_hash, senders, pg_sleep(3) FROM relay_users WHERE username = $1',
      queryTimeout: '400ms',
    })
    const { client, reply, ms } = await login(relay.port, 'alice@example.com', PASSWORDS.alice)
    expect(reply).toMatch(/^454 4\.7\.0 /)
    expect(ms).toBeGreaterThanOrEqual(350)
    expect(ms).toBeLessThan(2500)
    // Same session, again: still a clean 454, not a hang or a crash.
    expect(await client.command(`AUTH PLAIN ${plain('alice@example.com', PASSWORDS.alice)}`, 5000)).toMatch(/^454 4\.7\.0 /)
    client.close()
    const line = await relay.waitForLog((l) => l.plugin === 'auth-sql' && l.level === 50 && /user database failed/.test(l.msg))
    expect(String(line.err)).toMatch(/timeout|timed out/i)
    expect(relay.exited()).toBe(false)
  })
})

describe('auth-sql backend down', () => {
  it('PostgreSQL on a closed port: the relay starts, AUTH gets 454 4.7.0 with an error log, never a crash', async () => {
    const relay = await relayWith({ driver: 'postgres', url: 'postgres://relay@127.0.0.1:1/test', queryTimeout: '2s' })
    const { client, reply, ms } = await login(relay.port, 'alice@example.com', PASSWORDS.alice)
    expect(reply).toMatch(/^454 4\.7\.0 /)
    expect(ms).toBeLessThan(2500)
    client.close()
    expect(await authReply(relay.port, 'alice@example.com', PASSWORDS.alice)).toMatch(/^454 4\.7\.0 /)
    const line = await relay.waitForLog((l) => l.plugin === 'auth-sql' && l.level === 50 && /user database failed/.test(l.msg))
    expect(String(line.err)).toMatch(/ECONNREFUSED|connect/i)
    expect(relay.exited()).toBe(false)
  })
})

describe('auth-sql with SQLite', () => {
  function makeDb(file: string): void {
    const db = new Database(file)
    db.exec('CREATE TABLE relay_users (username text PRIMARY KEY, password_hash text NOT NULL, senders text)')
    db.prepare('INSERT INTO relay_users VALUES (?, ?, ?)').run('erin@example.org', scryptHash(PASSWORDS.erin), '["erin@example.org", "billing@example.org"]')
    db.close()
  }

  it('default table in a file opened read-only: 235, 535 5.7.8, JSON senders enforced', async () => {
    const file = path.join(tempDir('relay-auth-sql-'), 'users.db')
    makeDb(file)
    const before = fs.readFileSync(file)
    const relay = await relayWith({ driver: 'sqlite', file })
    const { client, reply } = await login(relay.port, 'erin@example.org', PASSWORDS.erin)
    expect(reply).toMatch(/^235 2\.7\.0/)
    expect(await client.command('MAIL FROM:<someone@example.org>')).toMatch(/^553 5\.7\.1 /)
    expect(await client.command('MAIL FROM:<billing@example.org>')).toMatch(/^250 /)
    client.close()
    expect(await authReply(relay.port, 'erin@example.org', 'not-her-password')).toMatch(/^535 5\.7\.8 /)
    expect(await authReply(relay.port, 'zed@example.org', PASSWORDS.erin)).toMatch(/^535 5\.7\.8 /)
    expect(logText(relay)).not.toContain(PASSWORDS.erin)
    await relay.stop()
    expect(fs.readFileSync(file).equals(before)).toBe(true) // read-only: not a byte changed
  })

  it('a database file that is not there yet: 454 4.7.0, then 235 once it is in place', async () => {
    const dir = tempDir('relay-auth-sql-')
    const file = path.join(dir, 'users.db')
    const relay = await relayWith({ driver: 'sqlite', file })
    await relay.waitForLog((l) => l.plugin === 'auth-sql' && l.level === 50 && /cannot open the SQLite/.test(l.msg))
    expect(await authReply(relay.port, 'erin@example.org', PASSWORDS.erin)).toMatch(/^454 4\.7\.0 /)
    makeDb(path.join(dir, 'next.db'))
    fs.renameSync(path.join(dir, 'next.db'), file)
    expect(await authReply(relay.port, 'erin@example.org', PASSWORDS.erin)).toMatch(/^235 /)
    expect(relay.exited()).toBe(false)
  })
})

describe('auth-sql with a slow SQLite query', () => {
  it('past queryTimeout: 454 4.7.0 and an error log; other sessions are answered meanwhile; the next lookup works', async () => {
    const file = path.join(tempDir('relay-auth-sql-'), 'users.db')
    const db = new Database(file)
    db.exec('CREATE TABLE relay_users (username text PRIMARY KEY, password_hash text NOT NULL, senders text)')
    db.prepare('INSERT INTO relay_users VALUES (?, ?, ?)').run('erin@example.org', scryptHash(PASSWORDS.erin), null)
    db.prepare('INSERT INTO relay_users VALUES (?, ?, ?)').run('slow@example.org', scryptHash(PASSWORDS.erin), null)
    db.close()
    // Counting to 10^9 for the 'slow' user (tens of seconds), at once for everyone else.
    const query =
      "WITH RECURSIVE u(name) AS (SELECT ?), c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < (CASE WHEN (SELECT name FROM u) LIKE 'slow%' THEN 1000000000 ELSE 1 END)) " +
      'SELECT password_hash, senders FROM relay_users WHERE username = (SELECT name FROM u) AND (SELECT count(*) FROM c) > 0'
    const relay = await relayWith({ driver: 'sqlite', file, query, queryTimeout: '1s' })
    const other = await tlsSession(relay.port)
    const slow = await tlsSession(relay.port)
    const order: string[] = []
    const auth = slow.command(`AUTH PLAIN ${plain('slow@example.org', PASSWORDS.erin)}`, 10_000).then((r) => (order.push('auth'), r))
    await new Promise((r) => setTimeout(r, 300))
    // The query runs off the event loop: another session is answered while it does.
    expect(await other.command('NOOP').then((r) => (order.push('noop'), r))).toMatch(/^250 /)
    expect(await auth).toMatch(/^454 4\.7\.0 /)
    expect(order).toEqual(['noop', 'auth'])
    const line = await relay.waitForLog((l) => l.plugin === 'auth-sql' && l.level === 50 && /user database failed/.test(l.msg))
    expect(String(line.err)).toBe('SQLite query timed out after 1000 ms')
    // The runaway query was stopped with its process; the next lookup gets a fresh one.
    expect(await authReply(relay.port, 'erin@example.org', PASSWORDS.erin)).toMatch(/^235 /)
    for (const c of [other, slow]) c.close()
    expect(relay.exited()).toBe(false)
    // And the relay stops at once (no query left running to wait for).
    const stopped = performance.now()
    await relay.stop()
    expect(performance.now() - stopped).toBeLessThan(10_000)
  })
})

describe('auth-sql options', () => {
  it('check-config: exit 2 naming the missing option for the driver and an unknown driver', () => {
    const dir = tempDir('relay-auth-sql-')
    for (const [opts, key] of [
      [{ driver: 'sqlite' }, /options\.file/],
      [{ driver: 'postgres' }, /options\.url/],
      [{ driver: 'mysql', url: 'x' }, /options\.driver/],
      [{ driver: 'sqlite', file: 'x.db', queryTimeout: 'soon' }, /options\.queryTimeout/],
    ] as const) {
      const file = path.join(dir, 'relay.config.json')
      fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), plugins: [['auth-sql', opts]] }))
      const r = runCli(['check-config', '--config', file])
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toMatch(/plugins\[0\] \(auth-sql\)/)
      expect(r.stderr).toMatch(key)
    }
  })

  it('check-config with PostgreSQL: config ok at once, no connection made (check mode opens no pool)', async () => {
    const connections = await connectionsDuring(async (port) => {
      const dir = tempDir('relay-auth-sql-')
      const file = path.join(dir, 'relay.config.json')
      const url = `postgres://relay@127.0.0.1:${port}/mail`
      fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), plugins: [['auth-sql', { driver: 'postgres', url }]] }))
      const started = Date.now()
      const r = await runCliAsync(['check-config', '--config', file])
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toMatch(/config ok/)
      expect(Date.now() - started).toBeLessThan(5000)
    })
    expect(connections).toBe(0)
  })
})
