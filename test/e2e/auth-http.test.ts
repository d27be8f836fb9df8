// auth-http against a real HTTP service on 127.0.0.1 (node:http) that answers per user name,
// counts its requests and can be made slow or broken, through the built relay's submission
// listener: STARTTLS with a certificate from a test CA, AUTH, then MAIL FROM to see the senders
// from the service enforced.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { connectRaw, type RawSmtp } from '../harness/smtp-client.js'
import { runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { makeCa, type TestCa } from '../harness/tls.js'

const ALICE = { user: 'alice@example.com', pass: 'alice-Http-Secret-1' }
const NOSENDERS = { user: 'nosenders@example.net', pass: 'ns-Http-Secret-2' }
const CAROL = { user: 'carol@example.com', pass: 'carol-Http-Secret-3' }

interface Seen {
  path: string
  method: string
  headers: http.IncomingHttpHeaders
  body: { username?: string; password?: string; method?: string; client?: string }
}

/** The auth service: answers by user name; `broken` makes it answer 500 to everyone. */
class AuthService {
  readonly seen: Seen[] = []
  broken = false
  private server!: http.Server
  private readonly timers = new Set<NodeJS.Timeout>()
  url = ''

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        let body: Seen['body'] = {}
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Seen['body']
        } catch {
          // recorded as {}
        }
        this.seen.push({ path: req.url ?? '', method: req.method ?? '', headers: req.headers, body })
        this.answer(body, res)
      })
    })
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/smtp-auth`
  }

  private answer(body: Seen['body'], res: http.ServerResponse): void {
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify(value))
    }
    if (this.broken) return json(500, { error: 'database on fire' })
    const { username, password } = body
    switch (username) {
      case ALICE.user:
        return password === ALICE.pass ? json(200, { ok: true, senders: [ALICE.user, 'example.org'] }) : json(401, { ok: false })
      case NOSENDERS.user:
        return password === NOSENDERS.pass ? json(200, { ok: true }) : json(401, { ok: false })
      case CAROL.user:
        return password === CAROL.pass ? json(200, { ok: true, senders: ['*'] }) : json(401, { ok: false })
      case 'refused-in-body':
        return json(200, { ok: false })
      case 'forbidden':
        return json(403, { error: 'locked' })
      case 'boom':
        return json(500, { error: 'oops' })
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' })
        return void res.end('{"ok": tru')
      case 'not-a-verdict':
        return json(200, { status: 'fine' })
      case 'redirect':
        res.writeHead(307, { location: 'http://127.0.0.1:1/elsewhere' })
        return void res.end()
      case 'trickle': {
        // Headers at once, then half a body and nothing more.
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"ok":')
        return
      }
      case 'slow': {
        const t = setTimeout(() => {
          this.timers.delete(t)
          json(200, { ok: true })
        }, 3000)
        this.timers.add(t)
        return
      }
      default:
        return json(401, { ok: false })
    }
  }

  count(username: string): number {
    return this.seen.filter((s) => s.body.username === username).length
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t)
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

let ca: TestCa
let cert: { key: string; cert: string }
let service: AuthService
const relays: RelayProcess[] = []

beforeAll(async () => {
  ca = makeCa()
  cert = ca.issue(['relay.test'])
  service = new AuthService()
  await service.start()
})

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
  service.broken = false
})

afterAll(async () => {
  await service?.close()
})

async function relayWith(pluginOptions: Record<string, unknown>): Promise<RelayProcess> {
  const relay = await startRelay({
    config: {
      listen: [{ host: '127.0.0.1', port: 0, role: 'submission', tls: 'starttls' }],
      tls: { cert: cert.cert, key: cert.key },
      smtp: { reverseLookup: false, authFailureDelay: '10ms' },
      plugins: [['auth-http', pluginOptions]],
    },
  })
  relays.push(relay)
  return relay
}

/** Connects, STARTTLS (verified against the test CA), EHLO, then AUTH PLAIN or LOGIN; gives the AUTH reply and its time. */
async function login(port: number, user: string, pass: string, mech: 'PLAIN' | 'LOGIN' = 'PLAIN'): Promise<{ client: RawSmtp; reply: string; ms: number }> {
  const { client, greeting } = await connectRaw(port)
  expect(greeting).toMatch(/^220 /)
  expect(await client.command('EHLO client.test')).toMatch(/^250-STARTTLS$/m)
  expect(await client.command('STARTTLS')).toMatch(/^220 /)
  await client.startTls({ ca: ca.caPem, servername: 'relay.test' })
  expect(await client.command('EHLO client.test')).toMatch(/^250-AUTH PLAIN LOGIN$/m)
  const b64 = (s: string) => Buffer.from(s).toString('base64')
  const started = performance.now()
  let reply: string
  if (mech === 'PLAIN') {
    reply = await client.command(`AUTH PLAIN ${b64(`\0${user}\0${pass}`)}`, 10_000)
  } else {
    expect(await client.command('AUTH LOGIN')).toMatch(/^334 /)
    expect(await client.command(b64(user))).toMatch(/^334 /)
    reply = await client.command(b64(pass), 10_000)
  }
  return { client, reply, ms: performance.now() - started }
}

async function authReply(port: number, user: string, pass: string, mech: 'PLAIN' | 'LOGIN' = 'PLAIN'): Promise<string> {
  const { client, reply } = await login(port, user, pass, mech)
  client.close()
  return reply
}

const failureLog = (relay: RelayProcess, user: string) =>
  relay.waitForLog((l) => l.plugin === 'auth-http' && l.level === 50 && l.user === user && /auth service failed/.test(l.msg))

describe('auth-http', () => {
  it('good credentials: 235, the request carries user, password, method, client and the configured headers; senders enforced', async () => {
    const relay = await relayWith({ url: service.url, headers: { 'X-Relay-Key': 'k-123' } })
    const before = service.seen.length
    const { client, reply } = await login(relay.port, ALICE.user, ALICE.pass)
    expect(reply).toMatch(/^235 2\.7\.0/)
    expect(service.seen.length).toBe(before + 1)
    const req = service.seen.at(-1)!
    expect(req.method).toBe('POST')
    expect(req.path).toBe('/smtp-auth')
    expect(req.headers['content-type']).toBe('application/json')
    expect(req.headers['x-relay-key']).toBe('k-123')
    expect(req.body).toEqual({ username: ALICE.user, password: ALICE.pass, method: 'PLAIN', client: '127.0.0.1' })
    // senders [alice@example.com, example.org]
    expect(await client.command('MAIL FROM:<mallory@evil.test>')).toMatch(/^553 5\.7\.1 /)
    expect(await client.command('MAIL FROM:<bob@example.com>')).toMatch(/^553 5\.7\.1 /)
    expect(await client.command('MAIL FROM:<alice@example.com>')).toMatch(/^250 /)
    expect(await client.command('RSET')).toMatch(/^250 /)
    expect(await client.command('MAIL FROM:<news@example.org>')).toMatch(/^250 /)
    client.close()

    // No senders in the answer: the relay's default, the user name; the mechanism is passed on.
    const ns = await login(relay.port, NOSENDERS.user, NOSENDERS.pass, 'LOGIN')
    expect(ns.reply).toMatch(/^235 /)
    expect(service.seen.at(-1)!.body.method).toBe('LOGIN')
    expect(await ns.client.command('MAIL FROM:<other@example.net>')).toMatch(/^553 5\.7\.1 /)
    expect(await ns.client.command(`MAIL FROM:<${NOSENDERS.user}>`)).toMatch(/^250 /)
    ns.client.close()
  })

  it('refusals: 401, 403 and {"ok": false} all give 535 5.7.8', async () => {
    const relay = await relayWith({ url: service.url })
    expect(await authReply(relay.port, ALICE.user, 'wrong')).toMatch(/^535 5\.7\.8 /)
    expect(await authReply(relay.port, 'forbidden', 'x')).toMatch(/^535 5\.7\.8 /)
    expect(await authReply(relay.port, 'refused-in-body', 'x')).toMatch(/^535 5\.7\.8 /)
    expect(await authReply(relay.port, 'unknown@example.com', 'x')).toMatch(/^535 5\.7\.8 /)
  })

  it('cache: a second login within cacheTtl makes no request; wrong passwords are never cached; the password is in no log', async () => {
    const relay = await relayWith({ url: service.url })
    expect(await authReply(relay.port, ALICE.user, ALICE.pass)).toMatch(/^235 /)
    expect(service.count(ALICE.user)).toBeGreaterThanOrEqual(1)
    const afterFirst = service.count(ALICE.user)

    // Remembered, senders included.
    const again = await login(relay.port, ALICE.user, ALICE.pass)
    expect(again.reply).toMatch(/^235 /)
    expect(await again.client.command('MAIL FROM:<mallory@evil.test>')).toMatch(/^553 5\.7\.1 /)
    expect(await again.client.command('MAIL FROM:<alice@example.com>')).toMatch(/^250 /)
    again.client.close()
    expect(service.count(ALICE.user)).toBe(afterFirst)

    // Wrong password: asked each time.
    expect(await authReply(relay.port, ALICE.user, 'guess-1')).toMatch(/^535 5\.7\.8 /)
    expect(await authReply(relay.port, ALICE.user, 'guess-1')).toMatch(/^535 5\.7\.8 /)
    expect(service.count(ALICE.user)).toBe(afterFirst + 2)

    // The service breaks: the remembered login still works, anything new tempfails.
    service.broken = true
    expect(await authReply(relay.port, ALICE.user, ALICE.pass)).toMatch(/^235 /)
    expect(service.count(ALICE.user)).toBe(afterFirst + 2)
    expect(await authReply(relay.port, CAROL.user, CAROL.pass)).toMatch(/^454 4\.7\.0 /)
    expect(service.count(CAROL.user)).toBe(1)
    // ...and a failure is not cached either: once the service is back, CAROL is asked again.
    service.broken = false
    expect(await authReply(relay.port, CAROL.user, CAROL.pass)).toMatch(/^235 /)
    expect(service.count(CAROL.user)).toBe(2)

    await failureLog(relay, CAROL.user)
    const logs = relay.logs.map((l) => JSON.stringify(l)).join('\n')
    for (const p of [ALICE.pass, CAROL.pass, 'guess-1']) expect(logs).not.toContain(p)
  })

  it('cacheTtl expires: after it a login asks the service again', async () => {
    const relay = await relayWith({ url: service.url, cacheTtl: '300ms' })
    const start = service.count(NOSENDERS.user)
    expect(await authReply(relay.port, NOSENDERS.user, NOSENDERS.pass)).toMatch(/^235 /)
    expect(service.count(NOSENDERS.user)).toBe(start + 1)
    await new Promise((r) => setTimeout(r, 600))
    expect(await authReply(relay.port, NOSENDERS.user, NOSENDERS.pass)).toMatch(/^235 /)
    expect(service.count(NOSENDERS.user)).toBe(start + 2)
  })

  it('service failures give 454 4.7.0 with an error log: 500, bad JSON, wrong JSON shape, redirect, stalled body, timeout', async () => {
    const relay = await relayWith({ url: service.url, timeout: '500ms' })
    for (const user of ['boom', 'garbage', 'not-a-verdict', 'redirect']) {
      expect(await authReply(relay.port, user, 'x'), user).toMatch(/^454 4\.7\.0 /)
      await failureLog(relay, user)
    }
    // The timeout covers the body as well as the headers.
    const trickle = await login(relay.port, 'trickle', 'x')
    expect(trickle.reply).toMatch(/^454 4\.7\.0 /)
    expect(trickle.ms).toBeLessThan(2000)
    trickle.client.close()
    expect((await failureLog(relay, 'trickle')).reason).toMatch(/no answer within 500 ms/)
    const slow = await login(relay.port, 'slow', 'x')
    expect(slow.reply).toMatch(/^454 4\.7\.0 /)
    expect(slow.ms).toBeGreaterThanOrEqual(450)
    expect(slow.ms).toBeLessThan(2000) // the service would answer after 3 s
    slow.client.close()
    expect((await failureLog(relay, 'slow')).reason).toMatch(/no answer within 500 ms/)
    // The relay is unharmed: a good login right after.
    expect(await authReply(relay.port, ALICE.user, ALICE.pass)).toMatch(/^235 /)
    expect(relay.exited()).toBe(false)
  })

  it('service not listening (connection refused): 454 4.7.0, an error log, no crash', async () => {
    // A port that was free a moment ago (fetch refuses to dial 'bad ports' such as 1 at all).
    const probe = http.createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const closedPort = (probe.address() as AddressInfo).port
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    const relay = await relayWith({ url: `http://127.0.0.1:${closedPort}/smtp-auth` })
    const { client, reply, ms } = await login(relay.port, ALICE.user, ALICE.pass)
    expect(reply).toMatch(/^454 4\.7\.0 /)
    expect(ms).toBeLessThan(2000)
    // Again in the same session: still answered.
    expect(await client.command(`AUTH PLAIN ${Buffer.from(`\0${ALICE.user}\0${ALICE.pass}`).toString('base64')}`)).toMatch(/^454 4\.7\.0 /)
    client.close()
    expect(String((await failureLog(relay, ALICE.user)).reason)).toMatch(/ECONNREFUSED/)
    expect(relay.exited()).toBe(false)
  })

  it('a url with a user name and password is refused by check-config (naming the key, pointing at headers), without echoing it', () => {
    const dir = tempDir()
    const file = path.join(dir, 'relay.config.json')
    const check = (url: string) => {
      fs.writeFileSync(file, JSON.stringify({ dataDir: path.join(dir, 'data'), plugins: [['auth-http', { url }]] }))
      return runCli(['check-config', '--config', file])
    }
    for (const url of ['http://user:Pw-s3cret@127.0.0.1:6591/auth?key=qsecret', 'https://:Pw-s3cret@auth.example.com/smtp']) {
      const r = check(url)
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(auth-http\) options\.url: must not hold a user name or password .*`headers`/m)
      expect(r.stdout + r.stderr).not.toContain('Pw-s3cret')
      expect(r.stdout + r.stderr).not.toContain('qsecret')
    }
    // A key in the query string is the service's business: accepted (never logged: the log line has origin and path only).
    expect(check('http://127.0.0.1:6591/auth?key=qsecret').code).toBe(0)
  })
})
