// Users, senders and relay-acl domains with an internationalized domain: one address is one
// identity whether its domain is written in Unicode (U-labels, `bücher.example`) or ASCII
// (A-labels, `xn--bcher-kva.example`), in any case. The relay turns envelope domains into A-labels
// at MAIL/RCPT; user names, `senders` entries, From:/Sender: addresses and relay-acl's
// `senderDomains` are compared in that form too. Users are made with the real `relay user add`; a
// real relay (STARTTLS + AUTH on submission, a trusted mx listener) relays to a real receiver.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, type RawSmtp } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const PW = { dave: 'dave-Pw-idn-4b1e', carol: 'carol-Pw-idn-9d2a', erin: 'erin-Pw-idn-70c3', daveNew: 'dave-NewPw-idn-5e8f' }
const b64 = (s: string) => Buffer.from(s).toString('base64')
const NOT_OWNED = /^553 5\.7\.1 /

let ca: TestCa
let dns: TestDns
let rx: TestReceiver
let relay: RelayProcess
let dir: string
let F: string
const clients = new Set<RawSmtp>()

const userAdd = (address: string, password: string, ...extra: string[]) =>
  runCli(['user', 'add', address, '--file', F, '--password-stdin', ...extra], { input: `${password}\n` })

/** Submission: EHLO, STARTTLS, EHLO, AUTH PLAIN; the reply to AUTH and the session. */
async function loggedIn(user: string, pass: string): Promise<{ reply: string; c: RawSmtp }> {
  const { client: c } = await connectRaw(relay.ports.submission!)
  clients.add(c)
  await c.command('EHLO client.test')
  expect(await c.command('STARTTLS')).toMatch(/^220 /)
  await c.startTls({ ca: ca.caPem, servername: 'relay.test' })
  await c.command('EHLO client.test')
  return { reply: await c.command(`AUTH PLAIN ${b64(`\0${user}\0${pass}`)}`), c }
}

async function session(user: string, pass: string): Promise<RawSmtp> {
  const { reply, c } = await loggedIn(user, pass)
  expect(reply, `AUTH as ${user}`).toMatch(/^235 /)
  return c
}

/** MAIL FROM's reply; a transaction that got through is reset for the next one. */
async function mailFrom(c: RawSmtp, sender: string): Promise<string> {
  const reply = await c.command(`MAIL FROM:<${sender}>`)
  if (reply.startsWith('250')) expect(await c.command('RSET')).toMatch(/^250 /)
  return reply
}

/** A whole transaction to bob@dest.test; the reply to the final dot. */
async function send(c: RawSmtp, from: string, headers: string, tag: string): Promise<string> {
  expect(await c.command(`MAIL FROM:<${from}>`), `${tag}: MAIL FROM:<${from}>`).toMatch(/^250 /)
  expect(await c.command('RCPT TO:<bob@dest.test>')).toMatch(/^250 /)
  expect(await c.command('DATA')).toMatch(/^354 /)
  const reply = c.read()
  c.send(dotStuff(`${headers}To: bob@dest.test\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@client.test>\r\n\r\nHello.\r\n`))
  return reply
}

const subjects = () => rx.messages.map((m) => /^Subject: (.*)$/m.exec(m.raw.toString())?.[1])

beforeAll(async () => {
  dir = tempDir('relay-idn-users-')
  F = path.join(dir, 'users.json')
  ca = makeCa()
  const cert = ca.issue(['relay.test'])
  rx = await startReceiver({ host: '127.0.0.2', port: 0, behaviour: { noStartTls: true } })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] } })
  relay = await startRelay({
    config: {
      tls: { cert: cert.cert, key: cert.key },
      listen: [
        { host: '127.0.0.1', port: 0, role: 'mx' },
        { host: '127.0.0.1', port: 0, role: 'submission', tls: 'starttls' },
      ],
      localDomains: ['local.test'],
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port },
      plugins: [
        ['auth-file', { file: F, checkInterval: '100ms' }],
        // One domain listed in each spelling; the relay must start with both.
        ['relay-acl', { trustedNetworks: ['127.0.0.1/32'], senderDomains: ['bücher.example', 'XN--MNCHEN-3YA.example'] }],
      ],
      smtp: { authFailureDelay: '10ms', reverseLookup: false, maxErrors: 100 },
      log: { level: 'debug' },
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
  await Promise.all([dns?.close(), rx?.close()])
})

describe('auth-file users with an internationalized domain', () => {
  it('relay user add takes the user and its senders; the running relay logs them in by either spelling', async () => {
    const dave = userAdd('dave@bücher.example', PW.dave)
    expect(dave.code, dave.stderr).toBe(0)
    expect(dave.stdout).toMatch(/^added dave@bücher\.example in .*; may send as: dave@bücher\.example \(its own address\)\n$/)
    const carol = userAdd('carol@example.test', PW.carol, '--sender', 'bücher.example', '--sender', 'kim@münchen.example', '--sender', '@XN--CAF-DMA.example')
    expect(carol.code, carol.stderr).toBe(0)
    await relay.waitForLog((l) => l.msg === 'users file loaded' && l.users === 2)

    for (const user of ['dave@bücher.example', 'dave@xn--bcher-kva.example', 'DAVE@XN--BCHER-KVA.EXAMPLE', 'dave@BÜCHER.example']) {
      expect((await loggedIn(user, PW.dave)).reply, user).toMatch(/^235 /)
    }
    expect((await loggedIn('dave@xn--bcher-kva.example', 'wrong')).reply).toMatch(/^535 5\.7\.8 /)
    expect((await loggedIn('dave@bucher.example', PW.dave)).reply).toMatch(/^535 5\.7\.8 /) // another domain
    // The decomposed form of ü (as some keyboards type it) is the same name in NFC: taken.
    expect((await loggedIn('dave@bu\u0308cher.example', PW.dave)).reply).toMatch(/^235 /)
    // Characters nobody sees, which IDNA drops from the domain: not another spelling of dave (a log search for him would miss it).
    // Nor another spelling IDNA maps to the same name (fullwidth letters, an ideographic full stop).
    for (const user of ['dave@bücher.example\u200b', 'dave@bü\u00adcher.example', 'dave@bücher\u200d.example', 'dave@ｂücher.example', 'dave@bücher。example', 'DAVE@ＢÜCHER.EXAMPLE']) {
      expect((await loggedIn(user, PW.dave)).reply, JSON.stringify(user)).toMatch(/^535 5\.7\.8 /)
    }
  })

  it('a user sends as its own address in either spelling, at MAIL FROM and in From:/Sender:', async () => {
    const before = rx.messages.length
    for (const login of ['dave@bücher.example', 'dave@xn--bcher-kva.example']) {
      const c = await session(login, PW.dave)
      for (const sender of ['dave@bücher.example', 'dave@xn--bcher-kva.example', 'DAVE@Xn--Bcher-Kva.Example']) {
        expect(await mailFrom(c, sender), `${login}: MAIL FROM:<${sender}>`).toMatch(/^250 /)
      }
      for (const sender of ['eve@bücher.example', 'eve@xn--bcher-kva.example', 'dave@bucher.example']) {
        expect(await mailFrom(c, sender), `${login}: MAIL FROM:<${sender}>`).toMatch(/^553 5\.7\.1 Sender address <.*> not owned by user /)
      }
    }
    const c = await session('dave@xn--bcher-kva.example', PW.dave)
    const cases: [tag: string, headers: string, ok: boolean][] = [
      ['idn-from-u', 'From: Dave <dave@bücher.example>\r\n', true],
      ['idn-from-a', 'From: Dave <dave@xn--bcher-kva.example>\r\n', true],
      ['idn-sender-a', 'From: dave@bücher.example\r\nSender: dave@XN--BCHER-KVA.example\r\n', true],
      ['idn-from-other', 'From: eve@bücher.example\r\n', false],
      ['idn-sender-other', 'From: dave@bücher.example\r\nSender: eve@xn--bcher-kva.example\r\n', false],
    ]
    for (const [tag, headers, ok] of cases) {
      expect(await send(c, 'dave@bücher.example', headers, tag), tag).toMatch(ok ? /^250 2\.0\.0 / : NOT_OWNED)
    }
    const passed = cases.filter((x) => x[2]).map((x) => x[0])
    await rx.waitForMessages(before + passed.length, 10_000)
    await new Promise((r) => setTimeout(r, 300)) // nothing else follows
    expect(subjects().slice(before).sort()).toEqual(passed.sort())
  })

  it('senders entries (a domain, an address, @domain) match in either spelling', async () => {
    const c = await session('carol@example.test', PW.carol)
    for (const [sender, ok] of [
      ['x@bücher.example', true], // entry 'bücher.example'
      ['x@XN--BCHER-KVA.EXAMPLE', true],
      ['kim@münchen.example', true], // entry 'kim@münchen.example'
      ['KIM@xn--mnchen-3ya.example', true],
      ['zoe@münchen.example', false],
      ['y@café.example', true], // entry '@XN--CAF-DMA.example'
      ['y@xn--caf-dma.example', true],
      ['carol@example.test', false], // not listed
      ['x@sub.bücher.example', false],
    ] as const) {
      expect(await mailFrom(c, sender), `MAIL FROM:<${sender}>`).toMatch(ok ? /^250 / : NOT_OWNED)
    }
    expect(await send(c, 'x@bücher.example', 'From: kim@xn--mnchen-3ya.example\r\nSender: x@bücher.example\r\n', 'idn-carol-ok')).toMatch(/^250 2\.0\.0 /)
    expect(await send(c, 'x@bücher.example', 'From: zoe@xn--mnchen-3ya.example\r\n', 'idn-carol-bad')).toMatch(NOT_OWNED)
  })

  it('the CLI finds a user by either spelling; a file naming one user in both spellings is refused', async () => {
    const update = userAdd('dave@xn--bcher-kva.example', PW.daveNew)
    expect(update.code, update.stderr).toBe(0)
    expect(update.stdout).toMatch(/^updated dave@xn--bcher-kva\.example in /)
    const file = JSON.parse(fs.readFileSync(F, 'utf8')) as { users: Record<string, unknown> }
    expect(Object.keys(file.users).sort()).toEqual(['carol@example.test', 'dave@xn--bcher-kva.example'])
    await expect.poll(async () => (await loggedIn('dave@bücher.example', PW.daveNew)).reply, { timeout: 5000 }).toMatch(/^235 /)
    expect((await loggedIn('dave@bücher.example', PW.dave)).reply).toMatch(/^535 /)

    expect(userAdd('erin@BÜCHER.example', PW.erin).code).toBe(0)
    const removed = runCli(['user', 'remove', 'erin@xn--bcher-kva.example', '--file', F])
    expect(removed.code, removed.stderr).toBe(0)
    expect(removed.stdout).toMatch(/^removed erin@bücher\.example from /)

    const both = path.join(dir, 'both.json')
    const hash = (JSON.parse(fs.readFileSync(F, 'utf8')) as { users: Record<string, { hash: string }> }).users['carol@example.test']!.hash
    fs.writeFileSync(both, JSON.stringify({ users: { 'dave@bücher.example': { hash }, 'dave@xn--bcher-kva.example': { hash } } }))
    const list = runCli(['user', 'list', '--file', both])
    expect(list.code).toBe(1)
    expect(list.stderr).toMatch(/the same user twice/)
  })
})

describe('relay-acl senderDomains with an internationalized domain', () => {
  it('check-config takes a U-label domain', () => {
    const file = path.join(dir, 'acl.config.json')
    fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'acl-data'), plugins: [['relay-acl', { senderDomains: ['bücher.example'] }]] }))
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(0)
  })

  it('a trusted client sends as a listed domain in either spelling, in the envelope and in From:/Sender:', async () => {
    const { client: c } = await connectRaw(relay.ports.mx!)
    clients.add(c)
    expect(await c.command('EHLO client.test')).toMatch(/^250 /m)
    const refused = /^553 5\.7\.1 Sender address <.*> is not in a domain this network may send as/
    for (const [sender, ok] of [
      ['x@bücher.example', true], // listed as 'bücher.example'
      ['x@xn--bcher-kva.example', true],
      ['x@münchen.example', true], // listed as 'XN--MNCHEN-3YA.example'
      ['x@Xn--Mnchen-3ya.Example', true],
      ['x@café.example', false],
      ['x@example.test', false],
    ] as const) {
      expect(await mailFrom(c, sender), `MAIL FROM:<${sender}>`).toMatch(ok ? /^250 / : refused)
    }
    expect(await send(c, 'x@bücher.example', 'From: a@xn--bcher-kva.example\r\nSender: b@münchen.example\r\n', 'idn-acl-ok')).toMatch(/^250 2\.0\.0 /)
    expect(await send(c, 'x@bücher.example', 'From: a@café.example\r\n', 'idn-acl-bad')).toMatch(/^553 5\.7\.1 From: <.*> is not in a domain this network may send as/)
  })
})
