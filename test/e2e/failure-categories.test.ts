// Failure categories (issue 12 point 8): a smarthost that refuses our credentials is an `auth`
// problem, not a throttle; a 421 "slow down" that closes the connection (at the greeting, MAIL,
// RCPT or DATA) keeps its reply, is `throttled` and starts the adaptive backoff; the expiry DSN
// says how long the message waited the way config writes durations.
import fs from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { SMTPServerAuthentication } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type Stage, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'
import { makeCa } from '../harness/tls.js'

let dns: TestDns
let smarthost: TestReceiver // 127.0.0.2: TLS, refuses every login with 535 5.7.8
const slow: Partial<Record<Stage, TestReceiver>> = {} // 421 "slow down" (then close) at one stage each
let expiring: TestReceiver // 127.0.0.7: 451 at RCPT, until the message expires
let senderMx: TestReceiver // 127.0.0.8: the sender's MX, where the DSNs arrive
let relay: RelayProcess

const SLOW_STAGES: { stage: Stage; host: string }[] = [
  { stage: 'connect', host: '127.0.0.3' },
  { stage: 'mail', host: '127.0.0.4' },
  { stage: 'rcpt', host: '127.0.0.5' },
  { stage: 'data', host: '127.0.0.6' },
]
const SLOW_DOWN = '4.7.0 Too many messages from your IP, slow down'

const msg = (subject: string) => `From: a@sender.test\r\nTo: x@y.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\n\r\nbody\r\n`
const event = (name: string, recipient: string, timeoutMs = 10_000): Promise<LogLine> => relay.waitForLog((l) => l.event === name && l.recipient === recipient, timeoutMs)
const backoffLine = (domain: string) => (l: LogLine) => typeof l.msg === 'string' && l.msg.startsWith(`throttle: ${domain} asked to slow down`)

beforeAll(async () => {
  const ca = makeCa()
  const cert = ca.issue(['smarthost.test'])
  smarthost = await startReceiver({
    host: '127.0.0.2',
    serverOptions: {
      key: fs.readFileSync(cert.key),
      cert: fs.readFileSync(cert.cert),
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: false,
      onAuth: (_auth: SMTPServerAuthentication, _session: unknown, cb: (err: Error) => void) => cb(Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 })),
    },
  })
  // One port for every MX host (delivery.port), each on its own loopback address.
  let port = 0
  for (const { stage, host } of SLOW_STAGES) {
    slow[stage] = await startReceiver({ host, port, behaviour: { noStartTls: true, reply: { [stage]: () => ({ code: 421, message: SLOW_DOWN }) } } })
    port = slow[stage]!.port
  }
  expiring = await startReceiver({ host: '127.0.0.7', port, behaviour: { noStartTls: true, reply: { rcpt: () => ({ code: 451, message: '4.3.0 Temporary local problem' }) } } })
  senderMx = await startReceiver({ host: '127.0.0.8', port, behaviour: { noStartTls: true } })
  dns = await startDns({
    'smarthost.test': { A: ['127.0.0.2'] },
    ...Object.fromEntries(SLOW_STAGES.map(({ stage, host }) => [`${stage}421.test`, { A: [host] }])),
    'expiring.test': { A: ['127.0.0.7'] },
    'sender.test': { A: ['127.0.0.8'] },
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: {
        port,
        tlsCa: ca.caFile,
        retry: { base: '400ms', factor: 1, max: '400ms' },
        maxQueueLifetime: '2s',
        connectTimeout: '2s',
        commandTimeout: '3s', dataDoneTimeout: '3s',
        mtaSts: { enabled: false },
        delayWarning: false,
        throttle: { backoff: { base: '300ms', max: '600ms' } },
      },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        ['routing', { routes: [{ name: 'smarthost', match: { sender: 'badauth@sender.test' }, kind: 'smarthost', host: `smarthost.test:${smarthost.port}`, tls: 'starttls', auth: { user: 'apikey', pass: 'wrong' } }] }],
      ],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), smarthost?.close(), expiring?.close(), senderMx?.close(), ...Object.values(slow).map((r) => r.close())])
})

describe('failure categories', () => {
  it('a smarthost refusing AUTH (535) is category auth, deferred, and starts no throttle backoff', async () => {
    await sendMail(relay.port, { from: 'badauth@sender.test', to: ['v@anywhere.test'], data: msg('bad auth') })
    const ev = await event('deferred', 'v@anywhere.test')
    expect(ev.response).toMatch(/AUTH as the configured user failed: 535 5\.7\.8/)
    expect(ev.category).toBe('auth')
    // The deferral is recorded; a throttle backoff would have been logged before the event.
    expect(relay.logs.some(backoffLine('anywhere.test'))).toBe(false)
    expect(smarthost.messages).toHaveLength(0)
  })

  it.each(SLOW_STAGES)('a 421 "slow down" at $stage then a close keeps its reply, is throttled and backs the destination off', async ({ stage }) => {
    const rcpt = `u@${stage}421.test`
    await sendMail(relay.port, { from: 'a@sender.test', to: [rcpt], data: msg(`slow ${stage}`) })
    const ev = await event('deferred', rcpt)
    expect(ev.response).toContain(`421 ${SLOW_DOWN}`)
    expect(ev.response).not.toMatch(/connection lost|ECONNECTION/)
    expect(ev.category).toBe('throttled')
    await relay.waitForLog(backoffLine(`${stage}421.test`), 5000)
    expect(slow[stage]!.attempts[stage]).toBeGreaterThan(0)
  })

  it('the expiry DSN says how long the message waited as config writes it, not "0 h"', async () => {
    await sendMail(relay.port, { from: 'expiry@sender.test', to: ['late@expiring.test'], data: msg('expires soon') })
    const ev = await event('bounced', 'late@expiring.test', 15_000)
    expect(ev.response).toMatch(/^4\.4\.7 Message expired after [234]s in the queue; last error: 451 4\.3\.0/)
    const dsn = await eventually(() => senderMx.messages.find((m) => m.to.includes('expiry@sender.test')), 10_000, 'the DSN at the sender')
    const text = dsn.raw.toString('latin1').replace(/\r\n[ \t]+/g, ' ')
    expect(text).toMatch(/expired after [234]s in the queue/)
    expect(text).not.toMatch(/expired after \d+ h\b/)
    // The expiry is the relay's verdict: not put in the remote host's mouth.
    expect(text).toMatch(/Diagnostic-Code: x-local; 4\.4\.7 Message expired/)
    expect(text).not.toMatch(/said: 4\.4\.7/)
  })
})
