// mail-auth: SPF, DKIM, DMARC and ARC checks of inbound mail, as a mail store behind the relay sees
// them. The built relay runs in its own process with an `mx` listener; every DNS record (SPF,
// DKIM keys, DMARC policies, ARC keys, the MX of local.test) comes from the DNS test server its
// `dns.servers` points at; clients connect from different 127.x addresses (the SPF client IPs);
// delivered messages land in a real SMTP receiver at 127.0.0.3 (the MX of local.test).
//
// Relay A: defaults (spf.fail 'mark', dmarc.reject 'reject', tempError 'tempfail') plus an ARC
// seal as relay.test, and a submission listener (authenticated: not checked).
// Relay B: spf.fail 'reject', dmarc.reject 'quarantine-header', tempError 'accept', skipNetworks.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import pino from 'pino'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { execFile } from 'node:child_process'
import { Resolver } from 'node:dns/promises'
import { arc, dkimSign, dkimVerify, sealMessage, type ARCData } from 'mailauth'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, sendMail } from '../harness/smtp-client.js'
import { BIN, ROOT, eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import mailAuth from '../../plugins/mail-auth/index.js'
import { options as mailAuthOptions } from '../../plugins/mail-auth/options.js'
import { CheckPool } from '../../plugins/mail-auth/pool.js'

const GOOD = '127.0.0.10' // in the SPF records of pass.test, soft.test, mail.*.test, helo.pass.test
const BAD = '127.0.0.11' // in no SPF record
const PROVIDER = '127.0.0.12' // allowed by _spf.provider.test (include: and redirect=)
const MACRO = '127.0.0.13' // allowed by macro.test through exists:%{i}._ip.%{d}
const FORWARDER = '127.0.0.14' // forwarder.test's outbound host
const INTERNAL = '127.0.0.15' // in relay B's skipNetworks
const STATIC_AUTH = path.join(ROOT, 'test/fixtures/static-auth.plugin.ts')

let dns: TestDns
let mx: TestReceiver
let relayA: RelayProcess
let relayB: RelayProcess
const keys = {} as Record<'author' | 'forwarder' | 'relay', { pem: string; record: string }>

async function rsaKey(): Promise<{ pem: string; record: string }> {
  const { privateKey, publicKey } = await promisify(crypto.generateKeyPair)('rsa', { modulusLength: 2048 })
  return {
    pem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    record: `v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`,
  }
}

/** The test's own view of DNS (the same server the relay asks), for verifying delivered mail. */
function testResolver(): (name: string, type: string) => Promise<any> {
  const r = new Resolver({ timeout: 1000, tries: 1 })
  r.setServers([dns.server])
  return (name, type) => r.resolve(name, type)
}

const message = (subject: string, o: { from: string; headers?: string; body?: string }) =>
  `From: ${o.from}\r\nTo: Rcpt <rcpt@local.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@example.test>\r\n` +
  `Date: ${new Date().toUTCString()}\r\n${o.headers ?? ''}\r\n${o.body ?? 'Hello from the test.\r\n'}`

async function dkim(msg: string, domain: string, key = keys.author.pem): Promise<string> {
  const { signatures, errors } = await dkimSign(msg, { signatureData: [{ signingDomain: domain, selector: 'sel', privateKey: key }] } as never)
  expect(errors).toEqual([])
  return signatures + msg
}

/** Header fields of a delivered message, unfolded, in order. */
function fields(raw: Buffer): { name: string; value: string }[] {
  const text = raw.toString('latin1')
  const block = text.slice(0, text.indexOf('\r\n\r\n') + 2)
  return block
    .split(/\r\n(?![ \t])/)
    .filter(Boolean)
    .map((f) => ({ name: f.slice(0, f.indexOf(':')), value: f.slice(f.indexOf(':') + 1).replace(/\r\n[ \t]+/g, ' ').trim() }))
}
const values = (raw: Buffer, name: string) => fields(raw).filter((f) => f.name.toLowerCase() === name.toLowerCase()).map((f) => f.value)
/** This relay's Authentication-Results (authserv-id relay.test); the test fails unless there is exactly one. */
function ourResults(raw: Buffer): string {
  const ours = values(raw, 'Authentication-Results').filter((v) => /^relay\.test;/i.test(v))
  expect(ours, 'exactly one Authentication-Results of relay.test').toHaveLength(1)
  return ours[0]!
}
/** One method's entry of an Authentication-Results value, e.g. entry(ar, 'spf') = 'spf=pass (...) smtp.mailfrom=...'. */
const entry = (ar: string, method: string) => ar.split(/;\s*/).find((e) => e.startsWith(`${method}=`)) ?? ''

async function delivered(subject: string): Promise<ReceivedMessage> {
  return eventually(() => mx.messages.find((m) => values(m.raw, 'Subject')[0] === subject), 10_000, `delivery of "${subject}"`)
}

/** Sends one message to the relay's MX listener from `ip`; returns the reply to the final dot (or the refusing reply). */
async function send(relay: RelayProcess, o: { ip: string; from: string; data: string; helo?: string }): Promise<string> {
  const { lastReply } = await sendMail(relay.port, { from: o.from, to: ['rcpt@local.test'], data: o.data, localAddress: o.ip, helo: o.helo ?? 'client.example.test', timeoutMs: 8000 })
  return lastReply
}

beforeAll(async () => {
  ;[keys.author, keys.forwarder, keys.relay] = await Promise.all([rsaKey(), rsaKey(), rsaKey()])
  mx = await startReceiver({ host: '127.0.0.3' })
  dns = await startDns({
    'local.test': { MX: [{ exchange: 'mx.local.test', priority: 10 }] },
    'mx.local.test': { A: ['127.0.0.3'] },
    // SPF
    'pass.test': { TXT: [`v=spf1 ip4:${GOOD} -all`] },
    'soft.test': { TXT: [`v=spf1 ip4:${GOOD} ~all`] },
    'neutral.test': { TXT: ['v=spf1 ?all'] },
    'none.test': { A: ['192.0.2.1'], TXT: ['some other text record'] },
    'temp.test': 'SERVFAIL',
    'perm.test': { TXT: [`v=spf1 ip4:${GOOD} -all`, 'v=spf1 -all'] }, // two SPF records
    'include.test': { TXT: ['v=spf1 include:_spf.provider.test -all'] },
    'redirect.test': { TXT: ['v=spf1 redirect=_spf.provider.test'] },
    '_spf.provider.test': { TXT: [`v=spf1 ip4:${PROVIDER} -all`] },
    'macro.test': { TXT: ['v=spf1 exists:%{i}._ip.%{d} -all'] },
    [`${MACRO}._ip.macro.test`]: { A: ['127.0.0.2'] },
    // three void lookups (nx*.void.test do not exist) before the matching ip4: permerror
    'void.test': { TXT: [`v=spf1 a:nx1.void.test a:nx2.void.test a:nx3.void.test ip4:${GOOD} -all`] },
    // two void lookups are still allowed
    'void2.test': { TXT: [`v=spf1 a:nx1.void.test a:nx2.void.test ip4:${GOOD} -all`] },
    'helo.pass.test': { A: [GOOD], TXT: [`v=spf1 ip4:${GOOD} -all`] },
    // DKIM keys of the authors
    'sel._domainkey.dkim.test': { TXT: [keys.author.record] },
    'sel._domainkey.mail.relaxed.test': { TXT: [keys.author.record] },
    'sel._domainkey.strict.test': { TXT: [keys.author.record] },
    'sel._domainkey.mail.strict.test': { TXT: [keys.author.record] },
    // DMARC: relaxed alignment (the default), strict alignment, quarantine, pct=0, a DNS timeout
    '_dmarc.relaxed.test': { TXT: ['v=DMARC1; p=reject'] },
    'relaxed.test': { A: ['192.0.2.1'] },
    'mail.relaxed.test': { TXT: [`v=spf1 ip4:${GOOD} -all`] },
    '_dmarc.strict.test': { TXT: ['v=DMARC1; p=reject; adkim=s; aspf=s'] },
    'strict.test': { A: ['192.0.2.1'] },
    'mail.strict.test': { TXT: [`v=spf1 ip4:${GOOD} -all`] },
    '_dmarc.quarantine.test': { TXT: ['v=DMARC1; p=quarantine'] },
    '_dmarc.pct.test': { TXT: ['v=DMARC1; p=reject; pct=0'] },
    '_dmarc.tempdmarc.test': 'TIMEOUT',
    // A domain that sends no mail at all and asks for its name to be refused
    'rej.test': { TXT: ['v=spf1 -all'] },
    '_dmarc.rej.test': { TXT: ['v=DMARC1; p=reject'] },
    '_dmarc.spr.test': { TXT: ['v=DMARC1; p=none; sp=reject'] },
    // ARC: the forwarder's SPF and sealing key, and this relay's sealing key
    'forwarder.test': { TXT: [`v=spf1 ip4:${FORWARDER} -all`] },
    'fw._domainkey.forwarder.test': { TXT: [keys.forwarder.record] },
    'arc._domainkey.relay.test': { TXT: [keys.relay.record] },
  })
  const common = {
    localDomains: ['local.test'],
    dns: { servers: [dns.server], timeout: '500ms' },
    delivery: { port: mx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
    smtp: { reverseLookup: false, authFailureDelay: '10ms', maxErrors: 100 },
  }
  ;[relayA, relayB] = await Promise.all([
    startRelay({
      config: {
        ...common,
        listen: [
          { host: '127.0.0.1', port: 0, role: 'mx' },
          { host: '127.0.0.1', port: 0, role: 'submission', allowPlaintextAuth: true },
        ],
        plugins: [
          [STATIC_AUTH, { users: { 'alice@dkim.test': { password: 'pw', senders: ['*'] } } }],
          ['mail-auth', { arcSeal: { domain: 'relay.test', selector: 'arc', privateKey: keys.relay.pem } }],
        ],
      },
    }),
    startRelay({
      config: {
        ...common,
        plugins: [['mail-auth', { spf: { fail: 'reject' }, dmarc: { reject: 'quarantine-header' }, tempError: 'accept', skipNetworks: [`${INTERNAL}/32`] }]],
      },
    }),
  ])
})

afterAll(async () => {
  await Promise.all([relayA?.stop(), relayB?.stop()])
  await Promise.all([dns?.close(), mx?.close()])
})

describe('SPF (relay A: fail is marked, not refused)', () => {
  it('records pass, fail, softfail, neutral, none, permerror, include:, redirect=, a macro and the void-lookup limit', async () => {
    const cases: { tag: string; ip: string; from: string; want: string; also?: RegExp }[] = [
      { tag: 'spf-pass', ip: GOOD, from: 'alice@pass.test', want: 'pass', also: /smtp\.mailfrom=pass\.test/ },
      { tag: 'spf-fail', ip: BAD, from: 'alice@pass.test', want: 'fail' },
      { tag: 'spf-softfail', ip: BAD, from: 'alice@soft.test', want: 'softfail' },
      { tag: 'spf-neutral', ip: BAD, from: 'alice@neutral.test', want: 'neutral' },
      { tag: 'spf-none', ip: BAD, from: 'alice@none.test', want: 'none' },
      { tag: 'spf-permerror', ip: GOOD, from: 'alice@perm.test', want: 'permerror', also: /multiple SPF records/ },
      { tag: 'spf-include-pass', ip: PROVIDER, from: 'alice@include.test', want: 'pass' },
      { tag: 'spf-include-fail', ip: BAD, from: 'alice@include.test', want: 'fail' },
      { tag: 'spf-redirect-pass', ip: PROVIDER, from: 'alice@redirect.test', want: 'pass' },
      { tag: 'spf-redirect-fail', ip: GOOD, from: 'alice@redirect.test', want: 'fail' },
      { tag: 'spf-macro-pass', ip: MACRO, from: 'alice@macro.test', want: 'pass' },
      { tag: 'spf-macro-fail', ip: BAD, from: 'alice@macro.test', want: 'fail' },
      { tag: 'spf-void-limit', ip: GOOD, from: 'alice@void.test', want: 'permerror', also: /void/i },
      { tag: 'spf-two-voids', ip: GOOD, from: 'alice@void2.test', want: 'pass' },
    ]
    for (const c of cases) {
      const reply = await send(relayA, { ip: c.ip, from: c.from, data: message(c.tag, { from: c.from }) })
      expect(reply, c.tag).toMatch(/^250 2\.0\.0 /)
    }
    for (const c of cases) {
      const spf = entry(ourResults((await delivered(c.tag)).raw), 'spf')
      expect(spf, c.tag).toMatch(new RegExp(`^spf=${c.want}\\b`))
      if (c.also) expect(spf, c.tag).toMatch(c.also)
    }
    // The macro was expanded with the client's address and the domain.
    expect(dns.queries.some((q) => q.name === `${MACRO}._ip.macro.test` && q.type === 'A')).toBe(true)
  })

  it('checks the HELO identity when the sender is null (a bounce)', async () => {
    expect(await send(relayA, { ip: GOOD, from: '', helo: 'helo.pass.test', data: message('spf-helo-pass', { from: 'MAILER-DAEMON@helo.pass.test' }) })).toMatch(/^250 /)
    expect(await send(relayA, { ip: BAD, from: '', helo: 'helo.pass.test', data: message('spf-helo-fail', { from: 'MAILER-DAEMON@helo.pass.test' }) })).toMatch(/^250 /)
    const pass = entry(ourResults((await delivered('spf-helo-pass')).raw), 'spf')
    expect(pass).toMatch(/^spf=pass\b/)
    expect(pass).toMatch(/smtp\.helo=helo\.pass\.test/)
    expect(pass).not.toMatch(/smtp\.mailfrom/)
    expect(entry(ourResults((await delivered('spf-helo-fail')).raw), 'spf')).toMatch(/^spf=fail\b.*smtp\.helo=helo\.pass\.test/)
  })

  it('a DNS failure (SERVFAIL) is a temperror: 451 4.7.24 at MAIL', async () => {
    const { client } = await connectRaw(relayA.port, '127.0.0.1', 5000, undefined, GOOD)
    try {
      expect(await client.command('EHLO client.example.test')).toMatch(/^250 /m)
      expect(await client.command('MAIL FROM:<alice@temp.test>', 8000)).toMatch(/^451 4\.7\.24 /)
      // The session goes on: another sender is checked afresh.
      expect(await client.command('MAIL FROM:<alice@pass.test>')).toMatch(/^250 /)
    } finally {
      client.close()
    }
  })
})

describe('SPF and policy options (relay B: spf.fail reject, dmarc.reject quarantine-header, tempError accept)', () => {
  it('refuses an SPF fail at MAIL with 550 5.7.1, also for the HELO identity; softfail passes', async () => {
    const { client } = await connectRaw(relayB.port, '127.0.0.1', 5000, undefined, BAD)
    try {
      expect(await client.command('EHLO helo.pass.test')).toMatch(/^250 /m)
      expect(await client.command('MAIL FROM:<alice@pass.test>')).toMatch(/^550 5\.7\.1 SPF fail: pass\.test does not designate 127\.0\.0\.11/)
      expect(await client.command('MAIL FROM:<>')).toMatch(/^550 5\.7\.1 SPF fail: helo\.pass\.test/)
      expect(await client.command('MAIL FROM:<alice@soft.test>')).toMatch(/^250 /)
    } finally {
      client.close()
    }
  })

  it('with tempError accept, an SPF temperror is only recorded', async () => {
    expect(await send(relayB, { ip: GOOD, from: 'alice@temp.test', data: message('b-spf-temperror', { from: 'alice@temp.test' }) })).toMatch(/^250 2\.0\.0 /)
    expect(entry(ourResults((await delivered('b-spf-temperror')).raw), 'spf')).toMatch(/^spf=temperror\b/)
  })

  it('with dmarc.reject quarantine-header, a p=reject failure is delivered with X-Relay-Quarantine: dmarc', async () => {
    expect(await send(relayB, { ip: GOOD, from: 'alice@pass.test', data: message('b-dmarc-reject', { from: 'alice@relaxed.test' }) })).toMatch(/^250 2\.0\.0 /)
    const raw = (await delivered('b-dmarc-reject')).raw
    expect(values(raw, 'X-Relay-Quarantine')).toEqual(['dmarc'])
    expect(entry(ourResults(raw), 'dmarc')).toMatch(/^dmarc=fail\b.*policy\.dmarc=reject.*header\.from=relaxed\.test/)
  })

  it('a client in skipNetworks is not checked: no refusal, no Authentication-Results of ours', async () => {
    // Would be an SPF fail (refused by relay B) and a DMARC failure from anyone else.
    const data = message('b-skipped', { from: 'alice@relaxed.test', headers: 'Authentication-Results: relay.test; spf=pass\r\n' })
    expect(await send(relayB, { ip: INTERNAL, from: 'alice@pass.test', data })).toMatch(/^250 2\.0\.0 /)
    const raw = (await delivered('b-skipped')).raw
    expect(values(raw, 'Authentication-Results')).toEqual([]) // the forged one is gone, none added
    expect(values(raw, 'X-Relay-Quarantine')).toEqual([])
  })
})

describe('DKIM and DMARC (relay A)', () => {
  it('DKIM: a valid signature passes; one over an altered body fails', async () => {
    const good = await dkim(message('dkim-pass', { from: 'alice@dkim.test' }), 'dkim.test')
    const altered = (await dkim(message('dkim-fail', { from: 'alice@dkim.test' }), 'dkim.test')).replace('Hello from the test.', 'Hello from someone else.')
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: good })).toMatch(/^250 /)
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: altered })).toMatch(/^250 /)
    const pass = ourResults((await delivered('dkim-pass')).raw)
    expect(entry(pass, 'dkim')).toMatch(/^dkim=pass\b.*header\.(d|i)=@?dkim\.test/)
    expect(entry(pass, 'dmarc')).toMatch(/^dmarc=none\b/) // dkim.test publishes no DMARC record
    expect(entry(ourResults((await delivered('dkim-fail')).raw), 'dkim')).toMatch(/^dkim=fail \(body hash did not verify\)/)
  })

  it('relaxed alignment (the default): a subdomain signature aligns; unrelated SPF and DKIM domains fail p=reject with 550 5.7.1', async () => {
    // d=mail.relaxed.test, From: relaxed.test: same organizational domain.
    const pass = await dkim(message('dmarc-relaxed-pass', { from: 'alice@relaxed.test' }), 'mail.relaxed.test')
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: pass })).toMatch(/^250 /)
    // SPF passes for pass.test and DKIM for dkim.test: neither is relaxed.test's.
    const fail = await dkim(message('dmarc-relaxed-fail', { from: 'alice@relaxed.test' }), 'dkim.test')
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: fail })).toMatch(/^550 5\.7\.1 Message rejected: relaxed\.test publishes DMARC policy reject/)
    // SPF alone aligns relaxed too: MAIL FROM mail.relaxed.test, From relaxed.test, no signature.
    expect(await send(relayA, { ip: GOOD, from: 'bounce@mail.relaxed.test', data: message('dmarc-relaxed-spf', { from: 'alice@relaxed.test' }) })).toMatch(/^250 /)

    expect(entry(ourResults((await delivered('dmarc-relaxed-pass')).raw), 'dmarc')).toMatch(/^dmarc=pass\b.*header\.from=relaxed\.test/)
    const spfAligned = ourResults((await delivered('dmarc-relaxed-spf')).raw)
    expect(entry(spfAligned, 'spf')).toMatch(/^spf=pass\b/)
    expect(entry(spfAligned, 'dmarc')).toMatch(/^dmarc=pass\b/)
    expect(mx.messages.some((m) => values(m.raw, 'Subject')[0] === 'dmarc-relaxed-fail')).toBe(false)
  })

  it('a signed message with lines over 998 octets is judged as it was signed (dkim=pass, DMARC p=reject passes), then broken for the next hop', async () => {
    // A 1,500-octet body line and a 1,200-octet header field without a space: both past the limit.
    const long = message('dmarc-long-lines', { from: 'alice@relaxed.test', headers: `X-Token: ${'t'.repeat(1200)}\r\n`, body: `${'x'.repeat(1500)}\r\nend\r\n` })
    const signed = await dkim(long, 'mail.relaxed.test')
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: signed })).toMatch(/^250 /)
    const got = (await delivered('dmarc-long-lines')).raw
    expect(entry(ourResults(got), 'dkim')).toMatch(/^dkim=pass\b/)
    expect(entry(ourResults(got), 'dmarc')).toMatch(/^dmarc=pass\b/)
    expect(Math.max(...got.toString('latin1').split('\r\n').map((l) => l.length))).toBeLessThanOrEqual(998)
  })

  it('strict alignment (adkim=s; aspf=s): only the exact domain aligns', async () => {
    const pass = await dkim(message('dmarc-strict-pass', { from: 'alice@strict.test' }), 'strict.test')
    expect(await send(relayA, { ip: GOOD, from: 'bounce@mail.strict.test', data: pass })).toMatch(/^250 /)
    // SPF passes for mail.strict.test and DKIM for mail.strict.test: relaxed would align, strict does not.
    const fail = await dkim(message('dmarc-strict-fail', { from: 'alice@strict.test' }), 'mail.strict.test')
    expect(await send(relayA, { ip: GOOD, from: 'bounce@mail.strict.test', data: fail })).toMatch(/^550 5\.7\.1 Message rejected: strict\.test publishes DMARC policy reject/)
    const ar = ourResults((await delivered('dmarc-strict-pass')).raw)
    expect(entry(ar, 'dmarc')).toMatch(/^dmarc=pass\b.*header\.from=strict\.test/)
    expect(entry(ar, 'spf')).toMatch(/^spf=pass\b/)
    expect(mx.messages.some((m) => values(m.raw, 'Subject')[0] === 'dmarc-strict-fail')).toBe(false)
  })

  it('p=quarantine (and p=reject; pct=0, outside the sample) add X-Relay-Quarantine: dmarc', async () => {
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: message('dmarc-quarantine', { from: 'alice@quarantine.test' }) })).toMatch(/^250 /)
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: message('dmarc-pct0', { from: 'alice@pct.test' }) })).toMatch(/^250 /)
    for (const tag of ['dmarc-quarantine', 'dmarc-pct0']) {
      const raw = (await delivered(tag)).raw
      expect(values(raw, 'X-Relay-Quarantine'), tag).toEqual(['dmarc'])
      expect(entry(ourResults(raw), 'dmarc'), tag).toMatch(/^dmarc=fail\b/)
    }
    // The entry of the domain sampled out says its policy was lowered.
    expect(entry(ourResults((await delivered('dmarc-pct0')).raw), 'dmarc')).toMatch(/policy\.dmarc=reject.*\(outside the pct=0 sample: applied as quarantine\)$/)
    expect(entry(ourResults((await delivered('dmarc-quarantine')).raw), 'dmarc')).not.toMatch(/sample/)
    // A passing message has none, even when the client sent one.
    expect(await send(relayA, { ip: GOOD, from: 'bounce@mail.relaxed.test', data: message('dmarc-no-quarantine', { from: 'alice@relaxed.test', headers: 'X-Relay-Quarantine: dmarc\r\n' }) })).toMatch(/^250 /)
    expect(values((await delivered('dmarc-no-quarantine')).raw, 'X-Relay-Quarantine')).toEqual([])
  })

  it('a DMARC record lookup that times out is a temperror: 451 4.7.1 at the end of DATA', async () => {
    const reply = await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: message('dmarc-temperror', { from: 'alice@tempdmarc.test' }) })
    expect(reply).toMatch(/^451 4\.7\.1 DMARC temporary error/)
    expect((await relayA.listQueue()).some((q) => q.messageId?.includes('dmarctemperror'))).toBe(false)
  })
})

describe('several authors: every From: domain is evaluated (RFC 7489 §6.6.1); a malformed From: is refused', () => {
  /** Signed by mail.relaxed.test and strict.test: DMARC passes for relaxed.test (relaxed) and strict.test (strict). */
  async function signedTwice(msg: string): Promise<string> {
    const signatureData = ['mail.relaxed.test', 'strict.test'].map((signingDomain) => ({ signingDomain, selector: 'sel', privateKey: keys.author.pem }))
    const { signatures, errors } = await dkimSign(msg, { signatureData } as never)
    expect(errors).toEqual([])
    return signatures + msg
  }
  const dmarcEntries = (ar: string) => ar.split(/;\s*/).filter((e) => e.startsWith('dmarc='))

  it('a single From: of a p=reject domain is refused (the control)', async () => {
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: message('multi-control', { from: '<ceo@rej.test>' }) })).toMatch(/^550 5\.7\.1 Message rejected: rej\.test publishes DMARC policy reject/)
  })

  it("a subdomain without a record under its organizational domain's sp=reject: the refusal names who published it", async () => {
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: message('sp-reject', { from: '<ceo@sub.spr.test>' }) })).toMatch(/^550 5\.7\.1 Message rejected: spr\.test publishes for its subdomain sub\.spr\.test the DMARC policy reject/)
    // The organizational domain itself is under p=none: recorded, not refused.
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: message('sp-org', { from: '<ceo@spr.test>' }) })).toMatch(/^250 /)
  })

  it('two authors, one of a failing p=reject domain: refused 550 5.7.1 (the strictest failing policy), in either order', async () => {
    for (const from of ['<ceo@rej.test>, <x@pass.test>', '<x@pass.test>, "The CEO" <ceo@rej.test>']) {
      const reply = await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: message('multi-author-reject', { from }) })
      expect(reply, from).toMatch(/^550 5\.7\.1 Message rejected: rej\.test publishes DMARC policy reject/)
    }
    // Also when the other author's domain passes DMARC.
    const data = await signedTwice(message('multi-author-reject-pass', { from: '<a@relaxed.test>, <ceo@rej.test>' }))
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data })).toMatch(/^550 5\.7\.1 Message rejected: rej\.test publishes DMARC policy reject/)
    expect(mx.messages.some((m) => values(m.raw, 'Subject')[0]?.startsWith('multi-author-reject'))).toBe(false)
  })

  it('two authors whose domains both pass: accepted, one dmarc= entry per domain', async () => {
    const data = await signedTwice(message('multi-author-pass', { from: '<a@relaxed.test>, "B" <b@strict.test>' }))
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data })).toMatch(/^250 2\.0\.0 /)
    const raw = (await delivered('multi-author-pass')).raw
    const dmarc = dmarcEntries(ourResults(raw))
    expect(dmarc).toHaveLength(2)
    expect(dmarc[0]).toMatch(/^dmarc=pass\b.*header\.from=relaxed\.test/)
    expect(dmarc[1]).toMatch(/^dmarc=pass\b.*header\.from=strict\.test/)
    expect(values(raw, 'X-Relay-Quarantine')).toEqual([])
  })

  it('two authors, one failing p=quarantine, one passing: accepted with X-Relay-Quarantine: dmarc', async () => {
    const data = await dkim(message('multi-author-quarantine', { from: '<a@quarantine.test>, <b@strict.test>' }), 'strict.test')
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data })).toMatch(/^250 2\.0\.0 /)
    const raw = (await delivered('multi-author-quarantine')).raw
    expect(values(raw, 'X-Relay-Quarantine')).toEqual(['dmarc'])
    const dmarc = dmarcEntries(ourResults(raw))
    expect(dmarc[0]).toMatch(/^dmarc=fail\b.*header\.from=quarantine\.test/)
    expect(dmarc[1]).toMatch(/^dmarc=pass\b.*header\.from=strict\.test/)
  })

  it('two From: fields are refused 550 5.7.1 whatever the domains publish; so are a From: without an address and a message without From:', async () => {
    const cases: [string, string, RegExp][] = [
      ['two-from-reject', message('two-from-reject', { from: '<ceo@rej.test>', headers: 'From: <x@pass.test>\r\n' }), /the message has 2 From: fields/],
      // Both domains pass DMARC: still two authors where RFC 5322 allows one.
      ['two-from-pass', await signedTwice(message('two-from-pass', { from: '<a@relaxed.test>', headers: 'From: <b@strict.test>\r\n' })), /the message has 2 From: fields/],
      ['from-empty-group', message('from-empty-group', { from: 'Undisclosed CEO:;' }), /the From: field names no address with a domain/],
      ['from-name-only', message('from-name-only', { from: '"The CEO of rej.test"' }), /the From: field names no address with a domain/],
      ['no-from', message('no-from', { from: '<x@pass.test>' }).replace(/^From: .*\r\n/, ''), /the message has no From: field/],
      // RFC 5322 §4.4: white space and comments between a domain's atoms; a reader shows rej.test (mailauth read `rej`).
      ['from-cfws-space', message('from-cfws-space', { from: 'The CEO <ceo@rej .test>' }), /an address in the From: field has a domain/],
      ['from-cfws-dot', message('from-cfws-dot', { from: 'ceo@rej. test' }), /an address in the From: field has a domain/],
      ['from-cfws-comment', message('from-cfws-comment', { from: 'ceo@rej(x).test' }), /an address in the From: field has a domain/],
      ['from-cfws-comment-2', message('from-cfws-comment-2', { from: 'ceo@rej.(x)test' }), /an address in the From: field has a domain/],
      // A domain literal publishes no policy, though a reader may show the bank's name in it.
      ['from-domain-literal', message('from-domain-literal', { from: '<ceo@[rej.test]>' }), /an address in the From: field has a domain/],
      ['from-ip-literal', message('from-ip-literal', { from: 'ceo@[192.0.2.1]' }), /an address in the From: field has a domain|no address with a domain/],
      ['from-cfws-comment-angle', message('from-cfws-comment-angle', { from: '<ceo@rej(x).test>' }), /the From: field names no address with a domain|an address in the From: field has a domain/],
    ]
    for (const [tag, data, why] of cases) {
      const reply = await send(relayA, { ip: GOOD, from: 'alice@pass.test', data })
      expect(reply, tag).toMatch(/^550 5\.7\.1 Message rejected: /)
      expect(reply, tag).toMatch(why)
    }
  })

  it('with dmarc.reject quarantine-header (relay B), two From: fields are accepted with X-Relay-Quarantine and every domain recorded', async () => {
    const data = message('b-two-from', { from: '<ceo@rej.test>', headers: 'From: <x@pass.test>\r\n' })
    expect(await send(relayB, { ip: GOOD, from: 'alice@pass.test', data })).toMatch(/^250 2\.0\.0 /)
    const raw = (await delivered('b-two-from')).raw
    expect(values(raw, 'X-Relay-Quarantine')).toEqual(['dmarc'])
    const dmarc = dmarcEntries(ourResults(raw))
    expect(dmarc[0]).toBe('dmarc=permerror (multiple-from-fields)')
    expect(dmarc.slice(1).join(' ; ')).toMatch(/dmarc=fail\b.*policy\.dmarc=reject.*header\.from=rej\.test/)
    // Two authors, one of them failing p=reject: quarantined the same way.
    expect(await send(relayB, { ip: GOOD, from: 'alice@pass.test', data: message('b-multi-author', { from: '<x@pass.test>, <ceo@rej.test>' }) })).toMatch(/^250 2\.0\.0 /)
    const multi = (await delivered('b-multi-author')).raw
    expect(values(multi, 'X-Relay-Quarantine')).toEqual(['dmarc'])
    expect(dmarcEntries(ourResults(multi)).join(' ; ')).toMatch(/dmarc=fail\b.*header\.from=rej\.test/)
  })
})

describe('Authentication-Results forgery (RFC 8601 §5)', () => {
  const forged =
    'Authentication-Results: relay.test; dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test\r\n' +
    'Authentication-Results: RELAY.TEST 1; spf=pass smtp.mailfrom=bank.test\r\n' +
    'Authentication-Results: (forged) "Relay.Test"\r\n  ; arc=pass\r\n' +
    'Authentication-Results: relay.test.other.test; spf=pass smtp.mailfrom=other.test\r\n' +
    'Authentication-Results: mx.other.test; spf=fail smtp.mailfrom=bank.test\r\n' +
    'ARC-Authentication-Results: i=1; relay.test; spf=pass\r\n'

  it('removes incoming fields claiming our authserv-id (any case, version, comments), keeps the others, adds exactly one', async () => {
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: message('ar-forgery', { from: 'alice@pass.test', headers: forged }) })).toMatch(/^250 /)
    const raw = (await delivered('ar-forgery')).raw
    const all = values(raw, 'Authentication-Results')
    expect(all.filter((v) => /relay\.test;/i.test(v) && !/^relay\.test\.other/.test(v))).toHaveLength(1)
    expect(ourResults(raw)).toMatch(/spf=pass/)
    // Nothing of the three forged fields survives.
    expect(all.join('\n')).not.toMatch(/header\.d=bank\.test|spf=pass smtp\.mailfrom=bank\.test|arc=pass|forged/i)
    expect(all).toHaveLength(3)
    expect(all).toContain('relay.test.other.test; spf=pass smtp.mailfrom=other.test')
    expect(all).toContain('mx.other.test; spf=fail smtp.mailfrom=bank.test')
    expect(values(raw, 'ARC-Authentication-Results')).toContain('i=1; relay.test; spf=pass')
  })

  it('an authenticated submission is not checked, but forged fields are still removed', async () => {
    const { lastReply } = await sendMail(relayA.ports.submission!, {
      from: 'alice@dkim.test',
      to: ['rcpt@local.test'],
      data: message('ar-submission', { from: 'alice@dkim.test', headers: forged }),
      auth: { user: 'alice@dkim.test', pass: 'pw' },
      localAddress: BAD,
    })
    expect(lastReply).toMatch(/^250 /)
    const raw = (await delivered('ar-submission')).raw
    const all = values(raw, 'Authentication-Results')
    expect(all.filter((v) => /^"?relay\.test"?[ ;]/i.test(v) || /"relay\.test"/i.test(v))).toEqual([])
    expect(all).toEqual(['relay.test.other.test; spf=pass smtp.mailfrom=other.test', 'mx.other.test; spf=fail smtp.mailfrom=bank.test'])
    expect(values(raw, 'ARC-Seal')).toEqual([]) // not sealed either
  })
})

describe('ARC (relay A seals as relay.test)', () => {
  /** A message signed by its author, then sealed by forwarder.test (i=1), as a mailing list would. */
  async function forwarded(subject: string): Promise<string> {
    const signed = await dkim(message(subject, { from: 'alice@dkim.test' }), 'dkim.test')
    const set = await sealMessage(Buffer.from(signed), {
      signingDomain: 'forwarder.test',
      selector: 'fw',
      privateKey: keys.forwarder.pem,
      cv: 'none',
      authResults: 'forwarder.test; dkim=pass header.d=dkim.test; spf=pass smtp.mailfrom=pass.test',
    })
    expect(set.toString()).toMatch(/^ARC-Seal: i=1;/)
    return set.toString() + signed
  }

  async function verifyArc(raw: Buffer) {
    const resolver = testResolver()
    const v = await dkimVerify(raw, { resolver: resolver as never })
    return arc(v.arc as unknown as ARCData, { resolver: resolver as never })
  }

  it('a valid chain gives arc=pass; the delivered message carries an i=2 set that validates', async () => {
    const data = await forwarded('arc-valid')
    expect(await send(relayA, { ip: FORWARDER, from: 'list@forwarder.test', data })).toMatch(/^250 /)
    const raw = (await delivered('arc-valid')).raw
    const ar = ourResults(raw)
    expect(entry(ar, 'arc')).toMatch(/^arc=pass\b/)
    expect(entry(ar, 'spf')).toMatch(/^spf=pass\b/)
    expect(entry(ar, 'dkim')).toMatch(/^dkim=pass\b/)
    // Our set sits on top: ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results.
    expect(fields(raw).slice(0, 3).map((f) => f.name)).toEqual(['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results'])
    expect(values(raw, 'ARC-Seal')[0]).toMatch(/^i=2;.*cv=pass;.*d=relay\.test;.*s=arc;/)
    expect(values(raw, 'ARC-Authentication-Results')[0]).toMatch(/^i=2; relay\.test;.*arc=pass/)
    const verdict = await verifyArc(raw)
    expect(verdict.status.result).toBe('pass')
    expect(verdict.i).toBe(2)
  })

  it('a broken chain (body changed after sealing) gives arc=fail; the relay seals with cv=fail', async () => {
    const data = (await forwarded('arc-broken')).replace('Hello from the test.', 'Hello, with a footer the forwarder added after sealing.')
    expect(await send(relayA, { ip: FORWARDER, from: 'list@forwarder.test', data })).toMatch(/^250 /)
    const raw = (await delivered('arc-broken')).raw
    expect(entry(ourResults(raw), 'arc')).toMatch(/^arc=fail\b/)
    expect(values(raw, 'ARC-Seal')[0]).toMatch(/^i=2;.*cv=fail;/)
    expect((await verifyArc(raw)).status.result).toBe('fail')
  })

  it('a message without a chain is sealed as i=1 (cv=none) and validates', async () => {
    const data = await dkim(message('arc-first', { from: 'alice@dkim.test' }), 'dkim.test')
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data })).toMatch(/^250 /)
    const raw = (await delivered('arc-first')).raw
    expect(entry(ourResults(raw), 'arc')).toMatch(/^arc=none\b/)
    expect(values(raw, 'ARC-Seal')[0]).toMatch(/^i=1;.*cv=none;/)
    const verdict = await verifyArc(raw)
    expect(verdict.status.result).toBe('pass')
    expect(verdict.i).toBe(1)
  })

  it('an unsigned 8-bit message is made 7-bit before it is sealed (arcSeal.sevenBit): the seal holds for a next hop without 8BITMIME; a signed one is left as it is', async () => {
    const mime = 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n'
    const plain = message('arc-8bit', { from: 'alice@pass.test', headers: mime, body: 'Grüße aus Köln.\r\n' })
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: plain })).toMatch(/^250 /)
    const raw = (await delivered('arc-8bit')).raw
    expect(raw.toString('latin1')).not.toMatch(/[\x80-\xff]/)
    expect(values(raw, 'Content-Transfer-Encoding')).toEqual(['quoted-printable'])
    expect(raw.toString('latin1')).toContain('Gr=C3=BC=C3=9Fe aus K=C3=B6ln.')
    const verdict = await verifyArc(raw)
    expect(verdict.status.result).toBe('pass')
    expect(verdict.i).toBe(1)
    // Signed by its author: converting would break that signature for every next hop.
    const signed = await dkim(message('arc-8bit-signed', { from: 'alice@dkim.test', headers: mime, body: 'Grüße aus Köln.\r\n' }), 'dkim.test')
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data: signed })).toMatch(/^250 /)
    const kept = (await delivered('arc-8bit-signed')).raw
    expect(values(kept, 'Content-Transfer-Encoding')).toEqual(['8bit'])
    expect((await verifyArc(kept)).status.result).toBe('pass')
  })

  it('a large message (body spooled to disk, not inline) is verified and sealed the same way', async () => {
    const body = Array.from({ length: 6000 }, (_, i) => `line ${i}: ${'x'.repeat(60)}\r\n`).join('') // ~420 KB
    const data = await dkim(message('arc-large', { from: 'alice@dkim.test', body }), 'dkim.test')
    expect(await send(relayA, { ip: GOOD, from: 'alice@pass.test', data })).toMatch(/^250 /)
    const raw = (await delivered('arc-large')).raw
    expect(raw.length).toBeGreaterThan(400_000)
    expect(entry(ourResults(raw), 'dkim')).toMatch(/^dkim=pass\b/)
    const verdict = await verifyArc(raw)
    expect(verdict.status.result).toBe('pass')
    expect(verdict.i).toBe(1)
  })
})

describe('options', () => {
  it('a bad option or an unusable ARC key stops the start with exit code 2, naming the key', () => {
    const dir = tempDir('relay-mail-auth-')
    const check = (options: Record<string, unknown>) => {
      const file = path.join(dir, 'relay.config.json')
      fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), plugins: [['mail-auth', options]] }))
      return runCli(['check-config', '--config', file])
    }
    const bad = check({ tempError: 'maybe', dmarc: { reject: 'bounce' }, arcSeal: { domain: 'relay.test', selector: 'arc', privateKey: 'not a key' } })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/plugins\[0\] \(mail-auth\) options\.tempError/)
    expect(bad.stderr).toMatch(/options\.dmarc\.reject/)
    expect(bad.stderr).toMatch(/options\.arcSeal\.privateKey: not a PEM private key/)
    const ok = check({ authservId: 'mx.example.test', arcSeal: { domain: 'relay.test', selector: 'arc', privateKey: keys.relay.pem } })
    expect(ok.stderr).toBe('')
    expect(ok.code).toBe(0)
  })

  it("setup in 'check' mode (check-config, plugin commands) reads the ARC key but starts no worker thread", async () => {
    const dir = tempDir('relay-mail-auth-')
    fs.writeFileSync(path.join(dir, 'arc.pem'), keys.relay.pem)
    const setup = (privateKeyFile: string, mode: 'start' | 'check') => {
      const opts = mailAuthOptions.parse({ workers: { threads: 1 }, arcSeal: { domain: 'relay.test', selector: 'arc', privateKeyFile } })
      const base = { log: pino({ level: 'silent' }), options: opts, hostname: 'relay.test', isLocalDomain: () => false, configDir: dir, resolvePath: (f: string) => path.resolve(dir, f) }
      return mailAuth.setup!({ ...base, resolver: new Resolver(), dataDir: dir, mode } as never)
    }
    const spawned = vi.spyOn(CheckPool.prototype as never as { spawn(): unknown }, 'spawn')
    try {
      await expect(setup('arc.pem', 'check')).resolves.toBeUndefined()
      await expect(setup('missing.pem', 'check')).rejects.toThrow(/arcSeal\.privateKeyFile/)
      expect(spawned).not.toHaveBeenCalled()
      // The control: a started generation does spawn its threads (and is torn down again).
      const state = await setup('arc.pem', 'start')
      expect(spawned).toHaveBeenCalled()
      await mailAuth.teardown!({ state } as never)
    } finally {
      spawned.mockRestore()
    }
  })
})

describe('relay doctor', () => {
  // Not runCli: it blocks this process, and with it the DNS test server the doctor asks.
  async function doctor(): Promise<{ name: string; status: string; message: string; fix: string | null }[]> {
    const args = [BIN, 'doctor', 'relay.test', '--json', '--no-mta-sts-fetch', '--config', relayA.configFile]
    const { stdout } = await promisify(execFile)(process.execPath, args, { cwd: ROOT, timeout: 20_000 }).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }))
    return JSON.parse(stdout)
  }

  it('checks that the ARC sealing key is published at <selector>._domainkey.<domain>', async () => {
    const name = 'ARC seal key arc._domainkey.relay.test'
    expect((await doctor()).find((c) => c.name === name)).toMatchObject({ status: 'ok' })
    dns.set('arc._domainkey.relay.test', { TXT: [keys.forwarder.record] }) // another key
    try {
      const wrong = (await doctor()).find((c) => c.name === name)
      expect(wrong).toMatchObject({ status: 'error' })
      expect(wrong!.fix).toContain(keys.relay.record.replace('v=DKIM1; k=rsa; ', ''))
    } finally {
      dns.set('arc._domainkey.relay.test', { TXT: [keys.relay.record] })
    }
  })
})
