// The reputation plugin's feedback addresses are no open relay. A feedback address outside the
// local domains is accepted from anyone (the providers' report senders may not relay), so mail to
// it must never be delivered: a transaction with one takes feedback addresses only. The RCPT that
// would mix them gets 452 4.5.3 (the client sends it in a transaction of its own); a transaction
// mixed past the plugin's rcpt hook (a plugin listed earlier accepted) is refused at DATA, or at
// the queue when its data hook was skipped. A feedback address in a local domain is a local mailbox
// and mixes as before. Real DNS and receiving MX hosts on loopback; relay-acl trusts 127.0.0.1 only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff } from '../harness/smtp-client.js'
import { eventually, ROOT, runCli, startRelay, type RelayProcess } from '../harness/relay.js'
import { originalFromRelay, yahooReport } from '../reputation/reports.js'

const FBL = 'fbl@feedback.test' // not a local domain: the plugin's own exception lets it in
const LOCAL_FBL = 'fbl@local.test' // a feedback address that is a local mailbox
const UNTRUSTED = '127.0.0.77'
const TRUSTED = '127.0.0.1'
const ACCEPT_EARLY = path.join(ROOT, 'test/fixtures/accept-early.plugin.ts')
const OK = expect.stringMatching(/^250 2\.1\.5 /)
const separately = (a: string) => `452 4.5.3 Feedback reports go in a transaction of their own: send to <${a}> separately`

let dns: TestDns
let foreignMx: TestReceiver // 127.0.0.2: MX of feedback.test and dest.test
let localMx: TestReceiver // 127.0.0.3: MX of local.test
let relay: RelayProcess // reputation first, then relay-acl
let early: RelayProcess // a plugin that accepts at RCPT (local domains) and DATA, listed before reputation

const message = (subject: string, extra = '') => `From: <spammer@evil.test>\r\nTo: <victim@dest.test>\r\nSubject: ${subject}\r\n${extra}\r\nspam\r\n`

/** MAIL, every RCPT (whatever the replies), then DATA when one was accepted: the replies a client sees. */
async function transaction(r: RelayProcess, from: string, o: { mail: string; rcpts: string[]; data: string }): Promise<{ rcpts: string[]; data?: string }> {
  const { client, greeting } = await connectRaw(r.port, '127.0.0.1', 5000, undefined, from)
  try {
    expect(greeting).toMatch(/^220 /)
    expect(await client.command('EHLO client.test')).toMatch(/^250 /m)
    expect(await client.command(`MAIL FROM:<${o.mail}>`)).toMatch(/^250 /)
    const rcpts: string[] = []
    for (const to of o.rcpts) rcpts.push(await client.command(`RCPT TO:<${to}>`))
    if (!rcpts.some((x) => x.startsWith('250 '))) return { rcpts }
    expect(await client.command('DATA')).toMatch(/^354 /)
    const reply = client.read()
    client.send(dotStuff(o.data))
    return { rcpts, data: await reply }
  } finally {
    client.close()
  }
}

const received = (rx: TestReceiver, subject: string) => rx.messages.filter((m) => m.raw.toString('latin1').includes(`Subject: ${subject}\r\n`))
const toFbl = (rx: TestReceiver) => rx.messages.filter((m) => m.to.some((a) => a.toLowerCase() === FBL))

beforeAll(async () => {
  foreignMx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
  localMx = await startReceiver({ host: '127.0.0.3', port: foreignMx.port, behaviour: { noStartTls: true } })
  dns = await startDns({
    'feedback.test': { MX: [{ exchange: 'mx.feedback.test', priority: 10 }] },
    'mx.feedback.test': { A: ['127.0.0.2'] },
    'dest.test': { A: ['127.0.0.2'] },
    'local.test': { MX: [{ exchange: 'mx.local.test', priority: 10 }] },
    'mx.local.test': { A: ['127.0.0.3'] },
  })
  const config = (plugins: unknown[]) => ({
    localDomains: ['local.test'],
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: { port: foreignMx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
    smtp: { reverseLookup: false, maxErrors: 100 },
    plugins,
  })
  const reputation = ['reputation', { feedbackAddresses: [FBL, LOCAL_FBL] }]
  const acl = ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }]
  ;[relay, early] = await Promise.all([startRelay({ config: config([reputation, acl]) }), startRelay({ config: config([[ACCEPT_EARLY, {}], reputation, acl]) })])
}, 60_000)

afterAll(async () => {
  await Promise.all([relay?.stop(), early?.stop()])
  await Promise.all([dns?.close(), foreignMx?.close(), localMx?.close()])
})

describe('feedback addresses do not relay', () => {
  it('untrusted client: the feedback address, then a local and a foreign recipient: both get 452 4.5.3; what is left is taken as a report, not delivered', async () => {
    const r = await transaction(relay, UNTRUSTED, { mail: 'spammer@evil.test', rcpts: ['FBL@feedback.test', 'postmaster', 'x@dest.test'], data: message('fbl first') })
    expect(r.rcpts).toEqual([OK, separately('postmaster@local.test'), separately('x@dest.test')])
    expect(r.data).toMatch(/^250 2\.0\.0 Ok: feedback report not recorded, not a feedback report/)
    await relay.waitForLog((l) => l.event === 'complaint-unparsed' && l.from === 'spammer@evil.test', 5000)
  })

  it('untrusted client: a local recipient, then the feedback address: 452 4.5.3 for it; the message goes to the local recipient only', async () => {
    const r = await transaction(relay, UNTRUSTED, { mail: 'spammer@evil.test', rcpts: ['postmaster', 'fbl@FEEDBACK.test'], data: message('local first') })
    expect(r.rcpts).toEqual([OK, separately('fbl@FEEDBACK.test')])
    expect(r.data).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const [m] = await eventually(() => (received(localMx, 'local first').length ? received(localMx, 'local first') : undefined), 10_000, 'the message at mx.local.test')
    expect(m!.to).toEqual(['postmaster@local.test'])
  })

  it('a client that may relay gets the same rule: no transaction mixes the foreign feedback address with others', async () => {
    const a = await transaction(relay, TRUSTED, { mail: 'news@news.test', rcpts: [FBL, 'user@dest.test'], data: message('trusted fbl first') })
    expect(a.rcpts).toEqual([OK, separately('user@dest.test')])
    expect(a.data).toMatch(/^250 2\.0\.0 Ok: feedback report not recorded/)
    const b = await transaction(relay, TRUSTED, { mail: 'news@news.test', rcpts: ['user@dest.test', FBL], data: message('trusted dest first') })
    expect(b.rcpts).toEqual([OK, separately(FBL)])
    expect(b.data).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const [m] = await eventually(() => (received(foreignMx, 'trusted dest first').length ? received(foreignMx, 'trusted dest first') : undefined), 10_000, 'the message at dest.test')
    expect(m!.to).toEqual(['user@dest.test'])
  })

  it('a feedback loop sending one report to one address (or to both feedback addresses) gets it recorded, as before', async () => {
    const original = originalFromRelay({ queueId: 'AAAAAAAAAAAA', from: 'news@news.test', to: 'user@dest.test', messageId: 'weekly-1@news.test' })
    for (const rcpts of [[FBL], [FBL, LOCAL_FBL]]) {
      const report = yahooReport({ original, mailFrom: 'news@news.test', rcptTo: 'user@dest.test', to: rcpts[0]! })
      const r = await transaction(relay, UNTRUSTED, { mail: '', rcpts, data: report })
      expect(r.rcpts.every((x) => x.startsWith('250 2.1.5 '))).toBe(true)
      expect(r.data).toMatch(/^250 2\.0\.0 Ok: feedback report recorded/)
    }
    await eventually(() => relay.logs.filter((l) => l.event === 'complaint').length === 2 || undefined, 5000, 'two complaint lines')
  })

  it('a feedback address in a local domain is a local mailbox: mixed with another recipient it is ordinary mail, delivered to both', async () => {
    const r = await transaction(relay, UNTRUSTED, { mail: 'someone@else.test', rcpts: [LOCAL_FBL, 'postmaster'], data: message('local feedback mixed') })
    expect(r.rcpts).toEqual([OK, OK])
    expect(r.data).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const got = await eventually(() => (received(localMx, 'local feedback mixed').length ? received(localMx, 'local feedback mixed') : undefined), 10_000, 'the message at mx.local.test')
    expect(got.flatMap((m) => m.to).sort()).toEqual([LOCAL_FBL, 'postmaster@local.test'])
  })

  it('mixed past the rcpt hook (a plugin listed earlier accepted the local recipient): DATA is refused, nothing queued', async () => {
    const r = await transaction(early, UNTRUSTED, { mail: 'spammer@evil.test', rcpts: [FBL, 'postmaster'], data: message('early rcpt') })
    expect(r.rcpts).toEqual([OK, OK]) // postmaster: accepted by accept-early, the rcpt hook of reputation never saw it
    expect(r.data).toBe(`550 5.7.1 Feedback address <${FBL}> takes reports only, in a transaction of their own; message not delivered`)
  })

  it('a report whose data hook was skipped (a plugin listed earlier accepted at DATA): the queue refuses it, and says why in the log', async () => {
    const r = await transaction(early, UNTRUSTED, { mail: 'spammer@evil.test', rcpts: [FBL], data: message('early data', 'X-Accept-Early: yes\r\n') })
    expect(r.rcpts).toEqual([OK])
    expect(r.data).toBe(`554 5.7.1 Feedback address <${FBL}> takes reports only, in a transaction of their own; message not delivered`)
    const line = await early.waitForLog((l) => l.plugin === 'reputation' && l.level === 50, 5000)
    expect(line.msg).toMatch(/list reputation before plugins that accept at DATA/)
  })

  it('nothing reached the feedback address: no message queued for it, none received by its MX', async () => {
    // Deliveries of this file's messages are done (the tests above waited for theirs); the queues are empty.
    for (const r of [relay, early]) {
      await eventually(() => (JSON.parse(runCli(['queue', 'list', '--json', '--config', r.configFile]).stdout) as unknown[]).length === 0 || undefined, 10_000, 'an empty queue')
      expect(r.logs.filter((l) => l.event === 'accepted' && (l.recipients as string[]).some((a) => a.toLowerCase() === FBL))).toEqual([])
    }
    expect(toFbl(foreignMx)).toEqual([])
    expect(toFbl(localMx)).toEqual([])
  })
})
