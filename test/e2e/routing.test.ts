// The routing plugin (transport map): smarthosts with AUTH over implicit TLS and over STARTTLS,
// matching by recipient domain (exact, wildcard, regex) and by sender, source address and EHLO
// name per route, IP pools (round-robin, weighted), and LMTP with per-recipient replies.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerOptions } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { eventually, startRelay, tempDir, type LogLine, type RelayProcess } from '../harness/relay.js'

const IMPLICIT_PASS = 'S3cret-implicit-Pw!'
const STARTTLS_PASS = 'S3cret-starttls-Pw!'
const WRONG_PASS = 'WRONG-pass-4242'

let ca: TestCa
let dns: TestDns
let implicitRx: TestReceiver // 127.0.0.2: smarthost, implicit TLS, AUTH required
let starttlsRx: TestReceiver // 127.0.0.2: smarthost, STARTTLS then AUTH required
let mxRx: TestReceiver // 127.0.0.4: the MX of the ordinary domains
let senderRx: TestReceiver // 127.0.0.6: where DSNs go
let lmtp: SMTPServer // 127.0.0.5: LMTP, answers per recipient
let lmtpPort: number
let lmtpSock: SMTPServer // LMTP on a unix socket
let lmtpLocal: SMTPServer // 127.0.0.1: LMTP reached as localhost (no DNS)
let lmtpLocalPort: number
const localReceived: { to: string[] }[] = []
let sockPath: string
const lmtpReceived: { to: string[]; lhlo: string }[] = []
const sockReceived: { to: string[] }[] = []
const authSeen: { server: string; user: string; pass: string }[] = []
let relay: RelayProcess

const msg = (subject: string) => `From: a@sender.test\r\nTo: x@y.test\r\nSubject: ${subject}\r\n\r\nbody\r\n`

function onAuth(server: string, pass: string) {
  return (auth: SMTPServerAuthentication, _session: unknown, cb: (err: Error | null | undefined, res?: { user: string }) => void) => {
    authSeen.push({ server, user: auth.username ?? '', pass: auth.password ?? '' })
    if (auth.username === 'apikey' && auth.password === pass) return cb(null, { user: 'apikey' })
    cb(Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 }))
  }
}

function collect(stream: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve) => {
    stream.on('data', () => undefined)
    stream.on('end', resolve)
  })
}

async function listen(server: SMTPServer, ...args: unknown[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject)
    ;(server.listen as (...a: unknown[]) => void)(...args, () => resolve())
  })
}

const event = (name: string, recipient: string, timeoutMs = 15_000): Promise<LogLine> =>
  relay.waitForLog((l) => l.event === name && l.recipient === recipient, timeoutMs)

beforeAll(async () => {
  ca = makeCa()
  const cert = ca.issue(['smarthost.test'])
  const tlsFiles = { key: fs.readFileSync(cert.key), cert: fs.readFileSync(cert.cert) }
  const smarthost = (server: string, pass: string, extra: SMTPServerOptions): Record<string, unknown> => ({
    ...tlsFiles,
    authMethods: ['PLAIN', 'LOGIN'],
    authOptional: false,
    onAuth: onAuth(server, pass),
    ...extra,
  })
  implicitRx = await startReceiver({ host: '127.0.0.2', serverOptions: smarthost('implicit', IMPLICIT_PASS, { secure: true }) })
  starttlsRx = await startReceiver({ host: '127.0.0.2', serverOptions: smarthost('starttls', STARTTLS_PASS, {}) })
  mxRx = await startReceiver({ host: '127.0.0.4', behaviour: { noStartTls: true } })
  senderRx = await startReceiver({ host: '127.0.0.6', port: mxRx.port, behaviour: { noStartTls: true } })

  // LMTP: one reply per recipient after the message; 'nouser' is refused for good, 'full' for now.
  const perRecipient = (to: string[]) =>
    to.map((rcpt) =>
      rcpt.startsWith('nouser@')
        ? Object.assign(new Error('5.1.1 <' + rcpt + '>: no such user'), { responseCode: 550 })
        : rcpt.startsWith('full@')
          ? Object.assign(new Error('4.2.2 <' + rcpt + '>: mailbox full'), { responseCode: 452 })
          : `2.0.0 <${rcpt}> saved`,
    )
  /** An LMTP mail store; `reply` answers the message for its recipients. */
  const store = (reply: (to: string[], lhlo: string) => unknown) =>
    new SMTPServer({
      lmtp: true,
      logger: false,
      disableReverseLookup: true,
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      onData(stream, session, cb) {
        const answer = reply(session.envelope.rcptTo.map((r) => r.address), String(session.hostNameAppearsAs))
        void collect(stream).then(() => cb(null, answer as string))
      },
    })
  lmtp = store((to, lhlo) => (lmtpReceived.push({ to, lhlo }), perRecipient(to)))
  await listen(lmtp, 0, '127.0.0.5')
  lmtpPort = (lmtp.server.address() as { port: number }).port
  sockPath = path.join(tempDir('relay-lmtp-'), 'lmtp.sock')
  lmtpSock = store((to) => (sockReceived.push({ to }), 'saved'))
  await listen(lmtpSock, sockPath)
  lmtpLocal = store((to) => (localReceived.push({ to }), 'saved'))
  await listen(lmtpLocal, 0, '127.0.0.1')
  lmtpLocalPort = (lmtpLocal.server.address() as { port: number }).port

  dns = await startDns({
    'smarthost.test': { A: ['127.0.0.2'] },
    'starttls.test': { A: ['127.0.0.4'] },
    'shop12.example': { MX: [{ exchange: 'mx.shops.test', priority: 10 }] },
    'shopx.example': { MX: [{ exchange: 'mx.shops.test', priority: 10 }] },
    'mx.shops.test': { A: ['127.0.0.4'] },
    'pool.test': { A: ['127.0.0.4'] },
    'sender.test': { A: ['127.0.0.6'] },
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mxRx.port, tlsCa: ca.caFile, retry: { base: '1h' }, connectTimeout: '3s' },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        [
          'routing',
          {
            routes: [
              // an exact sender address, before the domain routes: a smarthost with the wrong password
              { name: 'wrong-password', match: { sender: 'badauth@sender.test' }, kind: 'smarthost', host: `smarthost.test:${starttlsRx.port}`, tls: 'starttls', auth: { user: 'apikey', pass: WRONG_PASS } },
              { name: 'implicit', match: { domain: 'implicit.test' }, kind: 'smarthost', host: 'smarthost.test', port: implicitRx.port, tls: 'implicit', auth: { user: 'apikey', passEnv: 'RELAY_TEST_SMARTHOST_PASS' } },
              { name: 'starttls', match: { domain: '*.starttls.test' }, kind: 'smarthost', host: `[smarthost.test]:${starttlsRx.port}` /* Postfix's relayhost form */, tls: 'starttls', auth: { user: 'apikey', pass: STARTTLS_PASS } },
              { name: 'shops', match: { domain: '/^shop[0-9]+\\.example$/' }, localAddress: '127.0.0.7', helo: 'out7.relay.test' },
              { name: 'newsletters', match: { sender: 'marketing.sender.test' }, kind: 'mx', pool: { addresses: [{ address: '127.0.0.8', helo: 'out8.relay.test' }, { address: '127.0.0.9', helo: 'out9.relay.test' }] } },
              { name: 'bulk', match: { sender: '/^bulk-[0-9]+@sender\\.test$/' }, kind: 'mx', pool: { strategy: 'weighted', addresses: [{ address: '127.0.0.10', weight: 2 }, '127.0.0.11'] } },
              { name: 'store', match: { domain: 'store.test' }, kind: 'lmtp', host: `127.0.0.5:${lmtpPort}` },
              { name: 'socket-store', match: { domain: 'sock.test' }, kind: 'lmtp', socket: sockPath },
              // 'localhost' is not in the test DNS: it is the loopback without asking (RFC 6761).
              { name: 'local-store', match: { domain: 'localstore.test' }, kind: 'lmtp', host: `localhost:${lmtpLocalPort}` },
            ],
          },
        ],
      ],
    },
    env: { RELAY_TEST_SMARTHOST_PASS: IMPLICIT_PASS },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, implicitRx, starttlsRx, mxRx, senderRx].map((x) => x?.close()))
  await Promise.all([lmtp, lmtpSock, lmtpLocal].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : undefined)))
})

describe('smarthost', () => {
  it('relays with AUTH over implicit TLS, the certificate verified, the password from the environment', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@implicit.test'], data: msg('implicit') })
    const [m] = await implicitRx.waitForMessages(1, 10_000)
    expect(m!.to).toEqual(['u@implicit.test'])
    expect(m!.secure).toBe(true)
    expect(authSeen.filter((a) => a.server === 'implicit')).toEqual([{ server: 'implicit', user: 'apikey', pass: IMPLICIT_PASS }])
    const ev = await event('delivered', 'u@implicit.test')
    expect(ev.remoteHost).toBe(`smarthost.test[127.0.0.2]:${implicitRx.port}`)
    expect(ev.tls).toEqual({ version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String), verified: true })
  })

  it('relays with AUTH after STARTTLS; a wildcard matches subdomains only', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@eu.starttls.test'], data: msg('starttls') })
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@starttls.test'], data: msg('not a subdomain') })
    const [m] = await starttlsRx.waitForMessages(1, 10_000)
    expect(m!.to).toEqual(['u@eu.starttls.test'])
    expect(m!.secure).toBe(true)
    expect(authSeen.filter((a) => a.server === 'starttls')).toEqual([{ server: 'starttls', user: 'apikey', pass: STARTTLS_PASS }])
    const ev = await event('delivered', 'u@eu.starttls.test')
    expect(ev.tls).toMatchObject({ verified: true })
    // starttls.test itself is not matched by '*.starttls.test': it goes to its own MX
    const plain = await eventually(() => mxRx.messages.find((x) => x.to[0] === 'u@starttls.test'), 10_000, 'u@starttls.test at its MX')
    expect(plain.heloName).toBe('relay.test')
    expect(starttlsRx.messages.map((x) => x.to[0])).toEqual(['u@eu.starttls.test'])
  })

  it('defers when the smarthost refuses the credentials, and never logs a password', async () => {
    await sendMail(relay.port, { from: 'badauth@sender.test', to: ['v@anywhere.test'], data: msg('bad auth') })
    const ev = await event('deferred', 'v@anywhere.test')
    expect(ev.response).toMatch(/^4\.7\.0 smarthost\.test\[127\.0\.0\.2\]:\d+: AUTH as the configured user failed: 535 5\.7\.8/)
    expect(authSeen).toContainEqual({ server: 'starttls', user: 'apikey', pass: WRONG_PASS })
    expect(starttlsRx.messages.some((m) => m.to[0] === 'v@anywhere.test')).toBe(false)
    const entry = (await relay.listQueue()).find((q) => q.recipients[0]!.address === 'v@anywhere.test')
    expect(entry!.recipients[0]!.state).toBe('deferred')
    const logs = JSON.stringify(relay.logs)
    for (const secret of [IMPLICIT_PASS, STARTTLS_PASS, WRONG_PASS]) expect(logs).not.toContain(secret)
    // the implicit route's password came from the environment, not the config file
    expect(fs.readFileSync(relay.configFile, 'utf8')).not.toContain(IMPLICIT_PASS)
  })
})

describe('matching and source addresses', () => {
  it('a regex on the domain picks the route; its source address and EHLO name are used; others get the defaults', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@shop12.example'], data: msg('shop12') })
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@shopx.example'], data: msg('shopx') })
    const shop = await eventually(() => mxRx.messages.find((x) => x.to[0] === 'u@shop12.example'), 10_000, 'shop12 message')
    expect(shop.remoteAddress).toBe('127.0.0.7')
    expect(shop.heloName).toBe('out7.relay.test')
    const other = await eventually(() => mxRx.messages.find((x) => x.to[0] === 'u@shopx.example'), 10_000, 'shopx message')
    expect(other.remoteAddress).toBe('127.0.0.1')
    expect(other.heloName).toBe('relay.test')
  })

  it('a sender domain picks a route whose IP pool is used round-robin, each address with its EHLO name', async () => {
    for (let i = 0; i < 4; i++) {
      await sendMail(relay.port, { from: `news${i}@marketing.sender.test`, to: [`r${i}@pool.test`], data: msg(`pool ${i}`) })
      await eventually(() => mxRx.messages.find((x) => x.to[0] === `r${i}@pool.test`), 10_000, `pool message ${i}`)
    }
    // a subdomain of the sender domain is another domain: default source
    await sendMail(relay.port, { from: 'x@sub.marketing.sender.test', to: ['r9@pool.test'], data: msg('sub') })
    const sub = await eventually(() => mxRx.messages.find((x) => x.to[0] === 'r9@pool.test'), 10_000, 'sub message')
    const got = [0, 1, 2, 3].map((i) => mxRx.messages.find((x) => x.to[0] === `r${i}@pool.test`)!)
    expect(got.map((m) => [m.remoteAddress, m.heloName])).toEqual([
      ['127.0.0.8', 'out8.relay.test'],
      ['127.0.0.9', 'out9.relay.test'],
      ['127.0.0.8', 'out8.relay.test'],
      ['127.0.0.9', 'out9.relay.test'],
    ])
    expect(sub.remoteAddress).toBe('127.0.0.1')
  })

  it('a weighted pool sends in proportion to the weights (2:1)', async () => {
    for (let i = 0; i < 6; i++) {
      await sendMail(relay.port, { from: `bulk-${i}@sender.test`, to: [`b${i}@pool.test`], data: msg(`bulk ${i}`) })
      await eventually(() => mxRx.messages.find((x) => x.to[0] === `b${i}@pool.test`), 10_000, `bulk message ${i}`)
    }
    const from = [0, 1, 2, 3, 4, 5].map((i) => mxRx.messages.find((x) => x.to[0] === `b${i}@pool.test`)!.remoteAddress)
    expect(from).toEqual(['127.0.0.10', '127.0.0.11', '127.0.0.10', '127.0.0.10', '127.0.0.11', '127.0.0.10'])
  })
})

describe('lmtp', () => {
  it('delivers per recipient: one saved, one refused for good (DSN), one deferred', async () => {
    const dsnsBefore = senderRx.messages.length
    await sendMail(relay.port, { from: 'a@sender.test', to: ['ok@store.test', 'nouser@store.test', 'full@store.test'], data: msg('lmtp') })
    const ok = await event('delivered', 'ok@store.test')
    expect(ok.response).toMatch(/^250 2\.0\.0 <ok@store\.test> saved/)
    expect(ok.remoteHost).toBe(`127.0.0.5[127.0.0.5]:${lmtpPort}`)
    const bounced = await event('bounced', 'nouser@store.test')
    expect(bounced.response).toMatch(/^550 5\.1\.1 <nouser@store\.test>: no such user/)
    const deferred = await event('deferred', 'full@store.test')
    expect(deferred.response).toMatch(/^452 4\.2\.2 <full@store\.test>: mailbox full/)
    // one LMTP transaction with all three, greeted with LHLO (an LMTP server refuses EHLO)
    expect(lmtpReceived).toEqual([{ to: ['ok@store.test', 'nouser@store.test', 'full@store.test'], lhlo: 'relay.test' }])
    const dsn = (await senderRx.waitForMessages(dsnsBefore + 1, 10_000)).at(-1)!.raw.toString()
    expect(dsn).toMatch(/^Final-Recipient: rfc822; nouser@store\.test\r$/m)
    expect(dsn).toMatch(/^Status: 5\.1\.1\r$/m)
    expect(dsn).not.toMatch(/Final-Recipient: rfc822; (ok|full)@store\.test/)
    const entry = (await relay.listQueue()).find((q) => q.recipients.some((r) => r.address === 'full@store.test'))!
    expect(Object.fromEntries(entry.recipients.map((r) => [r.address, r.state]))).toEqual({ 'ok@store.test': 'delivered', 'nouser@store.test': 'bounced', 'full@store.test': 'deferred' })
  })

  it('a route host named localhost is the loopback, without DNS (RFC 6761): delivered', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['box@localstore.test'], data: msg('localhost') })
    await eventually(() => localReceived.find((m) => m.to.includes('box@localstore.test')), 10_000, 'delivery to the LMTP server at localhost')
    const delivered = await event('delivered', 'box@localstore.test')
    expect(delivered.remoteHost).toBe(`localhost[127.0.0.1]:${lmtpLocalPort}`)
  })

  it('delivers over a unix socket', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@sock.test'], data: msg('socket') })
    const ev = await event('delivered', 'u@sock.test')
    expect(ev.remoteHost).toBe(`unix:${sockPath}`)
    expect(ev.tls).toBe(false)
    expect(sockReceived).toEqual([{ to: ['u@sock.test'] }])
  })
})

describe('options', () => {
  it('a smarthost without a tls mode is a config error that names the key', async () => {
    const dir = tempDir()
    const err = await startRelay({
      dir,
      config: { plugins: [['routing', { routes: [{ kind: 'smarthost', host: 'smtp.example.net', auth: { user: 'u', pass: 'p' } }] }]] },
    }).catch((e: Error) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toMatch(/plugins\[0\] \(routing\) options\.routes\[0\]\.tls: expected tls: 'implicit' or 'starttls'/)
  })
})
