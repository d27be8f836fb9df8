// Delivery events as JSON log lines (msg and event 'accepted', 'delivered', 'deferred', 'bounced'
// or 'suppressed'): the fields an operator's log pipeline needs, and no secrets or content.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { ROOT, startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'

const STATIC_AUTH = path.join(ROOT, 'test/fixtures/static-auth.plugin.ts')
const PASSWORD = 'Event-Log-Pa55word-7d1f'
const BODY_MARKER = 'body-marker-3f9a1c'

let ca: TestCa
let dns: TestDns
let mx: TestReceiver
let relay: RelayProcess

const message = (n: string) => `From: alice@sender.test\r\nTo: someone@dest.test\r\nSubject: ${n}\r\nMessage-ID: <${n}@sender.test>\r\n\r\n${BODY_MARKER} ${n}\r\n`

const eventLine = (event: string, match: (l: LogLine) => boolean) =>
  relay.waitForLog((l) => l.msg === event && l.event === event && match(l), 15_000)

beforeAll(async () => {
  ca = makeCa()
  const cert = ca.issue(['relay.test'])
  mx = await startReceiver({ host: '127.0.0.2' })
  mx.setBehaviour({
    reply: {
      rcpt: ({ address }) =>
        address === 'gone@two.test' ? { code: 550, message: '5.1.1 no such user' } : address === 'busy@two.test' ? { code: 451, message: '4.2.1 mailbox busy, try again in 5 minutes' } : undefined,
    },
  })
  dns = await startDns({
    'one.test': { MX: [{ exchange: 'mx.test', priority: 10 }] },
    'two.test': { MX: [{ exchange: 'mx.test', priority: 10 }] },
    'mx.test': { A: ['127.0.0.2'] },
  })
  relay = await startRelay({
    config: {
      listen: [
        { host: '127.0.0.1', port: 0, role: 'mx' },
        { host: '127.0.0.1', port: 0, role: 'submission', tls: 'starttls' },
      ],
      tls: { cert: cert.cert, key: cert.key },
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s' },
      plugins: [
        [STATIC_AUTH, { users: { 'alice@sender.test': { password: PASSWORD } } }],
        ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }],
      ],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), mx?.close()])
})

describe('delivery events in the log', () => {
  it('accepted and delivered: queue id, envelope, client, TLS, remote host, response, timings', async () => {
    const r = await sendMail(relay.ports.submission!, {
      from: 'alice@sender.test',
      to: ['bob@one.test', 'carol@one.test'],
      data: message('one'),
      starttls: { ca: ca.caPem, servername: 'relay.test' },
      auth: { user: 'alice@sender.test', pass: PASSWORD },
    })
    expect(r.lastReply).toMatch(/^250 /)
    const queueId = /queued as (\w+)/.exec(r.lastReply)![1]!

    const accepted = await eventLine('accepted', (l) => l.queueId === queueId)
    expect(accepted).toMatchObject({ level: 30, queueId, messageId: '<one@sender.test>', sender: 'alice@sender.test', recipients: ['bob@one.test', 'carol@one.test'], client: '127.0.0.1', listener: 'submission', user: 'alice@sender.test' })
    expect(accepted.size).toBeGreaterThan(message('one').length)
    expect(accepted.tls).toMatchObject({ version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String) })

    for (const to of ['bob@one.test', 'carol@one.test']) {
      const d = await eventLine('delivered', (l) => l.recipient === to)
      expect(d).toMatchObject({ queueId, messageId: '<one@sender.test>', sender: 'alice@sender.test', domain: 'one.test', attempts: 1 })
      expect(d.remoteHost).toBe(`mx.test[127.0.0.2]:${mx.port}`)
      expect(d.response).toMatch(/^250 /)
      // The receiver offers STARTTLS with a certificate nobody vouches for.
      expect(d.tls).toMatchObject({ version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String), verified: false })
      expect(d.durationMs).toEqual(expect.any(Number))
      expect(d.durationMs as number).toBeGreaterThanOrEqual(0)
      expect(d.queuedMs as number).toBeGreaterThanOrEqual(d.durationMs as number)
      expect(d.category).toBeUndefined()
    }
  })

  it('deferred and bounced carry the category; a suppressed recipient is logged with its source', async () => {
    const r = await sendMail(relay.port, { from: '', to: ['gone@two.test', 'busy@two.test'], data: message('two') })
    const queueId = /queued as (\w+)/.exec(r.lastReply)![1]!

    const bounced = await eventLine('bounced', (l) => l.recipient === 'gone@two.test')
    expect(bounced).toMatchObject({ level: 40, queueId, sender: '', domain: 'two.test', category: 'bad-mailbox', attempts: 1, remoteHost: `mx.test[127.0.0.2]:${mx.port}` })
    expect(bounced.response).toMatch(/^550 5\.1\.1 no such user/)
    expect(bounced.queuedMs).toEqual(expect.any(Number))

    const deferred = await eventLine('deferred', (l) => l.recipient === 'busy@two.test')
    expect(deferred).toMatchObject({ level: 40, queueId, category: 'throttled', attempts: 1 })
    expect(deferred.response).toMatch(/^451 4\.2\.1 mailbox busy/)
    // Next attempt in an hour (retry.base).
    expect(deferred.nextAttemptAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    expect(Date.parse(deferred.nextAttemptAt as string)).toBeGreaterThan(Date.now() + 50 * 60_000)

    const refused = await sendMail(relay.port, { from: 'x@sender.test', to: ['gone@two.test'], data: message('three') })
    expect(refused.lastReply).toMatch(/^550 5\.1\.1 /)
    const suppressed = await eventLine('suppressed', (l) => l.recipient === 'gone@two.test')
    expect(suppressed).toMatchObject({ source: queueId, client: '127.0.0.1', listener: 'mx', tls: false })
    expect(suppressed.reason).toMatch(/550 5\.1\.1 no such user/)
  })

  it('no password and no message content in any log line', async () => {
    // Everything logged so far, accepted/delivered lines included.
    expect(relay.logs.filter((l) => ['accepted', 'delivered', 'deferred', 'bounced', 'suppressed'].includes(l.msg) && l.event === l.msg).length).toBeGreaterThanOrEqual(7)
    const all = relay.logs.map((l) => JSON.stringify(l)).join('\n')
    expect(all).not.toContain(PASSWORD)
    expect(all).not.toContain(BODY_MARKER)
  })
})
