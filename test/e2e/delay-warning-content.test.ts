// What a delay warning tells the sender about the relay's own deferrals, as the sender's MX receives
// it: the Status is the enhanced code of the relay's result (4.4.1 host unreachable, 4.4.3 DNS,
// 4.7.5 TLS), not 4.0.0; and a smarthost that refuses our credentials is reported without the
// account name (for Amazon SES the access key ID), even where the smarthost's reply quotes it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import type { SMTPServerAuthentication } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { makeCa } from '../harness/tls.js'
import { eventually, runCli, startRelay, type RelayProcess } from '../harness/relay.js'

const SES_USER = 'AKIAZ3EXAMPLE7SMTPUS'
const SES_PASS = 'wrong-secret-Pw-77'

let dns: TestDns
let smarthost: TestReceiver // 127.0.7.1: STARTTLS + AUTH, refuses every login quoting the user
let plainMx: TestReceiver // 127.0.7.2: no STARTTLS (tls.test, routed with tls: 'encrypt')
let senderMx: TestReceiver // 127.0.7.3: sender.test, where the warnings arrive
let relay: RelayProcess

beforeAll(async () => {
  const ca = makeCa()
  const cert = ca.issue(['smtp.ses.test'])
  // Like servers that echo the login: the refusal names the user it refused.
  const onAuth = (auth: SMTPServerAuthentication, _s: unknown, cb: (err: Error) => void) =>
    cb(Object.assign(new Error(`5.7.8 Authentication failed for ${auth.username}`), { responseCode: 535 }))
  smarthost = await startReceiver({ host: '127.0.7.1', serverOptions: { key: fs.readFileSync(cert.key), cert: fs.readFileSync(cert.cert), authMethods: ['PLAIN', 'LOGIN'], authOptional: false, onAuth } })
  plainMx = await startReceiver({ host: '127.0.7.2', port: smarthost.port, behaviour: { noStartTls: true } })
  senderMx = await startReceiver({ host: '127.0.7.3', port: smarthost.port, behaviour: { noStartTls: true } })
  dns = await startDns({
    'smtp.ses.test': { A: ['127.0.7.1'] },
    'tls.test': { A: ['127.0.7.2'] },
    'sender.test': { A: ['127.0.7.3'] },
    'refused.test': { A: ['127.0.7.9'] }, // nothing listens there
    'servfail.test': 'SERVFAIL',
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: smarthost.port, tlsCa: ca.caFile, connectTimeout: '2s', retry: { base: '1h', factor: 1, max: '1h' }, delayWarning: '1s', mtaSts: { enabled: false } },
      smtp: { trustedNetworks: ['127.0.0.0/8'], reverseLookup: false },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        [
          'routing',
          {
            routes: [
              { name: 'ses', match: { domain: 'ses.test' }, kind: 'smarthost', host: 'smtp.ses.test', port: smarthost.port, tls: 'starttls', auth: { user: SES_USER, pass: SES_PASS } },
              { name: 'tls-required', match: { domain: 'tls.test' }, kind: 'mx', tls: 'encrypt' },
            ],
          },
        ],
      ],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), smarthost?.close(), plainMx?.close(), senderMx?.close()])
})

const msg = (subject: string) => `From: s@sender.test\r\nTo: x@y.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@sender.test>\r\n\r\nbody\r\n`

/** The delay warning the sender's MX got for `recipient`: its per-recipient fields. */
async function warningFor(recipient: string): Promise<{ raw: string; fields: string }> {
  const m = await eventually(() => senderMx.messages.find((x) => x.raw.toString().includes(`Final-Recipient: rfc822; ${recipient}`)), 15_000, `a delay warning for ${recipient}`)
  const raw = m.raw.toString()
  expect(raw).toMatch(/^Subject: Delayed Mail \(still being retried\)/m)
  const fields = raw.split(/\r\n\r\n/).find((b) => b.includes(`Final-Recipient: rfc822; ${recipient}`))!
  return { raw, fields }
}

describe('delay warnings for the relay\'s own deferrals', () => {
  it('carry the enhanced status of the local result: 4.4.1 unreachable, 4.4.3 DNS, 4.7.5 TLS', async () => {
    const cases = [
      { rcpt: 'x@refused.test', status: '4.4.1', diag: /^Diagnostic-Code: x-local; 4\.4\.1 Host refused\.test\[127\.0\.7\.9\]/m },
      { rcpt: 'x@servfail.test', status: '4.4.3', diag: /^Diagnostic-Code: x-local; 4\.4\.3 DNS/m },
      { rcpt: 'x@tls.test', status: '4.7.5', diag: /^Diagnostic-Code: x-local; 4\.7\.5 /m },
    ]
    for (const [i, c] of cases.entries()) {
      const r = await sendMail(relay.port, { from: `d${i}@sender.test`, to: [c.rcpt], data: msg(`local${i}`) })
      expect(r.lastReply).toMatch(/^250 /)
    }
    for (const c of cases) {
      const ev = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === c.rcpt, 10_000)
      expect(String(ev.response)).toMatch(new RegExp(`^${c.status.replace(/\./g, '\\.')} `))
      const { fields } = await warningFor(c.rcpt)
      expect(fields).toContain('Action: delayed')
      expect(fields, fields).toContain(`Status: ${c.status}\r\n`)
      expect(fields).toMatch(c.diag)
    }
    expect(plainMx.messages).toEqual([])
  })
})

describe('a smarthost that refuses our credentials', () => {
  it('is reported without the account name: event, queue listing and the delay warning to the sender', async () => {
    const r = await sendMail(relay.port, { from: 'ext@sender.test', to: ['user@ses.test'], data: msg('ses') })
    expect(r.lastReply).toMatch(/^250 /)
    const ev = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'user@ses.test', 10_000)
    expect(ev.response).toMatch(/^4\.7\.0 smtp\.ses\.test\[127\.0\.7\.1\]:\d+: AUTH as the configured user failed: 535 5\.7\.8 Authentication failed for <user>$/)
    expect(ev.category).toBe('auth')
    expect(ev.routeName).toBe('ses')
    expect(JSON.stringify(ev)).not.toContain(SES_USER)

    const { raw, fields } = await warningFor('user@ses.test')
    expect(fields).toContain('Status: 4.7.0\r\n')
    expect(fields).toMatch(/^Diagnostic-Code: x-local; 4\.7\.0 smtp\.ses\.test\[127\.0\.7\.1\]:\d+: AUTH as the configured user failed: 535/m)
    expect(raw).not.toContain(SES_USER)
    expect(raw).not.toContain(SES_PASS)

    const list = runCli(['queue', 'list', '--json', '--config', relay.configFile])
    expect(list.stdout).toContain('AUTH as the configured user failed')
    expect(list.stdout).not.toContain(SES_USER)
    expect(smarthost.messages).toEqual([])
  })
})
