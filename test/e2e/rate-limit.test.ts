// The rate-limit plugin end to end, against the built relay over real sockets: per-IP concurrent
// connections and connections per minute (421 4.7.0), AUTH failures → lockout (454 4.7.0, even
// for the right password), per-user and per-sender-domain hourly budgets (451 4.7.1 / 450 4.7.1),
// exempt networks, store failures (fail open, or tempfail), and with Redis one limit shared by
// two relay processes. Each test uses its own client address (127.0.0.x), as limits are per IP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import net from 'node:net'
import path from 'node:path'
import { Redis } from 'ioredis'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, sendMail, type RawSmtp } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import fs from 'node:fs'
import { eventually, ROOT, runCli, runCliAsync, startRelay, tempDir, type LogLine, type RelayProcess } from '../harness/relay.js'
import { connectionsDuring } from '../harness/silent-port.js'
import { REDIS_URL, redisProblem, skipFor } from '../harness/services.js'
import { compiledPlugin } from '../harness/compiled-plugin.js'

const STATIC_AUTH = compiledPlugin(path.join(ROOT, 'test/fixtures/static-auth.plugin.ts'))
const FLAKY_AUTH = compiledPlugin(path.join(ROOT, 'test/fixtures/rate-limit-flaky-auth.plugin.ts'))
const CONNECT_GATE = compiledPlugin(path.join(ROOT, 'test/fixtures/connect-gate.plugin.ts'))
const PW = 'pw-Correct-1'
const USERS = Object.fromEntries(
  ['alice@example.test', 'bob@example.test', 'carol@other.test', 'dave@race.test', 'erin@rcpt.test', 'frank@lock.test', 'gina@redis.test', 'hana@bücher.test', 'hana@xn--bcher-kva.test'].map((u) => [u, { password: PW }]),
)
const b64 = (s: string) => Buffer.from(s).toString('base64')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let ca: TestCa
let cert: { key: string; cert: string }
let dns: TestDns
let mx: TestReceiver
let relay: RelayProcess // memory store, every limit on
let failOpen: RelayProcess // Redis store on a port where nothing listens
let failClosed: RelayProcess // the same, onStoreError: 'tempfail'
const clients = new Set<RawSmtp>()

const LIMITS = {
  perIp: { concurrent: 3, connectionsPerMinute: 20, authFailures: { max: 3, window: '1m', lockout: '2s' } },
  perUser: { messagesPerHour: 3, recipientsPerHour: 5 },
  perSenderDomain: { messagesPerHour: 4 },
  exempt: ['127.0.0.60/32'],
}

/** A relay on one STARTTLS listener with the rate-limit plugin first, then the auth backends. */
function relayConfig(rateLimit: Record<string, unknown>) {
  return {
    listen: [{ host: '127.0.0.1', port: 0, role: 'mx', tls: 'starttls' }],
    tls: { cert: cert.cert, key: cert.key },
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: { port: mx.port },
    smtp: { reverseLookup: false, authFailureDelay: '10ms' },
    plugins: [
      ['rate-limit', rateLimit],
      [CONNECT_GATE, { refuse: ['127.0.0.28'] }], // after rate-limit: refuses a connection that already holds a slot
      [FLAKY_AUTH, { down: 'down@example.test' }],
      [STATIC_AUTH, { users: USERS }],
      ['relay-acl', { trustedNetworks: [] }],
    ],
  }
}

/** Connects from `ip`; the greeting tells whether the connection was taken. */
async function open(port: number, ip: string): Promise<{ client: RawSmtp; greeting: string }> {
  const c = await connectRaw(port, '127.0.0.1', 5000, undefined, ip)
  clients.add(c.client)
  return c
}

/** Connects from `ip`, EHLO, STARTTLS (verified), EHLO: ready for AUTH. */
async function tlsSession(port: number, ip: string): Promise<RawSmtp> {
  const { client, greeting } = await open(port, ip)
  expect(greeting).toMatch(/^220 /)
  expect(await client.command('EHLO client.test')).toMatch(/STARTTLS/)
  expect(await client.command('STARTTLS')).toMatch(/^220 /)
  await client.startTls({ ca: ca.caPem, servername: 'relay.test' })
  expect(await client.command('EHLO client.test')).toMatch(/AUTH PLAIN/)
  return client
}

const authPlain = (client: RawSmtp, user: string, pass: string) => client.command(`AUTH PLAIN ${b64(`\0${user}\0${pass}`)}`)

const message = (from: string, tag: string) => `From: ${from}\r\nTo: someone@dest.test\r\nSubject: ${tag}\r\n\r\nhello\r\n`

/** One authenticated message over STARTTLS from `ip`; the last reply. */
async function send(port: number, ip: string, user: string, to: string[] = ['someone@dest.test']): Promise<string> {
  const r = await sendMail(port, { from: user, to, data: message(user, `from ${user}`), starttls: { ca: ca.caPem, servername: 'relay.test' }, auth: { user, pass: PW }, localAddress: ip })
  return r.lastReply
}

const refusalLogged = (r: RelayProcess, limit: string, key: string) => r.waitForLog((l: LogLine) => l.limit === limit && l.key === key, 5000)

function closeClients(): void {
  for (const c of clients) c.close()
  clients.clear()
}

beforeAll(async () => {
  ca = makeCa()
  cert = ca.issue(['relay.test'])
  mx = await startReceiver({ host: '127.0.0.2' })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] } })
  const deadRedis = { redis: `redis://127.0.0.1:${await freePort()}`, timeout: '1s' }
  ;[relay, failOpen, failClosed] = await Promise.all([
    startRelay({ config: relayConfig({ store: 'memory', ...LIMITS }) }),
    startRelay({ config: relayConfig({ store: deadRedis, perIp: { concurrent: 1 } }) }),
    startRelay({ config: relayConfig({ store: deadRedis, perIp: { concurrent: 1 }, onStoreError: 'tempfail' }) }),
  ])
})

afterAll(async () => {
  closeClients()
  await Promise.all([relay, failOpen, failClosed].map((r) => r?.stop()))
  await Promise.all([dns?.close(), mx?.close()])
})

describe('rate-limit, memory store: per client address', () => {
  it('concurrent connections: the 4th gets 421 4.7.0; closing one frees exactly its slot; a refused one frees none', async () => {
    const ip = '127.0.0.21'
    const held = [await open(relay.port, ip), await open(relay.port, ip), await open(relay.port, ip)]
    for (const h of held) expect(h.greeting).toMatch(/^220 /)
    const refused = await open(relay.port, ip)
    expect(refused.greeting).toMatch(/^421 4\.7\.0 relay\.test Error: too many connections from 127\.0\.0\.21$/)
    await refused.client.closed // the relay hangs up after the 421
    await refusalLogged(relay, 'perIp.concurrent', ip)

    // One client leaves: its slot, and only its slot, comes back.
    expect(await held[0]!.client.command('QUIT')).toMatch(/^221 /)
    await held[0]!.client.closed
    const fourth = await eventually(async () => {
      const c = await open(relay.port, ip)
      if (c.greeting.startsWith('220 ')) return c
      c.client.close()
      return undefined
    }, 5000, 'a freed slot')
    expect(fourth.greeting).toMatch(/^220 /)
    // Back at 3: the refused connection gave back nothing it did not have.
    expect((await open(relay.port, ip)).greeting).toMatch(/^421 4\.7\.0 /)

    // Everyone leaves: all three slots are free again (no leak).
    for (const c of [held[1]!, held[2]!, fourth]) c.client.close()
    await eventually(async () => {
      const three = [await open(relay.port, ip), await open(relay.port, ip), await open(relay.port, ip)]
      const ok = three.every((c) => c.greeting.startsWith('220 '))
      for (const c of three) c.client.close()
      return ok
    }, 5000, 'three free slots')
    // Another address is not affected by this one's count.
    expect((await open(relay.port, '127.0.0.29')).greeting).toMatch(/^220 /)
    closeClients()
  })

  it('a connection another plugin refuses after rate-limit took its slot gives the slot back', async () => {
    const ip = '127.0.0.28'
    for (let i = 0; i < 6; i++) {
      const { client, greeting } = await open(relay.port, ip)
      expect(greeting, `connection ${i + 1}`).toMatch(/^554 5\.7\.1 /) // never 421: no slot leaked
      await client.closed
      await sleep(20)
    }
  })

  it('connections per minute: the 21st within the minute gets 421 4.7.0', async () => {
    const ip = '127.0.0.22'
    for (let i = 0; i < 20; i++) {
      const { client, greeting } = await open(relay.port, ip)
      expect(greeting, `connection ${i + 1}`).toMatch(/^220 /)
      await client.command('QUIT')
      await client.closed
    }
    const { greeting } = await open(relay.port, ip)
    expect(greeting).toMatch(/^421 4\.7\.0 relay\.test Error: too many connections per minute from 127\.0\.0\.22$/)
    await refusalLogged(relay, 'perIp.connectionsPerMinute', ip)
    closeClients()
  })

  it('AUTH failures: after 3 the address is locked out (454 4.7.0, even with the right password) until the lockout ends', async () => {
    const ip = '127.0.0.23'
    const s = await tlsSession(relay.port, ip)
    for (let i = 0; i < 3; i++) expect(await authPlain(s, 'frank@lock.test', 'wrong')).toMatch(/^535 5\.7\.8 /)
    // Locked out: the right password is refused too, in this session and in a new one.
    expect(await authPlain(s, 'frank@lock.test', PW)).toMatch(/^454 4\.7\.0 Error: too many failed authentications from 127\.0\.0\.23/)
    const s2 = await tlsSession(relay.port, ip)
    expect(await authPlain(s2, 'frank@lock.test', PW)).toMatch(/^454 4\.7\.0 /)
    expect(await authPlain(s2, 'alice@example.test', PW)).toMatch(/^454 4\.7\.0 /)
    await refusalLogged(relay, 'perIp.authFailures', ip)
    // Another address is not locked out.
    const other = await tlsSession(relay.port, '127.0.0.24')
    expect(await authPlain(other, 'frank@lock.test', PW)).toMatch(/^235 /)
    closeClients()
    // The lockout is 2 s, and refusals during it do not extend it: then the right password works.
    let reply = ''
    for (let i = 0; i < 8 && !reply.startsWith('235 '); i++) {
      await sleep(500)
      const t = await tlsSession(relay.port, ip)
      reply = await authPlain(t, 'frank@lock.test', PW)
      t.close()
    }
    expect(reply).toMatch(/^235 /)
    closeClients()
  })

  it('AUTH: a backend that tempfails (its database is down) does not count as failures', async () => {
    const ip = '127.0.0.25'
    const s = await tlsSession(relay.port, ip)
    for (let i = 0; i < 5; i++) expect(await authPlain(s, 'down@example.test', 'whatever')).toMatch(/^454 4\.7\.0 Authentication backend unavailable/)
    expect(await authPlain(s, 'alice@example.test', PW)).toMatch(/^235 /)
    closeClients()
  })
})

describe('rate-limit, memory store: per user and per sender domain', () => {
  it('messages per hour per user: the 4th gets 451 4.7.1; other users go on', async () => {
    const ip = '127.0.0.41'
    for (let i = 0; i < 3; i++) expect(await send(relay.port, ip, 'alice@example.test')).toMatch(/^250 2\.0\.0 Ok: queued as /)
    expect(await send(relay.port, ip, 'alice@example.test')).toMatch(/^451 4\.7\.1 Error: too many messages from alice@example\.test this hour/)
    await refusalLogged(relay, 'perUser.messagesPerHour', 'alice@example.test')
    expect(await send(relay.port, ip, 'carol@other.test')).toMatch(/^250 /)
  })

  it('messages per hour per user: one budget however the user spells the domain (U-label or A-label)', async () => {
    const ip = '127.0.0.47'
    const one = async (user: string) => {
      const client = await tlsSession(relay.port, ip)
      try {
        expect(await client.command(`AUTH PLAIN ${Buffer.from(`\0${user}\0${PW}`, 'utf8').toString('base64')}`)).toMatch(/^235 /)
        const mail = await client.command('MAIL FROM:<hana@xn--bcher-kva.test>')
        if (!mail.startsWith('250')) return mail
        expect(await client.command('RCPT TO:<someone@dest.test>')).toMatch(/^250 /)
        expect(await client.command('DATA')).toMatch(/^354 /)
        const reply = client.read()
        client.send(dotStuff(message('hana@xn--bcher-kva.test', `idn ${user}`)))
        return await reply
      } finally {
        client.close()
      }
    }
    expect(await one('hana@bücher.test')).toMatch(/^250 /)
    expect(await one('hana@xn--bcher-kva.test')).toMatch(/^250 /)
    expect(await one('hana@bücher.test')).toMatch(/^250 /)
    expect(await one('hana@xn--bcher-kva.test')).toMatch(/^451 4\.7\.1 /)
  })

  it('messages per hour per sender domain: across users of the domain; the 5th gets 451 4.7.1', async () => {
    // example.test: alice's 3 accepted messages count (her refused 4th does not), bob adds the 4th.
    const ip = '127.0.0.42'
    expect(await send(relay.port, ip, 'bob@example.test')).toMatch(/^250 /)
    expect(await send(relay.port, ip, 'bob@example.test')).toMatch(/^451 4\.7\.1 Error: too many messages from sender domain example\.test this hour/)
    await refusalLogged(relay, 'perSenderDomain.messagesPerHour', 'example.test')
    expect(await send(relay.port, ip, 'carol@other.test')).toMatch(/^250 /)
  })

  it('the count is made when the message is queued: two sessions racing for the last message, one wins', async () => {
    const ip = '127.0.0.43'
    for (let i = 0; i < 2; i++) expect(await send(relay.port, ip, 'dave@race.test')).toMatch(/^250 /)
    const sessions = [await tlsSession(relay.port, ip), await tlsSession(relay.port, ip)]
    for (const s of sessions) {
      expect(await authPlain(s, 'dave@race.test', PW)).toMatch(/^235 /)
      expect(await s.command('MAIL FROM:<dave@race.test>')).toMatch(/^250 /) // 2 of 3 used: both pass MAIL
      expect(await s.command('RCPT TO:<someone@dest.test>')).toMatch(/^250 /)
      expect(await s.command('DATA')).toMatch(/^354 /)
    }
    const replies = await Promise.all(
      sessions.map((s) => {
        const reply = s.read()
        s.send(dotStuff(message('dave@race.test', 'race')))
        return reply
      }),
    )
    expect(replies.filter((r) => r.startsWith('250 2.0.0 '))).toHaveLength(1)
    expect(replies.filter((r) => /^451 4\.7\.1 Error: too many messages from dave@race\.test/.test(r))).toHaveLength(1)
    closeClients()
  })

  it('recipients per hour per user: the recipient past the budget gets 450 4.7.1, the message goes to the others', async () => {
    const ip = '127.0.0.44'
    expect(await send(relay.port, ip, 'erin@rcpt.test', ['a@dest.test', 'b@dest.test', 'c@dest.test'])).toMatch(/^250 /)
    const s = await tlsSession(relay.port, ip)
    expect(await authPlain(s, 'erin@rcpt.test', PW)).toMatch(/^235 /)
    expect(await s.command('MAIL FROM:<erin@rcpt.test>')).toMatch(/^250 /)
    expect(await s.command('RCPT TO:<d@dest.test>')).toMatch(/^250 /)
    expect(await s.command('RCPT TO:<e@dest.test>')).toMatch(/^250 /)
    expect(await s.command('RCPT TO:<f@dest.test>')).toMatch(/^450 4\.7\.1 Error: too many recipients from erin@rcpt\.test this hour/)
    expect(await s.command('DATA')).toMatch(/^354 /)
    const reply = s.read()
    s.send(dotStuff(message('erin@rcpt.test', 'two of three')))
    expect(await reply).toMatch(/^250 2\.0\.0 /)
    // 5 of 5 recipients used: the next transaction is refused at MAIL.
    expect(await s.command('MAIL FROM:<erin@rcpt.test>')).toMatch(/^451 4\.7\.1 Error: too many recipients from erin@rcpt\.test/)
    await refusalLogged(relay, 'perUser.recipientsPerHour', 'erin@rcpt.test')
    closeClients()
  })
})

describe('rate-limit: options', () => {
  it('a bad option stops the start and names it', () => {
    const dir = tempDir()
    const file = path.join(dir, 'relay.config.json')
    const bad = { store: { redis: 'localhost:6379' }, perIp: { authFailures: { max: 5, window: '15x' } }, exempt: ['10.0.0.0/33'] }
    fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), plugins: [['rate-limit', bad]] }))
    const r = runCli(['check-config', '--config', file])
    expect(r.code).toBe(2)
    const out = r.stdout + r.stderr
    expect(out).toMatch(/plugins\[0\] \(rate-limit\) options\.perIp\.authFailures\.window: expected a duration/)
    expect(out).toMatch(/options\.store\.redis: expected a Redis URL/)
    expect(out).toMatch(/options\.exempt\[0\]: expected an IP address or CIDR block/)
  })
  it('check-config with a Redis store: config ok at once, no connection made (check mode starts nothing)', async () => {
    const connections = await connectionsDuring(async (port) => {
      const dir = tempDir()
      const file = path.join(dir, 'relay.config.json')
      const redis = `redis://127.0.0.1:${port}`
      fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), plugins: [['rate-limit', { store: { redis } }]] }))
      const started = Date.now()
      const r = await runCliAsync(['check-config', '--config', file])
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toMatch(/config ok/)
      expect(Date.now() - started).toBeLessThan(5000)
    })
    expect(connections).toBe(0)
  })
})

describe('rate-limit: exempt networks and store failures', () => {
  it('an exempt address is not limited (concurrency, connection rate, per-user budget)', async () => {
    const ip = '127.0.0.60'
    const many = await Promise.all(Array.from({ length: 6 }, () => open(relay.port, ip)))
    for (const c of many) expect(c.greeting).toMatch(/^220 /)
    closeClients()
    for (let i = 0; i < 22; i++) {
      const { client, greeting } = await open(relay.port, ip)
      expect(greeting).toMatch(/^220 /)
      client.close()
    }
    // alice spent her 3 messages from 127.0.0.41; from the exempt address she still sends.
    expect(await send(relay.port, ip, 'alice@example.test')).toMatch(/^250 /)
    closeClients()
  })

  it('the store fails (Redis unreachable): fail open by default (logged), or 421 with onStoreError: tempfail', async () => {
    const [open1, strict] = [failOpen, failClosed]
    try {
      await open1.waitForLog((l) => /Redis not reachable at start/.test(l.msg))
      const two = [await open(open1.port, '127.0.0.51'), await open(open1.port, '127.0.0.51')]
      for (const c of two) expect(c.greeting).toMatch(/^220 /)
      await open1.waitForLog((l) => /rate-limit store failed: allowing \(fail open\)/.test(l.msg))
      expect((await open(strict.port, '127.0.0.51')).greeting).toMatch(/^421 4\.7\.0 relay\.test Rate limit service unavailable, try again later/)
    } finally {
      closeClients()
      await Promise.all([open1.stop(), strict.stop()]) // the teardown closes the Redis client: no hang
    }
  })
})

// ---- Redis: one limit shared by several relays -------------------------------------------------

const PREFIX = `relay-rl-test-${process.pid}-${Date.now().toString(36)}`


function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

/** A TCP proxy to Redis that a test can cut (every connection dropped, nothing listening) and restore. */
async function redisProxy(target: URL) {
  const port = await freePort()
  const sockets = new Set<net.Socket>()
  let server: net.Server | undefined
  const start = () =>
    new Promise<void>((resolve, reject) => {
      server = net.createServer((inbound) => {
        const outbound = net.connect(Number(target.port || 6379), target.hostname)
        for (const s of [inbound, outbound]) {
          sockets.add(s)
          s.on('close', () => sockets.delete(s))
          s.on('error', () => undefined)
        }
        inbound.pipe(outbound).pipe(inbound)
        inbound.on('close', () => outbound.destroy())
        outbound.on('close', () => inbound.destroy())
      })
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => resolve())
    })
  await start()
  const url = new URL(target.href)
  url.host = `127.0.0.1:${port}`
  return {
    url: url.href,
    start,
    async cut() {
      await new Promise<void>((resolve) => {
        server!.close(() => resolve())
        for (const s of sockets) s.destroy()
      })
    },
  }
}

describe('rate-limit, Redis store (shared by relays)', () => {
  let available = false
  let relays: RelayProcess[] = []
  let proxied: RelayProcess | undefined
  let proxy: Awaited<ReturnType<typeof redisProxy>> | undefined

  beforeAll(async () => {
    const problem = await redisProblem()
    available = !problem
    if (problem) {
      skipFor(problem, 'the rate-limit Redis tests')
      return
    }
    const shared = { store: { redis: REDIS_URL }, keyPrefix: PREFIX, perIp: { concurrent: 2 }, perUser: { messagesPerHour: 4 } }
    proxy = await redisProxy(new URL(REDIS_URL))
    ;[relays, proxied] = await Promise.all([
      Promise.all([startRelay({ config: relayConfig(shared) }), startRelay({ config: relayConfig(shared) })]),
      startRelay({ config: relayConfig({ store: { redis: proxy.url }, keyPrefix: `${PREFIX}-proxied`, perIp: { concurrent: 1 } }) }),
    ])
  })

  afterAll(async () => {
    closeClients()
    await Promise.all([...relays, ...(proxied ? [proxied] : [])].map((r) => r.stop()))
    await proxy?.cut()
    if (!available) return
    // Leave nothing behind in the shared Redis.
    const r = new Redis(REDIS_URL)
    const keys = await r.keys(`${PREFIX}*`)
    if (keys.length) await r.del(...keys)
    await r.quit()
  })

  it('two relay processes, one Redis: a budget of 4 messages per hour is 4 across both', async () => {
    if (!available) return
    const [r1, r2] = relays as [RelayProcess, RelayProcess]
    for (const r of [r1, r2]) {
      const connected = await r.waitForLog((l) => l.msg === 'rate-limit store: Redis connected')
      expect(connected.protocol).toBe(3) // ioredis 6 talks RESP3 to this Redis, and the limiter works with it
    }
    const ip = '127.0.0.71'
    const accepted: string[] = []
    for (const r of [r1, r2, r1, r2]) accepted.push(await send(r.port, ip, 'gina@redis.test'))
    for (const reply of accepted) expect(reply).toMatch(/^250 2\.0\.0 /)
    expect(await send(r1.port, ip, 'gina@redis.test')).toMatch(/^451 4\.7\.1 Error: too many messages from gina@redis\.test/)
    expect(await send(r2.port, ip, 'gina@redis.test')).toMatch(/^451 4\.7\.1 /)
    await refusalLogged(r2, 'perUser.messagesPerHour', 'gina@redis.test')
    // The counter is in Redis, under the configured prefix.
    const r = new Redis(REDIS_URL)
    expect(await r.get(`${PREFIX}:user-msgs:gina@redis.test`)).toBe('4')
    await r.quit()
  })

  it('two relay processes, one Redis: concurrent connections per IP are counted across both', async () => {
    if (!available) return
    const [r1, r2] = relays as [RelayProcess, RelayProcess]
    const ip = '127.0.0.72'
    const a = await open(r1.port, ip)
    const b = await open(r2.port, ip)
    expect([a.greeting, b.greeting]).toEqual([expect.stringMatching(/^220 /), expect.stringMatching(/^220 /)])
    expect((await open(r1.port, ip)).greeting).toMatch(/^421 4\.7\.0 /)
    expect((await open(r2.port, ip)).greeting).toMatch(/^421 4\.7\.0 /)
    b.client.close()
    const c = await eventually(async () => {
      const x = await open(r1.port, ip)
      if (x.greeting.startsWith('220 ')) return x
      x.client.close()
      return undefined
    }, 5000, 'the slot freed on the other relay')
    expect(c.greeting).toMatch(/^220 /)
    closeClients()
  })

  it('Redis lost at runtime: the relay logs it and fails open; once Redis is back the limit holds again', async () => {
    if (!available) return
    const r = proxied!
    const ip = '127.0.0.73'
    await r.waitForLog((l) => l.msg === 'rate-limit store: Redis connected')
    const first = await open(r.port, ip)
    expect(first.greeting).toMatch(/^220 /)
    expect((await open(r.port, ip)).greeting).toMatch(/^421 4\.7\.0 /)
    first.client.close()
    // Its slot is given back in Redis before Redis goes away (the key disappears with its last slot).
    const probe = new Redis(REDIS_URL)
    await eventually(async () => (await probe.exists(`${PREFIX}-proxied:concurrent:slots:${ip}`)) === 0, 5000, 'the slot released in Redis')
    await probe.quit()
    closeClients()

    await proxy!.cut()
    const during = [await open(r.port, ip), await open(r.port, ip), await open(r.port, ip)]
    for (const c of during) expect(c.greeting).toMatch(/^220 /) // fail open: mail keeps flowing
    await r.waitForLog((l) => /rate-limit store failed: allowing \(fail open\)/.test(l.msg))
    expect(r.exited()).toBe(false)
    closeClients()

    await proxy!.start()
    await eventually(async () => {
      const x = await open(r.port, ip)
      const y = await open(r.port, ip)
      const enforced = x.greeting.startsWith('220 ') && y.greeting.startsWith('421 ')
      x.client.close()
      y.client.close()
      if (!enforced) await sleep(200)
      return enforced
    }, 8000, 'the limit to hold again after Redis came back')
    closeClients()
  })
})

// ---- IPv6: a client counts with its whole /64 (ipv6Prefix) ---------------------------------------
// One customer holds a /64: counted per address, it would take a fresh address for every
// connection and every password guess. A PROXY protocol listener (trusted balancer 127.0.0.1)
// lets the test claim any IPv6 client; each case uses its own /64s.

/** A session from the balancer claiming `client` (PROXY v1 TCP6): its greeting, and commands on it. */
interface Proxied {
  greeting: string
  command(line: string): Promise<string>
  close(): void
  closed: Promise<void>
}
const proxiedSockets = new Set<net.Socket>()

function viaProxy(port: number, client: string): Promise<Proxied> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' }, () => socket.write(`PROXY TCP6 ${client} 2001:db8::25 40123 25\r\n`))
    proxiedSockets.add(socket)
    let buffer = ''
    const waiting: ((line: string) => void)[] = []
    const closed = new Promise<void>((done) => socket.once('close', () => done()))
    socket.on('error', reject)
    socket.on('close', () => {
      for (const w of waiting.splice(0)) w('(closed)')
    })
    socket.on('data', (d) => {
      buffer += d.toString('latin1')
      let i: number
      while ((i = buffer.indexOf('\r\n')) >= 0) {
        const line = buffer.slice(0, i)
        buffer = buffer.slice(i + 2)
        if (/^\d{3}-/.test(line)) continue
        waiting.shift()?.(line)
      }
    })
    const read = () => new Promise<string>((r) => waiting.push(r))
    const session = {
      command: (line: string) => {
        const p = read()
        socket.write(`${line}\r\n`)
        return p
      },
      close: () => socket.destroy(),
      closed,
    }
    read().then((greeting) => resolve({ greeting, ...session }), reject)
  })
}

function closeProxied(): void {
  for (const s of proxiedSockets) s.destroy()
  proxiedSockets.clear()
}

/** One proxied connection, closed again: its greeting. */
async function greetingFrom(port: number, client: string): Promise<string> {
  const c = await viaProxy(port, client)
  c.close()
  await c.closed
  return c.greeting
}

/** One proxied session that tries AUTH PLAIN once and leaves: the AUTH reply. */
async function authFrom(port: number, client: string, user: string, pass: string): Promise<string> {
  const c = await viaProxy(port, client)
  expect(c.greeting, `greeting for ${client}`).toMatch(/^220 /)
  expect(await c.command('EHLO client.test')).toMatch(/^250 /)
  const reply = await c.command(`AUTH PLAIN ${b64(`\0${user}\0${pass}`)}`)
  c.close()
  await c.closed
  return reply
}

describe('rate-limit: an IPv6 client counts with its /64 (ipv6Prefix), an IPv4 one by its address', () => {
  const V6 = { perIp: { concurrent: 2, connectionsPerMinute: 6, authFailures: { max: 3, window: '1m', lockout: '1m' } } }
  let per64: RelayProcess // memory store, ipv6Prefix default (64)
  let per128: RelayProcess // memory store, ipv6Prefix: 128 (per address)
  let workers: RelayProcess // memory store in the primary, workers: 2
  let redis: RelayProcess | undefined // Redis store (when Redis is there)
  const REDIS_PREFIX = `${PREFIX}-v6`

  const v6Config = (rateLimit: Record<string, unknown>, more: Record<string, unknown> = {}) => ({
    ...more,
    // AUTH in clear text keeps the test short; the balancer at 127.0.0.1 may claim any client.
    listen: [{ host: '127.0.0.1', port: 0, role: 'mx', tls: 'none', allowPlaintextAuth: true, proxyProtocol: ['127.0.0.1'] }],
    dns: { servers: [dns.server], timeout: '1s' },
    smtp: { reverseLookup: false, authFailureDelay: '1ms' },
    plugins: [
      ['rate-limit', rateLimit],
      [STATIC_AUTH, { users: USERS }],
    ],
  })

  beforeAll(async () => {
    const redisThere = !(await redisProblem())
    ;[per64, per128, workers, redis] = await Promise.all([
      startRelay({ config: v6Config(V6) }),
      startRelay({ config: v6Config({ ...V6, ipv6Prefix: 128 }) }),
      startRelay({ config: v6Config(V6, { workers: 2 }) }),
      redisThere ? startRelay({ config: v6Config({ ...V6, store: { redis: REDIS_URL }, keyPrefix: REDIS_PREFIX }) }) : undefined,
    ])
  })

  afterAll(async () => {
    closeProxied()
    await Promise.all([per64, per128, workers, redis].map((r) => r?.stop()))
    if (!redis) return
    const r = new Redis(REDIS_URL)
    const keys = await r.keys(`${REDIS_PREFIX}*`)
    if (keys.length) await r.del(...keys)
    await r.quit()
  })

  const relays = () => [
    ['memory store', per64],
    ['workers: 2', workers],
    ['Redis store', redis],
  ] as const

  it.each([0, 1, 2])('AUTH failures from several addresses of one /64 lock the /64 out, not another /64 (%#: memory, workers, Redis)', async (n) => {
    const [, r] = relays()[n]!
    if (!r) return void skipFor('no Redis', 'the IPv6 Redis case')
    const net64 = `2001:db8:${n + 1}:2::`
    for (let i = 1; i <= 3; i++) expect(await authFrom(r.port, `${net64}${i}`, 'frank@lock.test', 'wrong'), `failure ${i}`).toMatch(/^535 5\.7\.8 /)
    await r.waitForLog((l) => l.msg === 'rate limit hit: perIp.authFailures (address locked out)' && l.key === `${net64}/64` && l.client === `${net64}3`, 5000)
    // Another address of the same /64: locked out too, even with the right password; the reply names the address.
    expect(await authFrom(r.port, `${net64}4`, 'frank@lock.test', PW)).toMatch(new RegExp(`^454 4\\.7\\.0 Error: too many failed authentications from ${net64}4,`))
    expect(await authFrom(r.port, `2001:db8:${n + 1}:2:abcd:1234:5678:9abc`, 'alice@example.test', PW)).toMatch(/^454 4\.7\.0 /)
    // The neighbouring /64 is another client.
    expect(await authFrom(r.port, `2001:db8:${n + 1}:3::1`, 'frank@lock.test', PW)).toMatch(/^235 /)
  })

  it.each([0, 1, 2])('connections per minute: 6 from one /64, whichever addresses, then 421 4.7.0; another /64 connects (%#: memory, workers, Redis)', async (n) => {
    const [, r] = relays()[n]!
    if (!r) return void skipFor('no Redis', 'the IPv6 Redis case')
    const net64 = `2001:db8:7:${n + 7}::`
    for (let i = 1; i <= 6; i++) expect(await greetingFrom(r.port, `${net64}${i}`), `connection ${i}`).toMatch(/^220 /)
    expect(await greetingFrom(r.port, `${net64}7`)).toMatch(new RegExp(`^421 4\\.7\\.0 \\S+ Error: too many connections per minute from ${net64}7$`))
    expect(await greetingFrom(r.port, `${net64}ffff:ffff:ffff:ffff`)).toMatch(/^421 4\.7\.0 /)
    await r.waitForLog((l) => l.limit === 'perIp.connectionsPerMinute' && l.key === `${net64}/64`, 5000)
    expect(await greetingFrom(r.port, `2001:db8:7:${n + 17}::1`)).toMatch(/^220 /)
  })

  it.each([0, 1, 2])('concurrent: 2 open from one /64 and the third address of it is refused; another /64 is not (%#: memory, workers, Redis)', async (n) => {
    const [, r] = relays()[n]!
    if (!r) return void skipFor('no Redis', 'the IPv6 Redis case')
    const net64 = `2001:db8:c:${n + 1}::`
    const held = [await viaProxy(r.port, `${net64}1`), await viaProxy(r.port, `${net64}2`)]
    for (const h of held) expect(h.greeting).toMatch(/^220 /)
    expect(await greetingFrom(r.port, `${net64}3`)).toMatch(new RegExp(`^421 4\\.7\\.0 \\S+ Error: too many connections from ${net64}3$`))
    expect((await viaProxy(r.port, `2001:db8:c:${n + 11}::1`)).greeting).toMatch(/^220 /)
    // One leaves: its slot comes back to the /64.
    held[0]!.close()
    await held[0]!.closed
    const again = await eventually(async () => {
      const c = await viaProxy(r.port, `${net64}4`)
      if (c.greeting.startsWith('220 ')) return c
      c.close()
      await sleep(100)
      return undefined
    }, 5000, 'the freed slot')
    expect(again.greeting).toMatch(/^220 /)
    closeProxied()
  })

  it('with Redis the counters are kept under the /64 key', async () => {
    if (!redis) return void skipFor('no Redis', 'the IPv6 Redis case')
    const probe = new Redis(REDIS_URL)
    expect(await probe.get(`${REDIS_PREFIX}:auth-fail:2001:db8:3:2::/64`)).not.toBeNull()
    expect(Number(await probe.get(`${REDIS_PREFIX}:conn-rate:2001:db8:7:9::/64`))).toBeGreaterThanOrEqual(7)
    await probe.quit()
  })

  it('ipv6Prefix: 128 counts every IPv6 address on its own again', async () => {
    const r = per128
    for (let i = 1; i <= 3; i++) expect(await authFrom(r.port, `2001:db8:80:1::${i}`, 'frank@lock.test', 'wrong')).toMatch(/^535 5\.7\.8 /)
    expect(await authFrom(r.port, `2001:db8:80:1::4`, 'frank@lock.test', PW)).toMatch(/^235 /)
    for (let i = 1; i <= 8; i++) expect(await greetingFrom(r.port, `2001:db8:80:2::${i}`), `connection ${i}`).toMatch(/^220 /)
    const held = [await viaProxy(r.port, '2001:db8:80:3::1'), await viaProxy(r.port, '2001:db8:80:3::2'), await viaProxy(r.port, '2001:db8:80:3::3')]
    for (const h of held) expect(h.greeting).toMatch(/^220 /)
    // Still limited per address: the same address a third time.
    await viaProxy(r.port, '2001:db8:80:3::1')
    expect(await greetingFrom(r.port, '2001:db8:80:3::1')).toMatch(/^421 4\.7\.0 .*too many connections from 2001:db8:80:3::1$/)
    closeProxied()
  })

  it('ipv6Prefix: 1 to 128 is taken; outside that it stops the start and is named', async () => {
    // The six check-config runs at once.
    const check = async (ipv6Prefix: number | string) => {
      const dir = tempDir()
      const file = path.join(dir, 'relay.config.json')
      fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), plugins: [['rate-limit', { ipv6Prefix }]] }))
      return [ipv6Prefix, await runCliAsync(['check-config', '--config', file])] as const
    }
    const [goods, bads] = await Promise.all([Promise.all([1, 56, 128].map(check)), Promise.all([0, 129, 'x'].map(check))])
    for (const [good, r] of goods) expect(r.code, String(good)).toBe(0)
    for (const [bad, r] of bads) {
      expect(r.code, String(bad)).toBe(2)
      expect(r.stdout + r.stderr).toMatch(/plugins\[0\] \(rate-limit\) options\.ipv6Prefix: /)
    }
  })

  it('IPv4 clients stay per address, and an IPv4-mapped IPv6 client counts as its IPv4 address', async () => {
    const r = per64
    // Two IPv4 neighbours do not share a count.
    for (const ip of ['203.0.113.1', '203.0.113.2', '203.0.113.3']) {
      const c = await new Promise<string>((resolve, reject) => {
        const s = net.connect({ port: r.port, host: '127.0.0.1' }, () => s.write(`PROXY TCP4 ${ip} 192.0.2.25 40123 25\r\n`))
        proxiedSockets.add(s)
        s.on('error', reject)
        s.once('data', (d) => resolve(d.toString('latin1')))
      })
      expect(c, ip).toMatch(/^220 /)
    }
    closeProxied()
    // ::ffff:198.51.100.7 is 198.51.100.7: two of them and a plain IPv4 one fill its 2 slots.
    const a = await viaProxy(r.port, '::ffff:198.51.100.7')
    expect(a.greeting).toMatch(/^220 /)
    const b = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ port: r.port, host: '127.0.0.1' }, () => s.write('PROXY TCP4 198.51.100.7 192.0.2.25 40123 25\r\n'))
      proxiedSockets.add(s)
      s.on('error', reject)
      s.once('data', (d) => resolve(d.toString('latin1')))
    })
    expect(b).toMatch(/^220 /)
    expect(await greetingFrom(r.port, '::ffff:198.51.100.7')).toMatch(/^421 4\.7\.0 .*too many connections from 198\.51\.100\.7$/)
    closeProxied()
  })
})
