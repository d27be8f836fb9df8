// The hosted relays of docs/smarthosts.md (SendGrid, Amazon SES, Mailgun), each played by a local
// look-alike under its real host name (the test DNS points it at 127.0.0.x; the test CA signs it),
// reached through the routing plugin with the doc's options: STARTTLS or implicit TLS with the
// certificate verified, AUTH with that provider's user name form. And what a user sees when it goes
// wrong: a bad credential (535, deferred, category auth, no backoff), "over the rate" (421,
// deferred, category throttled, the destination paused), an unverified SES identity (554, bounced
// with a DSN to the sender).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import type { SMTPServerAuthentication } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { makeCa } from '../harness/tls.js'
import { startRelay, tempDir, type LogLine, type RelayProcess } from '../harness/relay.js'

const SENDGRID_KEY = 'SG.test-key.0123456789abcdef'
const SES_USER = 'AKIAZ3EXAMPLE7SMTPUS' // 20 characters: an SES SMTP user name
const SES_PASS = 'BExampleSesSmtpPassword0123456789abcdefghij'
const MAILGUN_USER = 'postmaster@mg.example'
const MAILGUN_PASS = 'mailgun-smtp-password-42'

const logins: { provider: string; user: string; ok: boolean }[] = []
let dns: TestDns
let sendgrid587: TestReceiver
let sendgrid465: TestReceiver
let ses: TestReceiver
let ses465: TestReceiver
let mailgun: TestReceiver
let senderMx: TestReceiver // where DSNs to the senders go
let relay: RelayProcess

/** smtp-server's onAuth accepting only `user` (a string or a form) with `pass`; a provider-like 535 otherwise. */
function onAuth(provider: string, user: RegExp, pass: string, refusal: string) {
  return (auth: SMTPServerAuthentication, _session: unknown, cb: (err: Error | null | undefined, res?: { user: string }) => void) => {
    const ok = user.test(auth.username ?? '') && auth.password === pass
    logins.push({ provider, user: auth.username ?? '', ok })
    if (ok) return cb(null, { user: auth.username! })
    cb(Object.assign(new Error(refusal), { responseCode: 535 }))
  }
}

const msg = (from: string, subject: string) => `From: ${from}\r\nTo: someone@customer.test\r\nSubject: ${subject}\r\n\r\nbody\r\n`
const event = (name: string, recipient: string, timeoutMs = 15_000): Promise<LogLine> => relay.waitForLog((l) => l.event === name && l.recipient === recipient, timeoutMs)

beforeAll(async () => {
  const ca = makeCa()
  const cert = (name: string) => {
    const c = ca.issue([name])
    return { key: fs.readFileSync(c.key), cert: fs.readFileSync(c.cert) }
  }
  const tlsOnly = { authMethods: ['PLAIN', 'LOGIN'], authOptional: false, hideSTARTTLS: false }
  const sg = { ...cert('smtp.sendgrid.net'), ...tlsOnly, onAuth: onAuth('sendgrid', /^apikey$/, SENDGRID_KEY, '5.7.8 Authentication failed: Bad username / password') }
  sendgrid587 = await startReceiver({ host: '127.0.0.2', serverOptions: sg })
  sendgrid465 = await startReceiver({ host: '127.0.0.2', serverOptions: { ...sg, secure: true } })
  const sesAuth = onAuth('ses', /^[A-Z0-9]{20}$/, SES_PASS, '5.7.8 Authentication Credentials Invalid')
  ses465 = await startReceiver({ host: '127.0.0.3', serverOptions: { ...cert('email-smtp.eu-west-1.amazonaws.com'), ...tlsOnly, secure: true, onAuth: sesAuth } })
  // SES: 554 for a sender identity that is not verified (here at MAIL FROM).
  ses = await startReceiver({
    host: '127.0.0.3',
    serverOptions: { ...cert('email-smtp.eu-west-1.amazonaws.com'), ...tlsOnly, onAuth: sesAuth },
    behaviour: {
      reply: {
        mail: ({ address }) => (address?.endsWith('@unverified.example') ? { code: 554, message: `Message rejected: Email address is not verified. The following identities failed the check in region EU-WEST-1: ${address}` } : undefined),
      },
    },
  })
  // Mailgun: over the rate once for rate@mg.example, then accepting.
  let rateHits = 0
  mailgun = await startReceiver({
    host: '127.0.0.4',
    serverOptions: { ...cert('smtp.eu.mailgun.org'), ...tlsOnly, secure: true, onAuth: onAuth('mailgun', /^postmaster@mg\.example$/, MAILGUN_PASS, '5.7.0 Authentication failed') },
    behaviour: {
      reply: { mail: ({ address }) => (address === 'rate@mg.example' && rateHits++ === 0 ? { code: 421, message: '4.7.0 Sending rate over the limit for mg.example, try again later' } : undefined) },
    },
  })
  senderMx = await startReceiver({ host: '127.0.0.6', behaviour: { noStartTls: true } })
  dns = await startDns({
    'smtp.sendgrid.net': { A: ['127.0.0.2'] },
    'down.sendgrid.test': { A: ['127.0.0.9'] }, // nothing listens there
    'email-smtp.eu-west-1.amazonaws.com': { A: ['127.0.0.3'] },
    'smtp.eu.mailgun.org': { A: ['127.0.0.4'] },
    'unverified.example': { A: ['127.0.0.6'] },
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      // retries soon, so the "slow down" pause (longer) is what decides the next attempt
      delivery: { port: senderMx.port, tlsCa: ca.caFile, retry: { base: '500ms', factor: 2, max: '1h' }, connectTimeout: '3s', throttle: { backoff: { base: '3s' } } },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        [
          'routing',
          {
            routes: [
              // the docs' recipes, with the look-alikes' ports
              // failover within a route: the hosts in order, the next one when a host cannot be reached
              { name: 'sendgrid-failover', match: { sender: 'failover@sg.example' }, kind: 'smarthost', host: ['down.sendgrid.test', 'smtp.sendgrid.net'], port: sendgrid587.port, tls: 'starttls', auth: { user: 'apikey', passEnv: 'SENDGRID_API_KEY' } },
              { name: 'sendgrid-bad-key', match: { sender: 'badkey@sg.example' }, kind: 'smarthost', host: 'smtp.sendgrid.net', port: sendgrid587.port, tls: 'starttls', auth: { user: 'apikey', pass: 'SG.revoked-key' } },
              { name: 'sendgrid-465', match: { sender: 'implicit@sg.example' }, kind: 'smarthost', host: 'smtp.sendgrid.net', port: sendgrid465.port, tls: 'implicit', auth: { user: 'apikey', passEnv: 'SENDGRID_API_KEY' } },
              { name: 'sendgrid', match: { sender: 'sg.example' }, kind: 'smarthost', host: 'smtp.sendgrid.net', port: sendgrid587.port, tls: 'starttls', auth: { user: 'apikey', passEnv: 'SENDGRID_API_KEY' } },
              { name: 'ses-465', match: { sender: 'implicit@ses.example' }, kind: 'smarthost', host: 'email-smtp.eu-west-1.amazonaws.com', port: ses465.port, tls: 'implicit', auth: { user: SES_USER, passEnv: 'SES_SMTP_PASSWORD' } },
              { name: 'ses', match: { sender: ['ses.example', 'unverified.example'] }, kind: 'smarthost', host: 'email-smtp.eu-west-1.amazonaws.com', port: ses.port, tls: 'starttls', auth: { user: SES_USER, passEnv: 'SES_SMTP_PASSWORD' } },
              { name: 'mailgun', match: { sender: 'mg.example' }, kind: 'smarthost', host: 'smtp.eu.mailgun.org', port: mailgun.port, tls: 'implicit', auth: { user: MAILGUN_USER, passEnv: 'MAILGUN_SMTP_PASSWORD' } },
            ],
          },
        ],
      ],
    },
    env: { SENDGRID_API_KEY: SENDGRID_KEY, SES_SMTP_PASSWORD: SES_PASS, MAILGUN_SMTP_PASSWORD: MAILGUN_PASS },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, sendgrid587, sendgrid465, ses, ses465, mailgun, senderMx].map((x) => x?.close()))
})

describe('each provider, as docs/smarthosts.md configures it', () => {
  const cases = [
    { provider: 'sendgrid', from: 'news@sg.example', to: 'a@sg-587.test', rx: () => sendgrid587, user: 'apikey', host: 'smtp.sendgrid.net' },
    { provider: 'sendgrid', from: 'implicit@sg.example', to: 'a@sg-465.test', rx: () => sendgrid465, user: 'apikey', host: 'smtp.sendgrid.net' },
    { provider: 'ses', from: 'app@ses.example', to: 'a@ses.test', rx: () => ses, user: SES_USER, host: 'email-smtp.eu-west-1.amazonaws.com' },
    { provider: 'ses', from: 'implicit@ses.example', to: 'a@ses-465.test', rx: () => ses465, user: SES_USER, host: 'email-smtp.eu-west-1.amazonaws.com' },
    { provider: 'mailgun', from: 'app@mg.example', to: 'a@mg.test', rx: () => mailgun, user: MAILGUN_USER, host: 'smtp.eu.mailgun.org' },
  ]
  it.each(cases)('$provider ($to): delivered over verified TLS with AUTH as $user', async ({ provider, from, to, rx, user, host }) => {
    await sendMail(relay.port, { from, to: [to], data: msg(from, provider) })
    const ev = await event('delivered', to)
    expect(ev.route).toBe('smtp')
    expect(ev.remoteHost).toBe(`${host}[${rx().host}]:${rx().port}`)
    expect(ev.tls).toMatchObject({ verified: true })
    const m = rx().messages.find((x) => x.to[0] === to)!
    expect(m.secure).toBe(true)
    expect(logins).toContainEqual({ provider, user, ok: true })
  })
})

describe('what goes wrong', () => {
  it('a bad credential: 535, deferred with category auth, no backoff, no password in the logs', async () => {
    await sendMail(relay.port, { from: 'badkey@sg.example', to: ['b@badkey.test'], data: msg('badkey@sg.example', 'bad key') })
    const ev = await event('deferred', 'b@badkey.test')
    expect(ev.response).toMatch(/^4\.7\.0 smtp\.sendgrid\.net\[127\.0\.0\.2\]:\d+: AUTH as the configured user failed: 535 5\.7\.8 Authentication failed: Bad username \/ password/)
    expect(ev.category).toBe('auth')
    expect(logins).toContainEqual({ provider: 'sendgrid', user: 'apikey', ok: false })
    expect(sendgrid587.messages.some((m) => m.to[0] === 'b@badkey.test')).toBe(false)
    expect(relay.logs.some((l) => /^throttle: badkey\.test asked to slow down/.test(l.msg))).toBe(false)
    const entry = (await relay.listQueue()).find((q) => q.recipients[0]!.address === 'b@badkey.test')!
    expect(entry.recipients[0]!.state).toBe('deferred')
    const logs = JSON.stringify(relay.logs)
    for (const secret of [SENDGRID_KEY, SES_PASS, MAILGUN_PASS, 'SG.revoked-key']) expect(logs).not.toContain(secret)
  })

  it('421 over the rate: deferred with category throttled, the destination paused longer than the retry delay, then delivered', async () => {
    await sendMail(relay.port, { from: 'rate@mg.example', to: ['r@rate.test'], data: msg('rate@mg.example', 'rate') })
    const ev = await event('deferred', 'r@rate.test')
    expect(ev.response).toMatch(/^421 4\.7\.0 Sending rate over the limit/)
    expect(ev.category).toBe('throttled')
    const warn = await relay.waitForLog((l) => /^throttle: rate\.test asked to slow down; paused 3000 ms/.test(l.msg), 5_000)
    expect(warn.pauseMs).toBe(3000)
    // the 500 ms retry waits for the 3 s pause
    expect(Date.parse(ev.nextAttemptAt as string) - new Date(ev.time as string | number).getTime()).toBeGreaterThanOrEqual(2_500)
    const ok = await event('delivered', 'r@rate.test', 15_000)
    expect(ok.attempts).toBe(2)
  })

  it('SES, a sender identity not verified: 554, bounced with a DSN to the sender', async () => {
    await sendMail(relay.port, { from: 'app@unverified.example', to: ['c@ses-sandbox.test'], data: msg('app@unverified.example', 'unverified') })
    const ev = await event('bounced', 'c@ses-sandbox.test')
    expect(ev.response).toMatch(/^554 Message rejected: Email address is not verified/)
    expect(ev.attempts).toBe(1)
    const dsn = (await senderMx.waitForMessages(1, 10_000)).find((m) => m.to[0] === 'app@unverified.example')!
    expect(dsn.from).toBe('')
    expect(dsn.raw.toString()).toMatch(/^Final-Recipient: rfc822; c@ses-sandbox\.test\r$/m)
    expect(dsn.raw.toString()).toMatch(/Email address is not verified/)
    // the recipient is not to blame: not suppressed
    expect(relay.logs.some((l) => l.msg === 'suppressed c@ses-sandbox.test')).toBe(false)
  })
})

describe('failover', () => {
  it('a host list: the first host down, the next one takes the message', async () => {
    await sendMail(relay.port, { from: 'failover@sg.example', to: ['f@failover.test'], data: msg('failover@sg.example', 'failover') })
    const ev = await event('delivered', 'f@failover.test')
    expect(ev.remoteHost).toBe(`smtp.sendgrid.net[127.0.0.2]:${sendgrid587.port}`)
  })

  it('hosts with different ports in one route are a config error (one route has one port)', async () => {
    const err = await startRelay({
      dir: tempDir(),
      config: { plugins: [['routing', { routes: [{ kind: 'smarthost', host: ['smtp.sendgrid.net:587', 'smtp.eu.mailgun.org:465'], tls: 'starttls' }] }]] },
    }).catch((e: Error) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toMatch(/options\.routes\[0\]\.host: the hosts of a smarthost route are all reached on one port/)
  })
})
