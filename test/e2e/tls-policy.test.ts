// Outbound TLS policy: 'may' / 'encrypt' / 'verify' per route against receivers with a good
// certificate, a self-signed one, a broken handshake and no TLS at all; MTA-STS (RFC 8461) in
// enforce mode: only listed MX hosts, verified certificates, a failure defers and never goes out
// in plain text; policies cached. The delivered event records TLS version, cipher, verification.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { startRelay, tempDir, type LogLine, type RelayProcess } from '../harness/relay.js'

let ca: TestCa
let dns: TestDns
let goodRx: TestReceiver // 127.0.0.2: certificate for mx.good.test from the test CA
let selfRx: TestReceiver // 127.0.0.3: self-signed certificate for mx.self.test
let plainRx: TestReceiver // 127.0.0.4: no STARTTLS
let brokenRx: TestReceiver // 127.0.0.5: offers STARTTLS, every handshake fails
let unlistedRx: TestReceiver // 127.0.0.6: an MX that an MTA-STS policy does not list
let policyServer: https.Server
let policyPort: number
const policyFetches: string[] = []
let relay: RelayProcess

const POLICIES: Record<string, string> = {
  'mta-sts.sts-good.test': 'version: STSv1\nmode: enforce\nmx: mx.good.test\nmax_age: 86400\n',
  'mta-sts.sts-self.test': 'version: STSv1\nmode: enforce\nmx: mx.self.test\nmax_age: 86400\n',
  'mta-sts.sts-plain.test': 'version: STSv1\nmode: enforce\nmx: mx.plain.test\nmax_age: 86400\n',
  'mta-sts.sts-mixed.test': 'version: STSv1\nmode: enforce\nmx: *.good.test\nmax_age: 86400\n',
  'mta-sts.sts-none.test': 'version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n',
  'mta-sts.sts-testing.test': 'version: STSv1\nmode: testing\nmx: mx.good.test\nmax_age: 86400\n',
  // Served as text/html (RFC 8461 §3.2: text/plain only): no policy.
  'mta-sts.sts-html.test': 'version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n',
  // Its TXT record's id is 33 characters (§3.1: at most 32): no policy.
  'mta-sts.sts-longid.test': 'version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n',
  'mta-sts.sts-testing-unlisted.test': 'version: STSv1\nmode: testing\nmx: mx.good.test\nmax_age: 86400\n',
}

const msg = (subject: string) => `From: a@sender.test\r\nTo: x@y.test\r\nSubject: ${subject}\r\n\r\nbody\r\n`

function selfSigned(name: string): { key: Buffer; cert: Buffer } {
  const dir = tempDir('relay-selfsigned-')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2', '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`, '-keyout', 'k.pem', '-out', 'c.pem'], { cwd: dir, stdio: 'ignore' })
  return { key: fs.readFileSync(path.join(dir, 'k.pem')), cert: fs.readFileSync(path.join(dir, 'c.pem')) }
}

const event = (name: string, recipient: string, timeoutMs = 15_000): Promise<LogLine> =>
  relay.waitForLog((l) => l.event === name && l.recipient === recipient, timeoutMs)

/** The messages a receiver accepted for a recipient (nothing may have gone out in clear or otherwise). */
const got = (rx: TestReceiver, rcpt: string) => rx.messages.filter((m) => m.to.includes(rcpt))

beforeAll(async () => {
  ca = makeCa()
  const good = ca.issue(['mx.good.test'])
  goodRx = await startReceiver({ host: '127.0.0.2', serverOptions: { key: fs.readFileSync(good.key), cert: fs.readFileSync(good.cert) } })
  const port = goodRx.port
  selfRx = await startReceiver({ host: '127.0.0.3', port, serverOptions: selfSigned('mx.self.test') })
  plainRx = await startReceiver({ host: '127.0.0.4', port, behaviour: { noStartTls: true } })
  brokenRx = await startReceiver({ host: '127.0.0.5', port, serverOptions: { maxVersion: 'TLSv1', minVersion: 'TLSv1' } })
  unlistedRx = await startReceiver({ host: '127.0.0.6', port, behaviour: { noStartTls: true } })

  const policyCert = ca.issue(Object.keys(POLICIES))
  policyServer = https.createServer({ key: fs.readFileSync(policyCert.key), cert: fs.readFileSync(policyCert.cert) }, (req, res) => {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '')
    policyFetches.push(host)
    const policy = POLICIES[host]
    if (req.url !== '/.well-known/mta-sts.txt' || !policy) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': host === 'mta-sts.sts-html.test' ? 'text/html' : 'text/plain' }).end(policy)
  })
  await new Promise<void>((resolve) => policyServer.listen(0, '127.0.0.1', resolve))
  policyPort = (policyServer.address() as { port: number }).port

  const mx = (exchange: string) => ({ MX: [{ exchange, priority: 10 }] })
  const zones: Parameters<typeof startDns>[0] = {
    'mx.good.test': { A: ['127.0.0.2'] },
    'mx.self.test': { A: ['127.0.0.3'] },
    'mx.plain.test': { A: ['127.0.0.4'] },
    'mx.broken.test': { A: ['127.0.0.5'] },
    'mx.unlisted.test': { A: ['127.0.0.6'] },
    'mx.wrongname.test': { A: ['127.0.0.2'] }, // the good receiver, whose certificate names mx.good.test
    'sts-good.test': mx('mx.good.test'),
    'sts-self.test': mx('mx.self.test'),
    'sts-plain.test': mx('mx.plain.test'),
    // the preferred MX is not in the policy: it must not be used
    'sts-mixed.test': { MX: [{ exchange: 'mx.unlisted.test', priority: 1 }, { exchange: 'mx.good.test', priority: 20 }] },
    'sts-none.test': mx('mx.unlisted.test'),
    'sts-testing.test': mx('mx.self.test'),
    'sts-html.test': mx('mx.unlisted.test'),
    'sts-longid.test': mx('mx.unlisted.test'),
    'sts-testing-unlisted.test': mx('mx.unlisted.test'),
    'sts-404.test': mx('mx.unlisted.test'),
  }
  for (const name of ['sts-good', 'sts-self', 'sts-plain', 'sts-mixed', 'sts-none', 'sts-testing', 'sts-html', 'sts-testing-unlisted', 'sts-404']) {
    zones[`_mta-sts.${name}.test`] = { TXT: ['v=STSv1; id=20260101T000000'] }
    zones[`mta-sts.${name}.test`] = { A: ['127.0.0.1'] }
  }
  zones['_mta-sts.sts-longid.test'] = { TXT: [`v=STSv1; id=${'1'.repeat(33)};`] }
  zones['mta-sts.sts-longid.test'] = { A: ['127.0.0.1'] }
  for (const policy of ['may', 'enc', 'ver']) {
    for (const [kind, host] of [['good', 'mx.good.test'], ['self', 'mx.self.test'], ['plain', 'mx.plain.test'], ['broken', 'mx.broken.test'], ['wrongname', 'mx.wrongname.test']] as const) {
      zones[`${policy}-${kind}.test`] = mx(host)
    }
  }
  dns = await startDns(zones)

  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port, tlsCa: ca.caFile, mtaSts: { connectTo: `127.0.0.1:${policyPort}`, timeout: '5s' }, retry: { base: '1h' }, connectTimeout: '3s' },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        [
          'routing',
          {
            routes: [
              { match: { domain: '/^may-/' }, tls: 'may' },
              { match: { domain: '/^enc-/' }, tls: 'encrypt' },
              { match: { domain: '/^ver-/' }, tls: 'verify' },
            ],
          },
        ],
      ],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, goodRx, selfRx, plainRx, brokenRx, unlistedRx].map((x) => x?.close()))
  await new Promise<void>((r) => (policyServer ? policyServer.close(() => r()) : r()))
})

const TLS_VERIFIED = { version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String), verified: true }
const TLS_UNVERIFIED = { version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String), verified: false }

describe('per-route TLS policy', () => {
  it("'may': TLS when offered (verified or not), plain text when not offered", async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@may-good.test'], data: msg('may good') })
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@may-self.test'], data: msg('may self') })
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@may-plain.test'], data: msg('may plain') })
    expect((await event('delivered', 'u@may-good.test')).tls).toEqual(TLS_VERIFIED)
    expect((await event('delivered', 'u@may-self.test')).tls).toEqual(TLS_UNVERIFIED)
    expect((await event('delivered', 'u@may-plain.test')).tls).toBe(false)
    expect(got(goodRx, 'u@may-good.test')[0]!.secure).toBe(true)
    expect(got(plainRx, 'u@may-plain.test')[0]!.secure).toBe(false)
  })

  it("'encrypt': TLS required, the certificate not checked; no STARTTLS or a failed handshake defers, never plain text", async () => {
    const mailBefore = plainRx.attempts.mail + brokenRx.attempts.mail
    for (const kind of ['good', 'self', 'plain', 'broken']) await sendMail(relay.port, { from: 'a@sender.test', to: [`u@enc-${kind}.test`], data: msg(`enc ${kind}`) })
    expect((await event('delivered', 'u@enc-good.test')).tls).toEqual(TLS_VERIFIED)
    expect((await event('delivered', 'u@enc-self.test')).tls).toEqual(TLS_UNVERIFIED)
    const plain = await event('deferred', 'u@enc-plain.test')
    expect(plain.response).toMatch(/^4\.7\.5 TLS policy 'encrypt': mx\.plain\.test\[127\.0\.0\.4\]:\d+: TLS negotiation failed: STARTTLS not offered \(5\d\d /)
    const broken = await event('deferred', 'u@enc-broken.test')
    expect(broken.response).toMatch(/^4\.7\.5 TLS policy 'encrypt': mx\.broken\.test\[127\.0\.0\.5\]:\d+: TLS negotiation failed/)
    expect(got(plainRx, 'u@enc-plain.test')).toEqual([])
    expect(got(brokenRx, 'u@enc-broken.test')).toEqual([])
    // not even MAIL FROM went out over the plain connections
    expect(plainRx.attempts.mail + brokenRx.attempts.mail).toBe(mailBefore)
  })

  it("'verify': only a certificate from a trusted CA that names the MX host; else defer", async () => {
    for (const kind of ['good', 'self', 'plain', 'wrongname']) await sendMail(relay.port, { from: 'a@sender.test', to: [`u@ver-${kind}.test`], data: msg(`ver ${kind}`) })
    expect((await event('delivered', 'u@ver-good.test')).tls).toEqual(TLS_VERIFIED)
    const self = await event('deferred', 'u@ver-self.test')
    expect(self.response).toMatch(/^4\.7\.5 TLS policy 'verify': mx\.self\.test\[127\.0\.0\.3\]:\d+: TLS certificate of mx\.self\.test not verified: (DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED)/)
    const wrong = await event('deferred', 'u@ver-wrongname.test')
    expect(wrong.response).toMatch(/TLS certificate of mx\.wrongname\.test not verified: ERR_TLS_CERT_ALTNAME_INVALID/)
    const plain = await event('deferred', 'u@ver-plain.test')
    expect(plain.response).toMatch(/^4\.7\.5 TLS policy 'verify'/)
    expect(got(selfRx, 'u@ver-self.test')).toEqual([])
    expect(got(goodRx, 'u@ver-wrongname.test')).toEqual([])
    expect(got(plainRx, 'u@ver-plain.test')).toEqual([])
    expect((await relay.listQueue()).find((q) => q.recipients[0]!.address === 'u@ver-self.test')!.recipients[0]!.state).toBe('deferred')
  })
})

describe('MTA-STS', () => {
  it('enforce with a self-signed MX certificate defers instead of delivering (the default policy would have sent it)', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@sts-self.test'], data: msg('sts self') })
    const ev = await event('deferred', 'u@sts-self.test')
    expect(ev.response).toMatch(/^4\.7\.5 MTA-STS policy of sts-self\.test \(enforce\) requires verified TLS: mx\.self\.test\[127\.0\.0\.3\]:\d+: TLS certificate of mx\.self\.test not verified/)
    expect(got(selfRx, 'u@sts-self.test')).toEqual([])
  })

  it('enforce with an MX without STARTTLS defers; nothing goes out in clear', async () => {
    const mailBefore = plainRx.attempts.mail
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@sts-plain.test'], data: msg('sts plain') })
    const ev = await event('deferred', 'u@sts-plain.test')
    expect(plainRx.attempts.mail).toBe(mailBefore)
    expect(ev.response).toMatch(/^4\.7\.5 MTA-STS policy of sts-plain\.test \(enforce\) requires verified TLS/)
    expect(got(plainRx, 'u@sts-plain.test')).toEqual([])
  })

  it('enforce with a matching, valid certificate delivers over verified TLS; the policy is fetched once and cached', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u1@sts-good.test'], data: msg('sts good 1') })
    expect((await event('delivered', 'u1@sts-good.test')).tls).toEqual(TLS_VERIFIED)
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u2@sts-good.test'], data: msg('sts good 2') })
    expect((await event('delivered', 'u2@sts-good.test')).tls).toEqual(TLS_VERIFIED)
    expect(policyFetches.filter((h) => h === 'mta-sts.sts-good.test')).toHaveLength(1)
  })

  it('an MX the policy does not list is not used, even when preferred', async () => {
    const before = unlistedRx.connections
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@sts-mixed.test'], data: msg('sts mixed') })
    expect((await event('delivered', 'u@sts-mixed.test')).remoteHost).toMatch(/^mx\.good\.test\[127\.0\.0\.2\]:\d+$/)
    expect(got(goodRx, 'u@sts-mixed.test')).toHaveLength(1)
    expect(unlistedRx.connections).toBe(before)
  })

  it('no MX listed by the policy: defer, and no connection at all', async () => {
    const before = unlistedRx.connections
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@sts-none.test'], data: msg('sts none') })
    const ev = await event('deferred', 'u@sts-none.test')
    expect(ev.response).toMatch(/^4\.7\.5 MTA-STS policy of sts-none\.test \(enforce, mx: mx\.elsewhere\.test\) lists none of its MX hosts \(mx\.unlisted\.test\)/)
    expect(unlistedRx.connections).toBe(before)
  })

  it("'testing' mode is not enforced: the self-signed MX gets the message", async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@sts-testing.test'], data: msg('sts testing') })
    expect((await event('delivered', 'u@sts-testing.test')).tls).toEqual(TLS_UNVERIFIED)
    expect(got(selfRx, 'u@sts-testing.test')).toHaveLength(1)
  })

  it('the policy fetch verifies its certificate: without the test CA no policy is fetched, and delivery goes on as without MTA-STS', async () => {
    const zones = await startDns({
      'sts-self.test': { MX: [{ exchange: 'mx.self.test', priority: 10 }] },
      'mx.self.test': { A: ['127.0.0.3'] },
      '_mta-sts.sts-self.test': { TXT: ['v=STSv1; id=1'] },
      'mta-sts.sts-self.test': { A: ['127.0.0.1'] },
    })
    const r = await startRelay({
      config: {
        dns: { servers: [zones.server], timeout: '1s' },
        delivery: { port: goodRx.port, mtaSts: { connectTo: `127.0.0.1:${policyPort}`, timeout: '3s' }, retry: { base: '1h' } },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
    try {
      const fetchesBefore = policyFetches.length
      await sendMail(r.port, { from: 'a@sender.test', to: ['other@sts-self.test'], data: msg('no ca') })
      const ev = await r.waitForLog((l) => l.event === 'delivered' && l.recipient === 'other@sts-self.test', 15_000)
      expect(ev.tls).toEqual(TLS_UNVERIFIED)
      // the TLS handshake with the policy host failed before any HTTP request was made
      expect(policyFetches.length).toBe(fetchesBefore)
    } finally {
      await r.stop()
      await zones.close()
    }
  })
})

describe('MTA-STS policies that are none, and what is said', () => {
  it('a policy served as text/html, or a TXT id over 32 characters, is no policy (RFC 8461 §3.1, §3.2): delivered to an MX the policy would not list; the fetch that failed is logged', async () => {
    for (const d of ['sts-html', 'sts-longid']) await sendMail(relay.port, { from: 'a@sender.test', to: [`u@${d}.test`], data: msg(d) })
    for (const d of ['sts-html', 'sts-longid']) expect((await event('delivered', `u@${d}.test`)).remoteHost).toMatch(/^mx\.unlisted\.test\[127\.0\.0\.6\]/)
    const warned = await relay.waitForLog((l) => l.domain === 'sts-html.test' && l.mtaSts === true, 5000)
    expect(warned.msg).toBe('MTA-STS policy fetch for sts-html.test failed: https://mta-sts.sts-html.test/.well-known/mta-sts.txt is served as text/html, not text/plain; delivering as without a policy')
    expect(policyFetches).not.toContain('mta-sts.sts-longid.test')
  })

  it('a fetch that fails, and testing mode with an MX the policy does not list: delivered, and a warning names the domain and why', async () => {
    for (const d of ['sts-404', 'sts-testing-unlisted']) await sendMail(relay.port, { from: 'a@sender.test', to: [`u@${d}.test`], data: msg(d) })
    for (const d of ['sts-404', 'sts-testing-unlisted']) await event('delivered', `u@${d}.test`)
    expect((await relay.waitForLog((l) => l.domain === 'sts-404.test' && l.mtaSts === true, 5000)).msg).toMatch(/^MTA-STS policy fetch for sts-404\.test failed: .+; delivering as without a policy$/)
    expect((await relay.waitForLog((l) => l.domain === 'sts-testing-unlisted.test' && l.mtaSts === true, 5000)).msg).toBe(
      'MTA-STS policy of sts-testing-unlisted.test (testing, mx: mx.good.test) does not list mx.unlisted.test: delivered anyway, as testing mode says',
    )
  })
})
