// `['rate-limit', {}]` guards by default (issue 12, point 6): 60 new connections per minute per
// address, and 10 failed AUTHs in 15 minutes lock the address out for 15 minutes. Each turns off
// with `false`. Tested with the default numbers, over real sockets, one client address per case.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import path from 'node:path'
import { connectRaw, type RawSmtp } from '../harness/smtp-client.js'
import { ROOT, startRelay, type RelayProcess } from '../harness/relay.js'

const STATIC_AUTH = path.join(ROOT, 'test/fixtures/static-auth.plugin.ts')
const PW = 'pw-Correct-1'
const b64 = (s: string) => Buffer.from(s).toString('base64')

let guarded: RelayProcess // ['rate-limit', {}]
let off: RelayProcess // both default limits turned off
const clients = new Set<RawSmtp>()

const config = (rateLimit: Record<string, unknown>) => ({
  // AUTH in clear text on loopback keeps the test short (no TLS handshake per session).
  listen: [{ host: '127.0.0.1', port: 0, role: 'mx', tls: 'none', allowPlaintextAuth: true }],
  smtp: { reverseLookup: false, authFailureDelay: '1ms' },
  plugins: [
    ['rate-limit', rateLimit],
    [STATIC_AUTH, { users: { 'frank@lock.test': { password: PW } } }],
  ],
})

async function session(port: number, from: string): Promise<{ client: RawSmtp; greeting: string }> {
  const c = await connectRaw(port, '127.0.0.1', 5000, undefined, from)
  clients.add(c.client)
  return c
}

/** `n` connections from `from`, one after the other (each closed before the next): their greetings. */
async function connections(port: number, from: string, n: number): Promise<string[]> {
  const greetings: string[] = []
  for (let i = 0; i < n; i++) {
    const { client, greeting } = await session(port, from)
    greetings.push(greeting)
    client.close()
    await client.closed
  }
  return greetings
}

const auth = (c: RawSmtp, pass: string) => c.command(`AUTH PLAIN ${b64(`\0frank@lock.test\0${pass}`)}`)

/** `n` wrong passwords from `from` in one session; the session, ready for more. */
async function failAuth(port: number, from: string, n: number): Promise<RawSmtp> {
  const { client } = await session(port, from)
  expect(await client.command('EHLO client.test')).toMatch(/AUTH PLAIN/)
  for (let i = 0; i < n; i++) expect(await auth(client, 'wrong')).toMatch(/^535 /)
  return client
}

beforeAll(async () => {
  ;[guarded, off] = await Promise.all([
    startRelay({ config: config({}) }),
    startRelay({ config: config({ perIp: { connectionsPerMinute: false, authFailures: false } }) }),
  ])
})

afterEach(() => {
  for (const c of clients) c.close()
  clients.clear()
})

afterAll(async () => {
  await Promise.all([guarded, off].map((r) => r?.stop()))
})

describe("['rate-limit', {}]", () => {
  it('connections per minute: the 61st from one address within the minute gets 421 4.7.0; another address connects', async () => {
    const greetings = await connections(guarded.port, '127.0.0.81', 61)
    expect(greetings.slice(0, 60).every((g) => g.startsWith('220 '))).toBe(true)
    expect(greetings[60]).toMatch(/^421 4\.7\.0 .*too many connections per minute from 127\.0\.0\.81/)
    expect((await session(guarded.port, '127.0.0.82')).greeting).toMatch(/^220 /)
  })

  it('AUTH failures: the 10th wrong password locks the address out (454 4.7.0, the right password too); another address is not', async () => {
    const s = await failAuth(guarded.port, '127.0.0.83', 9)
    expect(await auth(s, PW)).toMatch(/^235 /) // 9 failures: not yet
    // The success's reserved attempt comes back at its session's next MAIL (or when it ends).
    expect(await s.command('MAIL FROM:<frank@lock.test>')).toMatch(/^250 /)
    const t = await failAuth(guarded.port, '127.0.0.83', 1)
    expect(await auth(t, PW)).toMatch(/^454 4\.7\.0 Error: too many failed authentications from 127\.0\.0\.83, try again in 15 minute\(s\)/)
    await guarded.waitForLog((l) => l.msg === 'rate limit hit: perIp.authFailures (address locked out)' && l.key === '127.0.0.83' && l.lockoutSec === 900, 5000)
    const other = await failAuth(guarded.port, '127.0.0.84', 1)
    expect(await auth(other, PW)).toMatch(/^235 /)
  })
})

describe('each default limit turns off with false', () => {
  it('connectionsPerMinute: false: 70 connections in a row from one address are all greeted', async () => {
    const greetings = await connections(off.port, '127.0.0.85', 70)
    expect(greetings.filter((g) => g.startsWith('220 ')).length).toBe(70)
  })

  it('authFailures: false: 12 wrong passwords lock nobody out', async () => {
    const s = await failAuth(off.port, '127.0.0.86', 12)
    expect(await auth(s, PW)).toMatch(/^235 /)
  })
})
