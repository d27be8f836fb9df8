// The rate-limit plugin's memory store with `workers: 2`: one set of counters for the whole relay
// (in the primary), so a limit is the limit whichever worker takes the connection, not one per
// worker. Real relays (a primary + 2 cluster workers each), real SMTP sessions, one client address
// per case. The workers accept from the shared socket themselves (the kernel picks one, often the
// same one several times in a row), so the tests find out which worker a session is on from the
// worker's own log lines (each carries its pid) instead of assuming an order.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import path from 'node:path'
import { connectRaw, type RawSmtp } from '../harness/smtp-client.js'
import { eventually, ROOT, startRelay, type RelayProcess } from '../harness/relay.js'
import { childNodes } from '../harness/processes.js'

const STATIC_AUTH = path.join(ROOT, 'test/fixtures/static-auth.plugin.ts')
const PW = 'pw-Correct-1'
const PER_MINUTE = 6
const b64 = (s: string) => Buffer.from(s).toString('base64')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Relay {
  relay: RelayProcess
  port: number
}
let rate: Relay // perIp.connectionsPerMinute only
let held: Relay // perIp.concurrent, authFailures and perUser.messagesPerHour (no per-minute limit: the tests open many sessions)
const clients = new Set<RawSmtp>()

async function start(rateLimit: Record<string, unknown>): Promise<Relay> {
  const relay = await startRelay({
    config: {
      workers: 2,
      // AUTH in clear text on loopback keeps the test short (no TLS handshake per session).
      listen: [{ host: '127.0.0.1', port: 0, role: 'mx', tls: 'none', allowPlaintextAuth: true }],
      smtp: { reverseLookup: false, authFailureDelay: '1ms' },
      // Mail taken stays in the queue: its next hop's lookup goes to a loopback port nobody answers.
      dns: { servers: ['127.0.0.1:9'], timeout: '1s' },
      plugins: [
        ['rate-limit', rateLimit],
        [STATIC_AUTH, { users: { 'frank@lock.test': { password: PW } } }],
        // Authenticated sessions may relay (the per-user budgets); nobody else may.
        ['relay-acl', { trustedNetworks: [] }],
      ],
    },
  })
  // The workers log their listeners themselves: their lines may reach the pipe after 'relay started'.
  const listening = await eventually(() => {
    const lines = relay.logs.filter((l) => l.msg.startsWith('listening on'))
    return lines.length >= 2 ? lines : undefined
  }, 5000, "both workers' 'listening on' lines")
  return { relay, port: listening[0]!.port as number }
}

/** The relay's SMTP worker processes. */
const workerPids = (r: Relay): number[] => childNodes(r.relay.child.pid!)

async function open(r: Relay, from: string): Promise<{ client: RawSmtp; greeting: string }> {
  const c = await connectRaw(r.port, '127.0.0.1', 5000, undefined, from)
  clients.add(c.client)
  return c
}

/** One connection from `from`, closed again: its greeting. */
async function connectOnce(r: Relay, from: string): Promise<string> {
  const { client, greeting } = await open(r, from)
  client.close()
  await client.closed
  return greeting
}

/** Pid of the worker serving `client`: a relaying attempt (refused, harmless) makes that worker log. */
async function workerOf(r: Relay, client: RawSmtp, from: string): Promise<number> {
  const refusals = () => r.relay.logs.filter((l) => l.msg === 'refused' && l.stage === 'rcpt' && l.client === from)
  const before = refusals().length
  expect(await client.command('MAIL FROM:<probe@sender.test>')).toMatch(/^250/)
  expect(await client.command('RCPT TO:<someone@elsewhere.test>')).toMatch(/^5/)
  expect(await client.command('RSET')).toMatch(/^250/)
  return (await eventually(() => refusals()[before], 5000, 'the relaying refusal log line')).pid as number
}

/** Open sessions from `from` (EHLO done) until `want(sessions by worker pid)` holds; bounded. */
async function sessionsOnWorkers(r: Relay, from: string, want: (byPid: Map<number, RawSmtp[]>) => boolean): Promise<Map<number, RawSmtp[]>> {
  const byPid = new Map<number, RawSmtp[]>()
  for (let i = 0; i < 30 && !want(byPid); i++) {
    const { client, greeting } = await open(r, from)
    expect(greeting).toMatch(/^220 /)
    expect(await client.command('EHLO client.test')).toMatch(/^250/)
    const pid = await workerOf(r, client, from)
    const list = byPid.get(pid) ?? []
    // Keep at most two per worker unless that completes the set (the per-address concurrent limit is 3).
    if (list.length < 2 || want(new Map([...byPid, [pid, [...list, client]]]))) byPid.set(pid, [...list, client])
    else client.close()
  }
  expect(want(byPid)).toBe(true)
  return byPid
}

/**
 * Attempts refused for `limit` from `key` until both workers have refused one: every attempt must
 * give `refusal`. Resolves with the pids that refused.
 */
async function refusedByBoth(r: Relay, limit: string, key: string, attempt: () => Promise<string>, refusal: RegExp, tries = 30): Promise<number[]> {
  const lines = () => r.relay.logs.filter((l) => l.msg === `rate limit hit: ${limit}` && l.key === key)
  const pids = () => [...new Set(lines().map((l) => l.pid as number))].sort()
  const before = lines().length
  for (let i = 0; i < tries && pids().length < 2; i++) {
    expect(await attempt()).toMatch(refusal)
    // A worker's log line may reach the pipe a little after its reply.
    await eventually(() => lines().length > before + i, 5000, `the refusal log line of attempt ${i + 1}`)
  }
  return pids()
}

const auth = (c: RawSmtp, pass: string) => c.command(`AUTH PLAIN ${b64(`\0frank@lock.test\0${pass}`)}`)

beforeAll(async () => {
  ;[rate, held] = await Promise.all([
    start({ perIp: { connectionsPerMinute: PER_MINUTE, authFailures: false } }),
    start({ perIp: { connectionsPerMinute: false, concurrent: 3, authFailures: { max: 3, window: '1m', lockout: '1m' } }, perUser: { messagesPerHour: 3, recipientsPerHour: 5 } }),
  ])
}, 60_000)

afterEach(() => {
  for (const c of clients) c.close()
  clients.clear()
})

afterAll(async () => {
  await Promise.all([rate, held].map((r) => r?.relay.stop()))
})

describe('rate-limit (memory store) with workers: 2', () => {
  it('runs as a primary and two worker processes', () => {
    for (const r of [rate, held]) {
      const pids = workerPids(r)
      expect(pids).toHaveLength(2)
      expect(pids).not.toContain(r.relay.child.pid)
      expect(r.relay.logs.filter((l) => l.msg.startsWith('listening on')).map((l) => l.pid)).toEqual(expect.arrayContaining(pids))
    }
  })

  it(`connectionsPerMinute: ${PER_MINUTE}: the ${PER_MINUTE + 1}th connection is refused, by either worker`, async () => {
    for (let i = 0; i < PER_MINUTE; i++) expect(await connectOnce(rate, '127.0.0.91')).toMatch(/^220 /)
    const refused = await refusedByBoth(rate, 'perIp.connectionsPerMinute', '127.0.0.91', () => connectOnce(rate, '127.0.0.91'), /^421 4\.7\.0 .*too many connections per minute from 127\.0\.0\.91/)
    expect(refused).toEqual(workerPids(rate))
    expect(await connectOnce(rate, '127.0.0.95')).toMatch(/^220 /)
  })

  it('authFailures: max 3 counts failures in both workers, and the lockout holds in both', async () => {
    // Two sessions on one worker and one on the other: a count per worker would never reach 3.
    const byPid = await sessionsOnWorkers(held, '127.0.0.94', (m) => m.size === 2 && [...m.values()].some((l) => l.length >= 2))
    const [a, b] = [...byPid.values()].sort((x, y) => y.length - x.length)
    const failing = [a![0]!, a![1]!, b![0]!]
    for (const c of failing) expect(await auth(c, 'wrong')).toMatch(/^535 /)
    await held.relay.waitForLog((l) => l.msg === 'rate limit hit: perIp.authFailures (address locked out)' && l.key === '127.0.0.94', 5000)
    for (const c of [a![0]!, b![0]!]) expect(await auth(c, PW)).toMatch(/^454 4\.7\.0 Error: too many failed authentications from 127\.0\.0\.94/)
  })

  it('concurrent: 3: with three connections open, a fourth is refused by either worker; closing one frees a slot', async () => {
    const open3 = await sessionsOnWorkers(held, '127.0.0.92', (m) => [...m.values()].flat().length >= 3)
    const sessions = [...open3.values()].flat()
    // A count per worker would let in the connections the less loaded worker takes.
    const refused = await refusedByBoth(held, 'perIp.concurrent', '127.0.0.92', () => connectOnce(held, '127.0.0.92'), /^421 4\.7\.0 .*too many connections from 127\.0\.0\.92/)
    expect(refused).toEqual(workerPids(held))
    sessions[0]!.close()
    await sessions[0]!.closed
    // The release reaches the primary shortly after the session ends.
    let greeting = ''
    for (let i = 0; i < 10 && !greeting.startsWith('220 '); i++) {
      await sleep(100)
      greeting = (await open(held, '127.0.0.92')).greeting
    }
    expect(greeting).toMatch(/^220 /)
    expect(await connectOnce(held, '127.0.0.92')).toMatch(/^421 4\.7\.0 .*too many connections from 127\.0\.0\.92/)
  })

  it('perUser.messagesPerHour 3 and recipientsPerHour 5 hold for the whole relay: a user sending over both workers gets 451/450 4.7.1 past them', async () => {
    const byPid = await sessionsOnWorkers(held, '127.0.0.96', (m) => m.size === 2)
    const [a, b] = [...byPid.values()].map((l) => l[0]!)
    for (const c of [a!, b!]) expect(await auth(c, PW)).toMatch(/^235 /)
    /** One message to `rcpts` recipients: the reply that ended it (the final dot's, or a refusal). */
    const send = async (c: RawSmtp, rcpts: number): Promise<string> => {
      let reply = await c.command('MAIL FROM:<frank@lock.test>')
      for (let i = 0; i < rcpts && reply.startsWith('250'); i++) reply = await c.command(`RCPT TO:<r${i}@elsewhere.test>`)
      if (reply.startsWith('250')) reply = await c.command('DATA')
      if (reply.startsWith('354')) reply = await c.command('Subject: budget\r\n\r\nHello.\r\n.')
      if (!reply.startsWith('250')) await c.command('RSET')
      return reply
    }
    // Each worker alone stays under both budgets; together they reach them.
    expect(await send(a!, 1)).toMatch(/^250 /)
    expect(await send(b!, 2)).toMatch(/^250 /)
    // 3 recipients taken of 5: a message to 3 more is refused at its third RCPT, in either worker.
    for (const c of [a!, b!]) expect(await send(c, 3)).toMatch(/^450 4\.7\.1 .*too many recipients from frank@lock\.test/)
    expect(await send(a!, 1)).toMatch(/^250 /)
    // 3 messages taken: the next is refused at MAIL, in either worker.
    for (const c of [a!, b!]) expect(await send(c, 1)).toMatch(/^451 4\.7\.1 .*too many messages from frank@lock\.test/)
  })

  it('slots held by a worker that dies are given back (the primary checks when the address is full)', async () => {
    // Two slots on one worker, one on the other; then the first worker is killed (no release).
    const byPid = await sessionsOnWorkers(held, '127.0.0.93', (m) => m.size === 2 && [...m.values()].some((l) => l.length >= 2))
    const [victim] = [...byPid.entries()].sort((x, y) => y[1].length - x[1].length)[0]!
    process.kill(victim, 'SIGKILL')
    await Promise.all(byPid.get(victim)!.map((c) => c.closed))
    await held.relay.waitForLog((l) => l.msg === 'an SMTP worker exited: starting another' && l.signal === 'SIGKILL', 5000)
    // The surviving worker (or the replacement) serves: two slots free again, the live one still counts.
    for (let i = 0; i < 2; i++) expect((await open(held, '127.0.0.93')).greeting).toMatch(/^220 /)
    expect(await connectOnce(held, '127.0.0.93')).toMatch(/^421 4\.7\.0 .*too many connections from 127\.0\.0\.93/)
  })
})
