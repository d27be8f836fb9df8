// relay-acl's `senderDomains`: a client in `trustedNetworks` that has not authenticated may send
// only as the listed domains, in the envelope (553 5.7.1 at MAIL) and in From:/Sender: (553 5.7.1
// at the end of DATA). Untrusted clients (mail coming in for local domains) and authenticated
// sessions are not bound by it. relay-acl trusts 127.0.0.1/32 only; 127.0.0.77 is untrusted. The
// built relay runs in its own process; DNS and both MX hosts are real servers on loopback.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, type RawSmtp } from '../harness/smtp-client.js'
import { ROOT, eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const TRUSTED = '127.0.0.1'
const UNTRUSTED = '127.0.0.77'
const STATIC_AUTH = path.join(ROOT, 'test/fixtures/static-auth.plugin.ts')

let dns: TestDns
let foreignMx: TestReceiver // 127.0.0.2: MX of other.test
let localMx: TestReceiver // 127.0.0.3: MX of local.test
let relay: RelayProcess
const clients = new Set<RawSmtp>()

async function open(from: string): Promise<RawSmtp> {
  const { client, greeting } = await connectRaw(relay.port, '127.0.0.1', 5000, undefined, from)
  clients.add(client)
  expect(greeting).toMatch(/^220 /)
  expect(await client.command('EHLO client.test')).toMatch(/^250 /m)
  return client
}

const message = (tag: string, headers: string) => `${headers}To: bob@other.test\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@example.test>\r\n\r\nHello.\r\n`

/** MAIL, RCPT, DATA; resolves with the reply to the final dot. */
async function send(client: RawSmtp, o: { from: string; to: string; data: string }): Promise<string> {
  expect(await client.command(`MAIL FROM:<${o.from}>`)).toMatch(/^250 /)
  expect(await client.command(`RCPT TO:<${o.to}>`)).toMatch(/^250 /)
  expect(await client.command('DATA')).toMatch(/^354 /)
  const reply = client.read()
  client.send(dotStuff(o.data))
  return reply
}

const subjects = (r: TestReceiver) => r.messages.map((m) => /^Subject: (.*)$/m.exec(m.raw.toString())?.[1])

beforeAll(async () => {
  foreignMx = await startReceiver({
    host: '127.0.0.2',
    behaviour: { reply: { rcpt: ({ address }: { address?: string }) => (/^gone/.test(address!) ? { code: 550, message: '5.1.1 User unknown' } : undefined) } },
  })
  localMx = await startReceiver({ host: '127.0.0.3', port: foreignMx.port })
  dns = await startDns({
    'other.test': { MX: [{ exchange: 'mx.other.test', priority: 10 }] },
    'mx.other.test': { A: ['127.0.0.2'] },
    'local.test': { MX: [{ exchange: 'mx.local.test', priority: 10 }] },
    'mx.local.test': { A: ['127.0.0.3'] },
    'example.test': { A: ['127.0.0.3'] },
  })
  relay = await startRelay({
    config: {
      listen: [{ host: '127.0.0.1', port: 0, role: 'mx', allowPlaintextAuth: true }],
      localDomains: ['local.test'],
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: foreignMx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
      smtp: { reverseLookup: false, authFailureDelay: '10ms', maxErrors: 100 },
      plugins: [
        [STATIC_AUTH, { users: { 'eve@anywhere.test': { password: 'pw', senders: ['*'] } } }],
        ['relay-acl', { trustedNetworks: ['127.0.0.1/32'], senderDomains: ['example.test', 'Corp.Test'] }],
      ],
    },
  })
})

afterEach(() => {
  for (const c of clients) c.close()
  clients.clear()
})

afterAll(async () => {
  for (const c of clients) c.close()
  await relay?.stop()
  await Promise.all([dns?.close(), foreignMx?.close(), localMx?.close()])
})

describe('relay-acl senderDomains', () => {
  it('a trusted, unauthenticated client may use only the listed domains as envelope sender', async () => {
    const client = await open(TRUSTED)
    const refused = /^553 5\.7\.1 Sender address <.*> is not in a domain this network may send as/
    for (const [sender, want] of [
      ['alice@example.test', /^250 /],
      ['alice@EXAMPLE.TEST', /^250 /], // domains compare case-insensitively
      ['bob@corp.test', /^250 /], // listed as 'Corp.Test'
      ['', /^250 /], // the null sender (a bounce); its headers are checked at DATA
      ['mallory@evil.test', refused],
      ['alice@sub.example.test', refused], // a subdomain is another domain
      ['alice@example.test.evil.test', refused],
      ['alice@xexample.test', refused],
      ['alice@[127.0.0.1]', refused],
      ['alice%example.test@evil.test', refused],
      ['"alice@example.test"@evil.test', /^501 5\.1\.7 /], // not one address: bad syntax
      ['@example.test:mallory@evil.test', refused], // a source route is ignored: evil.test
      ['mallory@example.test.', /^501 5\.1\.7 /], // trailing dot: bad syntax
    ] as const) {
      const reply = await client.command(`MAIL FROM:<${sender}>`)
      expect(reply, `MAIL FROM:<${sender}>`).toMatch(want)
      if (reply.startsWith('250')) expect(await client.command('RSET')).toMatch(/^250 /)
    }
    expect(await relay.listQueue()).toEqual([])
  })

  it('checks every From:, Sender:, Resent-From: and Resent-Sender: address at DATA; only messages that pass are relayed', async () => {
    const before = foreignMx.messages.length
    const client = await open(TRUSTED)
    const refused = /^553 5\.7\.1 (Resent-)?(From|Sender): <.*> is not in a domain this network may send as/
    const cases: [tag: string, from: string, headers: string, ok: boolean][] = [
      ['plain', 'alice@example.test', 'From: Alice <alice@example.test>\r\n', true],
      ['sender-header', 'alice@example.test', 'From: alice@EXAMPLE.test\r\nSender: bob@corp.test\r\n', true],
      ['no-from', 'alice@example.test', '', true], // nothing claimed
      ['bounce', '', 'From: MAILER-DAEMON@example.test\r\n', true],
      ['foreign-from', 'alice@example.test', 'From: Mallory <mallory@evil.test>\r\n', false],
      ['display-name', 'alice@example.test', 'From: "alice@example.test" <mallory@evil.test>\r\n', false],
      ['comment', 'alice@example.test', 'From: mallory@evil.test (alice@example.test)\r\n', false],
      ['encoded-word', 'alice@example.test', 'From: =?utf-8?Q?alice=40example.test?= <mallory@evil.test>\r\n', false],
      ['second-address', 'alice@example.test', 'From: alice@example.test, mallory@evil.test\r\n', false],
      ['group', 'alice@example.test', 'From: team: alice@example.test, mallory@evil.test;\r\n', false],
      ['folded', 'alice@example.test', 'From: Alice <alice@example.test>,\r\n Mallory <mallory@evil.test>\r\n', false],
      ['two-from-fields', 'alice@example.test', 'From: alice@example.test\r\nFrom: mallory@evil.test\r\n', false],
      ['foreign-sender', 'alice@example.test', 'From: alice@example.test\r\nSender: mallory@evil.test\r\n', false],
      // a resend names its sender in the Resent- fields (RFC 5322 §3.6.6)
      ['resend', 'alice@example.test', 'Resent-From: alice@example.test\r\nResent-Sender: bob@corp.test\r\nFrom: carol@example.test\r\n', true],
      ['resent-from', 'alice@example.test', 'Resent-Date: Sun, 06 Dec 2026 11:00:00 +0000\r\nResent-From: ceo@evil.test\r\nResent-Message-ID: <r1@evil.test>\r\nFrom: alice@example.test\r\n', false],
      ['resent-sender', 'alice@example.test', 'Resent-Sender: Ceo <ceo@evil.test>\r\nFrom: alice@example.test\r\n', false],
      ['resent-from-second', 'alice@example.test', 'Resent-From: alice@example.test, ceo@evil.test\r\nFrom: alice@example.test\r\n', false],
      ['two-at', 'alice@example.test', 'From: mallory@evil.test@example.test\r\n', false],
      ['subdomain', 'alice@example.test', 'From: alice@example.test.evil.test\r\n', false],
      ['bounce-foreign', '', 'From: MAILER-DAEMON@evil.test\r\n', false],
      // malformed fields that one parser reads as no address, or as alice, and another as mallory
      ['trailing-colon', 'alice@example.test', 'From: Mallory <mallory@evil.test>:\r\n', false],
      ['empty-group-form', 'alice@example.test', 'From: mallory@evil.test:;\r\n', false],
      ['address-as-name', 'alice@example.test', 'From: mallory@evil.test <alice@example.test>\r\n', false],
      ['two-angle-addrs', 'alice@example.test', 'From: <alice@example.test> <mallory@evil.test>\r\n', false],
      ['encoded-in-name', 'alice@example.test', 'From: =?utf-8?b?bWFsbG9yeUBldmlsLnRlc3Q=?= <alice@example.test>\r\n', false],
    ]
    for (const [tag, from, headers, ok] of cases) {
      const reply = await send(client, { from, to: 'bob@other.test', data: message(`acl-${tag}`, headers) })
      expect(reply, tag).toMatch(ok ? /^250 2\.0\.0 Ok: queued as / : refused)
    }
    const passed = cases.filter((c) => c[3]).map((c) => `acl-${c[0]}`)
    const got = await foreignMx.waitForMessages(before + passed.length, 10_000)
    await new Promise((r) => setTimeout(r, 300)) // nothing else follows
    expect(subjects(foreignMx).slice(before).sort()).toEqual(passed.sort())
    expect(got.length).toBe(foreignMx.messages.length)
  })

  it('an untrusted client sending to a local domain, and an authenticated session, are not bound by it', async () => {
    // inbound mail: the world writes to local.test as whoever it is
    const inbound = await open(UNTRUSTED)
    expect(await send(inbound, { from: 'mallory@evil.test', to: 'carol@local.test', data: message('acl-inbound', 'From: mallory@evil.test\r\n') })).toMatch(/^250 2\.0\.0 /)
    // and may still not relay
    expect(await inbound.command('MAIL FROM:<alice@example.test>')).toMatch(/^250 /)
    expect(await inbound.command('RCPT TO:<bob@other.test>')).toMatch(/^550 5\.7\.1 Relaying denied/)

    // authenticated from the trusted network: the auth backend's senders ('*') decide, not senderDomains
    const authed = await open(TRUSTED)
    const token = Buffer.from('\0eve@anywhere.test\0pw').toString('base64')
    expect(await authed.command(`AUTH PLAIN ${token}`)).toMatch(/^235 /)
    expect(await send(authed, { from: 'eve@anywhere.test', to: 'bob@other.test', data: message('acl-authenticated', 'From: eve@anywhere.test\r\n') })).toMatch(/^250 2\.0\.0 /)

    await localMx.waitForMessages(1, 10_000)
    expect(subjects(localMx)).toContain('acl-inbound')
    await foreignMx.waitForMessages(1, 10_000)
    await new Promise((r) => setTimeout(r, 200))
    expect(subjects(foreignMx)).toContain('acl-authenticated')
  })

  it("mail it lets through to another domain is the operator's: every bounce goes to its sender, with the message (no untrusted-DSN limit)", async () => {
    const c = await open(TRUSTED)
    for (const n of [1, 2]) {
      expect(await c.command('RSET')).toMatch(/^250 /)
      expect(await c.command(`MAIL FROM:<app@example.test> RET=FULL`)).toMatch(/^250 /)
      expect(await c.command(`RCPT TO:<gone${n}@other.test>`)).toMatch(/^250 /)
      expect(await c.command('DATA')).toMatch(/^354 /)
      const reply = c.read()
      c.send(dotStuff(`From: <app@example.test>\r\nTo: <gone${n}@other.test>\r\nSubject: acl bounce ${n}\r\n\r\nBODY-OF-${n}\r\n`))
      expect(await reply).toMatch(/^250 /)
    }
    const dsns = await eventually(() => {
      const got = localMx.messages.filter((m) => m.from === '' && m.to.includes('app@example.test'))
      return got.length >= 2 ? got : undefined
    }, 15_000, 'two DSNs to app@example.test')
    const text = dsns.map((m) => m.raw.toString('latin1')).join('\n')
    expect(text).toContain('BODY-OF-1')
    expect(text).toContain('BODY-OF-2')
    expect(relay.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('DSN dropped'))).toBe(false)
  })

  it('check-config: a trustedNetworks block wider than /8 (/7 for IPv6: 0.0.0.0/0, ::/0) is refused as an open relay naming it, unless openRelay: true', () => {
    const dir = tempDir()
    const file = path.join(dir, 'relay.config.json')
    const write = (acl: Record<string, unknown>) => fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), plugins: [['relay-acl', acl]] }))
    for (const [i, block] of [[0, '0.0.0.0/0'], [1, '::/0'], [1, '0.0.0.0/1'], [1, '::ffff:0:0/96'], [1, '2000::/3']] as const) {
      write({ trustedNetworks: i ? ['10.0.0.0/8', block] : [block] })
      const r = runCli(['check-config', '--config', file])
      expect(r.code, `${block}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toContain(`plugins[0] (relay-acl) options.trustedNetworks[${i}]: ${block} trusts much of the internet: anyone there could relay mail through this relay (an open relay)`)
    }
    for (const acl of [{ trustedNetworks: ['0.0.0.0/0', '::/0'], openRelay: true }, { trustedNetworks: ['10.0.0.0/8', '172.16.0.0/12', 'fd00::/8', 'fc00::/7', '2001:db8::/32', '::ffff:10.0.0.0/104'] }]) {
      write(acl)
      const r = runCli(['check-config', '--config', file])
      expect(r.code, `${JSON.stringify(acl)}: ${r.stderr}`).toBe(0)
    }
  })

  it('check-config: a senderDomains entry that is not a domain, or an empty list, exits 2 naming the option', () => {
    const dir = tempDir('relay-acl-')
    for (const senderDomains of [['not a domain'], ['example.test.'], ['[127.0.0.1]'], ['alice@example.test'], []]) {
      const file = path.join(dir, 'relay.config.json')
      fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), plugins: [['relay-acl', { senderDomains }]] }))
      const r = runCli(['check-config', '--config', file])
      expect(r.code, `${JSON.stringify(senderDomains)}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(/plugins\[0\] \(relay-acl\) options\.senderDomains/)
    }
    const file = path.join(dir, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), plugins: [['relay-acl', { senderDomains: ['Example.Test'] }]] }))
    expect(runCli(['check-config', '--config', file]).code).toBe(0)
  })
})
