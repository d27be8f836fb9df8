// The AUTH lockout holds against parallel guesses: perIp.authFailures { max: 3 } allows at most 3
// password checks per window from one address, also when 30 connections send a wrong AUTH at the
// same moment, with the memory store (one process, and shared by SMTP workers) and with Redis
// (shared by two relays). The backend is slow (300 ms a check, like a password hash) and logs each
// check it makes. A successful AUTH gives its attempt back (it does not count as a failure).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import path from 'node:path'
import { connectRaw, type RawSmtp } from '../harness/smtp-client.js'
import { eventually, ROOT, startRelay, type RelayProcess } from '../harness/relay.js'
import { REDIS_URL, redisProblem, skipFor } from '../harness/services.js'

const SLOW_AUTH = path.join(ROOT, 'test/fixtures/slow-auth.plugin.ts')
const PW = 'pw-Correct-1'
const b64 = (s: string) => Buffer.from(s).toString('base64')
const authPlain = (c: RawSmtp, pass: string) => c.command(`AUTH PLAIN ${b64(`\0frank@lock.test\0${pass}`)}`, 10_000)
const LOCKED = (ip: string) => new RegExp(`^454 4\\.7\\.0 Error: too many failed authentications from ${ip.replace(/\./g, '\\.')}, try again in \\d+ minute`)
const BUSY = (ip: string) => `454 4.7.0 Error: too many authentication attempts from ${ip}, try again later`

const clients = new Set<RawSmtp>()
const relays: RelayProcess[] = []

async function start(o: { workers?: number; store?: unknown; keyPrefix?: string }): Promise<{ relay: RelayProcess; port: number }> {
  const relay = await startRelay({
    config: {
      ...(o.workers ? { workers: o.workers } : {}),
      listen: [{ host: '127.0.0.1', port: 0, role: 'mx', tls: 'none', allowPlaintextAuth: true }],
      smtp: { reverseLookup: false, authFailureDelay: '1ms' },
      plugins: [
        ['rate-limit', { store: o.store ?? 'memory', keyPrefix: o.keyPrefix ?? 'relay-rl', perIp: { connectionsPerMinute: false, authFailures: { max: 3, window: '1m', lockout: '1m' } } }],
        [SLOW_AUTH, { users: { 'frank@lock.test': PW }, delayMs: 300 }],
      ],
    },
  })
  relays.push(relay)
  if (!o.workers) return { relay, port: relay.port }
  // The workers log their listeners themselves: their lines may reach the pipe after 'relay started'.
  const listening = await eventually(() => {
    const lines = relay.logs.filter((l) => l.msg.startsWith('listening on'))
    return lines.length >= o.workers! ? lines : undefined
  }, 5000, "the workers' 'listening on' lines")
  return { relay, port: listening[0]!.port as number }
}

/** `n` sessions from `ip` on each port, EHLO done: ready for AUTH. */
async function sessions(ports: number[], ip: string, n: number): Promise<RawSmtp[]> {
  const list: RawSmtp[] = []
  for (const port of ports) {
    for (let i = 0; i < n; i++) {
      const { client, greeting } = await connectRaw(port, '127.0.0.1', 5000, undefined, ip)
      clients.add(client)
      expect(greeting).toMatch(/^220 /)
      expect(await client.command('EHLO client.test')).toMatch(/^250 /m)
      list.push(client)
    }
  }
  return list
}

/** Every session sends its AUTH at once: the replies, by code and text. */
async function allAtOnce(list: RawSmtp[], pass: string): Promise<Map<string, number>> {
  const replies = await Promise.all(list.map((c) => authPlain(c, pass)))
  const counts = new Map<string, number>()
  for (const r of replies) counts.set(r.startsWith('535 ') ? '535' : r, (counts.get(r.startsWith('535 ') ? '535' : r) ?? 0) + 1)
  return counts
}

const checks = (rs: RelayProcess[], ip: string) => rs.flatMap((r) => r.logs.filter((l) => l.event === 'password-checked' && l.client === ip))

/** 30 wrong passwords at once from `ip`: 3 checked (535), 27 refused unchecked; then the right password is locked out. */
async function parallelGuesses(rs: RelayProcess[], ports: number[], ip: string): Promise<void> {
  const list = await sessions(ports, ip, 30 / ports.length)
  const counts = await allAtOnce(list, 'wrong')
  expect(Object.fromEntries(counts)).toEqual({ '535': 3, [BUSY(ip)]: 27 })
  // The backend checked 3 passwords, no more (its log lines may come a little after the replies).
  await eventually(() => checks(rs, ip).length >= 3 || undefined, 5000, 'the password-checked lines')
  await new Promise((r) => setTimeout(r, 500))
  expect(checks(rs, ip).map((l) => l.ok)).toEqual([false, false, false])
  const [late] = await sessions([ports[0]!], ip, 1)
  expect(await authPlain(late!, PW)).toMatch(LOCKED(ip))
  expect(checks(rs, ip)).toHaveLength(3)
}

afterAll(async () => {
  for (const c of clients) c.close()
  await Promise.all(relays.map((r) => r.stop()))
})

describe('perIp.authFailures against parallel guesses', () => {
  let memory: { relay: RelayProcess; port: number }
  let workers: { relay: RelayProcess; port: number }

  beforeAll(async () => {
    ;[memory, workers] = await Promise.all([start({}), start({ workers: 2 })])
  }, 60_000)

  it('memory store: 30 wrong AUTHs at once from one address: 3 passwords checked, 27 refused with 454; then the right one is locked out', async () => {
    await parallelGuesses([memory.relay], [memory.port], '127.0.0.41')
  }, 30_000)

  it('a successful AUTH gives its attempt back: after 5 good logins and 2 failures the address is not locked out', async () => {
    const ip = '127.0.0.42'
    for (let i = 0; i < 5; i++) {
      const [c] = await sessions([memory.port], ip, 1)
      expect(await authPlain(c!, PW)).toMatch(/^235 /)
      c!.close()
    }
    const [s] = await sessions([memory.port], ip, 1)
    for (let i = 0; i < 2; i++) expect(await authPlain(s!, 'wrong')).toMatch(/^535 /)
    expect(await authPlain(s!, PW)).toMatch(/^235 /)
    // In flight at once, good logins count too: 3 are checked, the 4th and 5th wait for a free attempt.
    const ip2 = '127.0.0.43'
    const list = await sessions([memory.port], ip2, 5)
    expect(Object.fromEntries(await allAtOnce(list, PW))).toEqual({ '235 2.7.0 Authentication successful': 3, [BUSY(ip2)]: 2 })
    // Once those sessions go on (MAIL) or end, their attempts are free again.
    for (const c of list) c.close()
    await eventually(async () => {
      const [c] = await sessions([memory.port], ip2, 1)
      const reply = await authPlain(c!, PW)
      c!.close()
      return reply.startsWith('235 ') || undefined
    }, 5000, 'a free attempt after the sessions closed')
  }, 30_000)

  it('memory store under workers: 2 (counters in the primary): 3 passwords checked across both workers', async () => {
    await parallelGuesses([workers.relay], [workers.port], '127.0.0.44')
    // The 27 refusals came from both workers: the sessions were spread over them.
    const pids = new Set(workers.relay.logs.filter((l) => l.msg === 'rate limit hit: perIp.authFailures' && l.client === '127.0.0.44').map((l) => l.pid))
    expect(pids.size).toBe(2)
  }, 30_000)

  it('Redis store shared by two relays: 15 guesses at once on each, 3 passwords checked in all', async () => {
    const problem = await redisProblem()
    if (problem) return void skipFor(problem, 'the Redis parallel AUTH test')
    const keyPrefix = `relay-rl-auth-parallel-${process.pid}`
    const [a, b] = await Promise.all([start({ store: { redis: REDIS_URL }, keyPrefix }), start({ store: { redis: REDIS_URL }, keyPrefix })])
    await parallelGuesses([a!.relay, b!.relay], [a!.port, b!.port], '127.0.0.45')
  }, 60_000)
})
