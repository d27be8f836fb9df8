// Smarthost routes against servers that misbehave on purpose (test/harness/scripted-smtp.ts): what
// the credentials become when a server quotes them back, and what reaches the sender, the logs and
// the queue.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { startScripted, type ScriptedServer } from '../harness/scripted-smtp.js'
import { sendMail } from '../harness/smtp-client.js'
import { makeCa } from '../harness/tls.js'
import { startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'

const USER = 'relay-account'
const PASS = 'Sm4rthost-Passw0rd'
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64')

let dns: TestDns
let senderMx: TestReceiver
let relay: RelayProcess
const servers: Record<string, ScriptedServer> = {}

const msg = (from: string) => `From: ${from}\r\nTo: someone@customer.test\r\nSubject: hostile smarthost\r\n\r\nbody\r\n`
const event = (name: string, recipient: string, timeoutMs = 15_000): Promise<LogLine> => relay.waitForLog((l) => l.event === name && l.recipient === recipient, timeoutMs)

beforeAll(async () => {
  const ca = makeCa()
  const c = ca.issue(['smarthost.test'])
  const tls = { key: fs.readFileSync(c.key), cert: fs.readFileSync(c.cert) }
  // Replies to AUTH that quote what the client sent: the PLAIN command, or LOGIN's base64 lines.
  servers.echoPlain = await startScripted('127.0.0.2', { ehlo: ['smarthost.test', 'STARTTLS', 'AUTH PLAIN'], tls, auth: (line) => `535 5.7.8 authentication failed: [${line}]` })
  servers.echoLogin = await startScripted('127.0.0.2', {
    ehlo: ['smarthost.test', 'STARTTLS', 'AUTH LOGIN'],
    tls,
    auth: (line) => (/^AUTH LOGIN$/i.test(line) ? '334 VXNlcm5hbWU6' : line === b64(USER) ? '334 UGFzc3dvcmQ6' : `535 5.7.8 bad password ${line} for ${b64(USER)}`),
  })
  // AUTH taken; then RCPT refused quoting the account and password (a server's 'helpful' diagnostic).
  servers.echoLater = await startScripted('127.0.0.2', { ehlo: ['smarthost.test', 'STARTTLS', 'AUTH PLAIN'], tls, auth: () => '235 2.7.0 ok', rcpt: () => `550 5.7.1 user ${USER} with password ${PASS} may not send to this recipient` })
  // AUTH answered with a code outside 2xx-5xx (RFC 5321 §4.2.1).
  servers.auth600 = await startScripted('127.0.0.2', { ehlo: ['smarthost.test', 'STARTTLS', 'AUTH PLAIN'], tls, auth: () => '600 what' })
  // STARTTLS answered 220, then plain text instead of a handshake; AUTH would be taken in clear.
  servers.garbage = await startScripted('127.0.0.2', { ehlo: ['smarthost.test', 'STARTTLS', 'AUTH PLAIN LOGIN'], starttls: 'garbage' })
  servers.garbageLater = await startScripted('127.0.0.2', { ehlo: ['smarthost.test', 'STARTTLS', 'AUTH PLAIN LOGIN'], starttls: 'garbage-later' })
  senderMx = await startReceiver({ host: '127.0.0.6', behaviour: { noStartTls: true } })
  servers.mayGarbage = await startScripted('127.0.0.7', { ehlo: ['mx.may-garbage.test', 'STARTTLS'], starttls: 'garbage' }, senderMx.port)
  dns = await startDns({
    'smarthost.test': { A: ['127.0.0.2'] },
    'sender.example': { A: ['127.0.0.6'] },
    'may-garbage.test': { MX: [{ exchange: 'mx.may-garbage.test', priority: 10 }] },
    'mx.may-garbage.test': { A: ['127.0.0.7'] },
  })
  const route = (name: string) => ({ name, match: { sender: `${name}@sender.example` }, kind: 'smarthost', host: 'smarthost.test', port: servers[name]!.port, tls: 'starttls', auth: { user: USER, passEnv: 'SMARTHOST_PASS' } })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: senderMx.port, tlsCa: ca.caFile, retry: { base: '1h' }, connectTimeout: '3s' },
      log: { level: 'debug' },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }], ['routing', { routes: [route('echoPlain'), route('echoLogin'), route('echoLater'), route('garbage'), route('garbageLater'), route('auth600')] }]],
    },
    env: { SMARTHOST_PASS: PASS },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, senderMx, ...Object.values(servers)].map((x) => x?.close()))
})

describe('a smarthost that quotes the credentials back', () => {
  const secrets = [PASS, b64(PASS), b64(`\0${USER}\0${PASS}`), USER, b64(USER)]
  it.each(['echoPlain', 'echoLogin'])('%s: deferred as an auth failure; neither the password nor the account, plain or base64, in the event, the logs or the queue', async (name) => {
    const rcpt = `a@${name.toLowerCase()}.test`
    await sendMail(relay.port, { from: `${name}@sender.example`, to: [rcpt], data: msg(`${name}@sender.example`) })
    const ev = await event('deferred', rcpt)
    expect(ev.category).toBe('auth')
    expect(ev.response).toMatch(/^4\.7\.0 smarthost\.test\[127\.0\.0\.2\]:\d+: AUTH as the configured user failed: 535 5\.7\.8 /)
    // the server did get them (inside TLS), and quoted them
    expect(servers[name]!.sessions.flat().some((l) => l.startsWith('TLS ') && (l.includes(b64(PASS)) || l.includes(b64(`\0${USER}\0${PASS}`))))).toBe(true)
    const entry = (await relay.listQueue()).find((q) => q.recipients[0]!.address === rcpt)!
    const seen = JSON.stringify(relay.logs) + JSON.stringify(entry)
    for (const secret of secrets) expect(seen).not.toContain(secret)
  })
})

describe('a smarthost that quotes the credentials in a reply after AUTH', () => {
  it('bounced: neither the password nor the account in the event, the logs, or the DSN to the sender', async () => {
    const before = senderMx.messages.length
    await sendMail(relay.port, { from: 'echoLater@sender.example', to: ['a@echolater.test'], data: msg('echoLater@sender.example') })
    const ev = await event('bounced', 'a@echolater.test')
    expect(ev.response).toBe('550 5.7.1 user <user> with password <password> may not send to this recipient')
    const dsn = (await senderMx.waitForMessages(before + 1, 10_000)).at(-1)!.raw.toString()
    expect(dsn).toContain('with password <password> may not send')
    for (const secret of [PASS, USER]) expect(JSON.stringify(relay.logs) + dsn).not.toContain(secret)
  })
})

describe('AUTH answered "600 what"', () => {
  it('a protocol error, deferred: not read as the credentials refused, nothing after AUTH', async () => {
    await sendMail(relay.port, { from: 'auth600@sender.example', to: ['a@auth600.test'], data: msg('auth600@sender.example') })
    const ev = await event('deferred', 'a@auth600.test')
    expect(ev.response).toMatch(/^4\.4\.1 Host smarthost\.test\[127\.0\.0\.2\]:\d+ unreachable: protocol error: malformed reply: 600 what$/)
    expect(ev.category).not.toBe('auth')
    expect(servers.auth600!.sessions[0]!.at(-1)).toMatch(/^TLS AUTH PLAIN /)
  })
})

describe('STARTTLS answered 220, then plain text instead of a handshake', () => {
  it.each(['garbage', 'garbageLater'])('%s: a smarthost route defers 4.7.5 (category tls) with the reason in words, nothing after STARTTLS, no second try in clear', async (name) => {
    const rcpt = `a@${name.toLowerCase()}.test`
    await sendMail(relay.port, { from: `${name}@sender.example`, to: [rcpt], data: msg(`${name}@sender.example`) })
    const ev = await event('deferred', rcpt)
    expect(ev.category).toBe('tls')
    expect(ev.response).toMatch(/^4\.7\.5 TLS policy 'verify': smarthost\.test\[127\.0\.0\.2\]:\d+: TLS negotiation failed: /)
    expect(ev.response).toMatch(name === 'garbage' ? /plain text after the reply to STARTTLS/ : /wrong version number/)
    expect(ev.response).not.toMatch(/SSL routines|\.c:\d+|[0-9A-F]{12,}:error/)
    expect(servers[name]!.sessions).toEqual([['EHLO relay.test', 'STARTTLS']])
  })

  it("an MX under TLS policy 'may': the same host again in plain text, as after any failed handshake", async () => {
    await sendMail(relay.port, { from: 'm@sender.example', to: ['a@may-garbage.test'], data: msg('m@sender.example') })
    const ev = await event('delivered', 'a@may-garbage.test')
    expect(ev.tls).toBe(false)
    expect(servers.mayGarbage!.sessions.map((s) => s.slice(0, 2))).toEqual([['EHLO relay.test', 'STARTTLS'], ['EHLO relay.test', 'MAIL FROM:<m@sender.example>']])
  })
})
