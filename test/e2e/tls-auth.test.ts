// TLS on the listeners (STARTTLS, implicit, SNI, reload) and authenticated submission: AUTH only
// inside TLS, submission needs AUTH, failures slow down, the user sends only as what it owns.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import tls from 'node:tls'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, sendMail } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { ROOT, eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

let ca: TestCa
let dns: TestDns
let mx: TestReceiver
let relay: RelayProcess
let certDir: string
const PASSWORD = 'S3cret-Pa55word!'
const auth = { user: 'alice@corp.test', pass: PASSWORD }
const STATIC_AUTH = path.join(ROOT, 'test/fixtures/static-auth.plugin.ts')
const b64 = (s: string) => Buffer.from(s).toString('base64')

function peerCn(servername: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ port, host: '127.0.0.1', servername, ca: ca.caPem }, () => {
      const cn = s.getPeerCertificate().subject.CN as string
      s.destroy()
      resolve(cn)
    })
    s.on('error', reject)
  })
}

beforeAll(async () => {
  ca = makeCa()
  certDir = tempDir('relay-certs-')
  const main = ca.issue(['relay.test'])
  const other = ca.issue(['mail.other.test'])
  fs.copyFileSync(main.key, path.join(certDir, 'relay.key'))
  fs.copyFileSync(main.cert, path.join(certDir, 'relay.crt'))
  mx = await startReceiver({ host: '127.0.0.2' })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] } })
  relay = await startRelay({
    config: {
      listen: [
        { host: '127.0.0.1', port: 0, role: 'submission', tls: 'starttls' },
        { host: '127.0.0.1', port: 0, role: 'submission', tls: 'implicit' },
        { host: '127.0.0.1', port: 0, role: 'mx', tls: 'starttls' },
      ],
      tls: { cert: path.join(certDir, 'relay.crt'), key: path.join(certDir, 'relay.key'), sni: { 'mail.other.test': other } },
      dns: { servers: [dns.server] },
      delivery: { port: mx.port },
      smtp: { reverseLookup: false, authFailureDelay: '200ms' },
      log: { level: 'debug' },
      plugins: [
        [STATIC_AUTH, { users: { 'alice@corp.test': { password: PASSWORD, senders: ['alice@corp.test', 'corp-alias.test'] } } }],
        ['relay-acl', { trustedNetworks: [] }],
      ],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), mx?.close()])
})

const starttlsPort = () => relay.logs.filter((l) => l.role === 'submission' && l.tls === 'starttls').map((l) => l.port as number)[0]!
const implicitPort = () => relay.logs.filter((l) => l.tls === 'implicit').map((l) => l.port as number)[0]!

describe('TLS', () => {
  it('STARTTLS with a certificate that verifies against the CA, TLS 1.2 or newer', async () => {
    const { client } = await connectRaw(starttlsPort())
    expect(await client.command('EHLO client.test')).toMatch(/^250-.*\r\n250-STARTTLS|STARTTLS/)
    expect(await client.command('STARTTLS')).toMatch(/^220 /)
    await client.startTls({ ca: ca.caPem, servername: 'relay.test' })
    const info = client.tlsInfo()!
    expect(info.authorized).toBe(true)
    expect(['TLSv1.2', 'TLSv1.3']).toContain(info.protocol)
    expect(await client.command('EHLO client.test')).not.toMatch(/STARTTLS/)
    client.close()
  })

  it('refuses TLS 1.1 and older', async () => {
    const attempt = new Promise<string>((resolve) => {
      const s = tls.connect({ port: implicitPort(), host: '127.0.0.1', ca: ca.caPem, servername: 'relay.test', maxVersion: 'TLSv1.1', minVersion: 'TLSv1' })
      s.on('secureConnect', () => {
        s.destroy()
        resolve('connected')
      })
      s.on('error', (err) => resolve(`error: ${err.message}`))
    })
    expect(await attempt).toMatch(/^error: /)
  })

  it('serves the SNI certificate for a configured extra name, the default one otherwise', async () => {
    expect(await peerCn('mail.other.test', implicitPort())).toBe('mail.other.test')
    expect(await peerCn('relay.test', implicitPort())).toBe('relay.test')
  })

  it('implicit TLS: greeting inside TLS, AUTH offered at once', async () => {
    const { client, greeting } = await connectRaw(implicitPort(), '127.0.0.1', 5000, { ca: ca.caPem, servername: 'relay.test' })
    expect(greeting).toMatch(/^220 /)
    expect(await client.command('EHLO client.test')).toMatch(/AUTH PLAIN LOGIN/)
    client.close()
  })

  it('reloads the certificate on SIGHUP without dropping an open session', async () => {
    // a session opened before the reload...
    const { client } = await connectRaw(implicitPort(), '127.0.0.1', 5000, { ca: ca.caPem, servername: 'relay.test' })
    await client.command('EHLO client.test')
    const renewed = ca.issue(['relay.test'], { file: 'renewed' })
    fs.copyFileSync(renewed.key, path.join(certDir, 'relay.key'))
    fs.copyFileSync(renewed.cert, path.join(certDir, 'relay.crt'))
    relay.child.kill('SIGHUP')
    await relay.waitForLog((l) => l.msg === 'TLS certificates reloaded')
    // ...new connections get the new certificate
    const serial = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ port: implicitPort(), host: '127.0.0.1', servername: 'relay.test', ca: ca.caPem }, () => {
        const n = s.getPeerCertificate().serialNumber
        s.destroy()
        resolve(n)
      })
      s.on('error', reject)
    })
    const expected = new crypto.X509Certificate(fs.readFileSync(renewed.cert)).serialNumber
    expect(serial.toUpperCase()).toBe(expected.toUpperCase())
    // ...and the old session still works
    const token = b64(`\0${auth.user}\0${auth.pass}`)
    expect(await client.command(`AUTH PLAIN ${token}`)).toMatch(/^235 /)
    expect(await client.command('MAIL FROM:<alice@corp.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<bob@dest.test>')).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const reply = client.read()
    client.send(dotStuff('From: alice@corp.test\r\nSubject: across a reload\r\n\r\nhi\r\n'))
    expect(await reply).toMatch(/^250 2\.0\.0 Ok: queued as /)
    client.close()
  })

  it('reloads the certificate when its files change, without a signal', async () => {
    const reloadsBefore = relay.logs.filter((l) => l.msg === 'TLS certificates reloaded').length
    const next = ca.issue(['relay.test'], { file: 'watched' })
    fs.copyFileSync(next.key, path.join(certDir, 'relay.key'))
    fs.copyFileSync(next.cert, path.join(certDir, 'relay.crt'))
    const expected = new crypto.X509Certificate(fs.readFileSync(next.cert)).serialNumber.toUpperCase()
    const serialNow = () =>
      new Promise<string>((resolve, reject) => {
        const s = tls.connect({ port: implicitPort(), host: '127.0.0.1', servername: 'relay.test', ca: ca.caPem }, () => {
          const n = s.getPeerCertificate().serialNumber.toUpperCase()
          s.destroy()
          resolve(n)
        })
        s.on('error', reject)
      })
    await eventually(async () => (await serialNow()) === expected, 5000, 'the new certificate in use')
    // (log lines are flushed every 100 ms)
    await eventually(() => relay.logs.filter((l) => l.msg === 'TLS certificates reloaded').length > reloadsBefore, 2000, 'the reload log line')
  })

  it('a client that breaks the TLS handshake is an info line about that client, never a listener error', async () => {
    const before = relay.logs.length
    for (let i = 0; i < 2; i++) {
      const { client } = await connectRaw(starttlsPort())
      await client.command('EHLO client.test')
      expect(await client.command('STARTTLS')).toMatch(/^220 /)
      client.send('AUTH PLAIN garbage instead of a ClientHello\r\n')
      await eventually(() => client.isClosed() || undefined, 5000, 'the relay to close the connection')
    }
    await eventually(() => relay.logs.slice(before).filter((l) => l.msg === 'client connection failed' && l.client === '127.0.0.1').length >= 2, 5000, 'two client connection failed lines')
    const errors = relay.logs.slice(before).filter((l) => (l.level as number) >= 50)
    expect(errors).toEqual([])
  })

  it('a listener that needs TLS without a certificate is a config error naming the key', () => {
    const dir = tempDir('relay-notls-')
    const file = path.join(dir, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify({ listen: [{ host: '127.0.0.1', port: 0, role: 'submission', tls: 'starttls' }], dataDir: path.join(dir, 'data') }))
    for (const cmd of ['check-config', 'start']) {
      const r = runCli([cmd, '--config', file])
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(/listen\[0\]\.tls: 'starttls' needs a certificate: set tls: \{ cert, key \}/)
    }
  })

  it('relay tls selfsigned writes a usable key and certificate', () => {
    const dir = tempDir('relay-selfsigned-')
    const r = runCli(['tls', 'selfsigned', '--name', 'dev.relay.test', '--out', dir])
    expect(r.code, r.stderr).toBe(0)
    const cert = new crypto.X509Certificate(fs.readFileSync(path.join(dir, 'dev.relay.test.crt')))
    expect(cert.subject).toContain('CN=dev.relay.test')
    expect(cert.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(path.join(dir, 'dev.relay.test.key'))))).toBe(true)
  })

  // Run again with the same name (or `--out /etc/relay/tls` where the real pair lives), it replaced
  // the key and certificate in place without a word; `--days abc` gave a 365-day certificate and
  // exit 0; `--name ../x` wrote outside --out; an IP address became a DNS name in subjectAltName.
  it('relay tls selfsigned never overwrites a key, refuses a bad --days or --name, and puts an IP in an IP SAN', () => {
    const dir = tempDir('relay-selfsigned-')
    expect(runCli(['tls', 'selfsigned', '--name', 'dev.relay.test', '--out', dir]).code).toBe(0)
    const keyFile = path.join(dir, 'dev.relay.test.key')
    const before = [fs.readFileSync(keyFile, 'utf8'), fs.readFileSync(path.join(dir, 'dev.relay.test.crt'), 'utf8')]
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600)
    const again = runCli(['tls', 'selfsigned', '--name', 'dev.relay.test', '--out', dir])
    expect(again.code).toBe(1)
    expect(again.stderr).toContain(`relay: ${keyFile} already exists; not overwriting it`)
    expect([fs.readFileSync(keyFile, 'utf8'), fs.readFileSync(path.join(dir, 'dev.relay.test.crt'), 'utf8')]).toEqual(before)

    const days = runCli(['tls', 'selfsigned', '--name', 'days.relay.test', '--out', dir, '--days', 'abc'])
    expect([days.code, days.stderr]).toEqual([2, "relay: --days: expected a whole number of days from 1 to 36500, got 'abc'\n"])
    const name = runCli(['tls', 'selfsigned', '--name', '../escape', '--out', dir])
    expect(name.code).toBe(2)
    expect(name.stderr).toMatch(/--name: expected a host name or IP address/)
    expect(fs.readdirSync(dir).sort()).toEqual(['dev.relay.test.crt', 'dev.relay.test.key'])

    expect(runCli(['tls', 'selfsigned', '--name', '127.0.0.1', '--out', dir]).code).toBe(0)
    const ip = new crypto.X509Certificate(fs.readFileSync(path.join(dir, '127.0.0.1.crt')))
    expect(ip.subjectAltName).toBe('IP Address:127.0.0.1')
  })
})

describe('AUTH and submission', () => {
  it('offers AUTH only after STARTTLS: AUTH and MAIL before it get 530 5.7.0, a second STARTTLS 503', async () => {
    const { client } = await connectRaw(starttlsPort())
    const ehlo = await client.command('EHLO client.test')
    expect(ehlo).not.toMatch(/AUTH/)
    expect(await client.command(`AUTH PLAIN ${b64(`\0${auth.user}\0${auth.pass}`)}`)).toMatch(/^530 5\.7\.0 Must issue a STARTTLS command first/)
    expect(await client.command('AUTH LOGIN')).toMatch(/^530 5\.7\.0 /)
    expect(await client.command('MAIL FROM:<alice@corp.test>')).toMatch(/^530 5\.7\.0 Must issue a STARTTLS command first/)
    await client.command('RSET')
    expect(await client.command('STARTTLS')).toMatch(/^220 /)
    await client.startTls({ ca: ca.caPem, servername: 'relay.test' })
    expect(await client.command('EHLO client.test')).toMatch(/AUTH PLAIN LOGIN/)
    expect(await client.command('MAIL FROM:<alice@corp.test>')).toMatch(/^530 5\.7\.0 Authentication required/)
    expect(await client.command('STARTTLS')).toMatch(/^503 5\.5\.1 TLS already active/)
    client.close()
  })

  it('AUTH LOGIN and PLAIN succeed; a wrong password gets 535 5.7.8, each failure answered more slowly', async () => {
    const { client } = await connectRaw(implicitPort(), '127.0.0.1', 5000, { ca: ca.caPem, servername: 'relay.test' })
    await client.command('EHLO client.test')
    const t1 = Date.now()
    expect(await client.command(`AUTH PLAIN ${b64(`\0${auth.user}\0wrong`)}`)).toMatch(/^535 5\.7\.8 /)
    const first = Date.now() - t1
    const t2 = Date.now()
    expect(await client.command(`AUTH PLAIN ${b64(`\0${auth.user}\0wrong-again`)}`)).toMatch(/^535 5\.7\.8 /)
    const second = Date.now() - t2
    expect(first).toBeGreaterThanOrEqual(190)
    expect(second).toBeGreaterThanOrEqual(390)
    expect(await client.command('AUTH LOGIN')).toMatch(/^334 /)
    expect(await client.command(b64(auth.user))).toMatch(/^334 /)
    expect(await client.command(b64(auth.pass))).toMatch(/^235 2\.7\.0 /)
    client.close()
    // One 'refused' line per failure, written as the 535 is sent (the log flushes within 0.1 s).
    await eventually(() => relay.logs.filter((l) => l.msg === 'refused' && l.stage === 'auth').length >= 2, 2000, 'two refused AUTH lines')
  })

  it('never writes a password to the log, even at debug level', async () => {
    await relay.waitForLog((l) => l.msg === 'authenticated')
    const all = relay.logs.map((l) => JSON.stringify(l)).join('\n')
    expect(all).toContain('authenticated')
    expect(all).not.toContain(PASSWORD)
    expect(all).not.toContain('wrong-again')
    expect(all).not.toContain(b64(`\0${auth.user}\0${auth.pass}`))
  })

  it('sends as an owned address; a foreign envelope sender or From/Sender header gets 553 5.7.1', async () => {
    const port = starttlsPort()
    const tlsOpts = { ca: ca.caPem, servername: 'relay.test' }
    const ok = await sendMail(port, { from: 'alice@corp.test', to: ['bob@dest.test'], data: 'From: Alice <x@corp-alias.test>\r\nSubject: mine\r\n\r\nhi\r\n', starttls: tlsOpts, auth })
    expect(ok.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as /)
    const env = await sendMail(port, { from: 'ceo@bank.test', to: ['bob@dest.test'], data: 'Subject: x\r\n\r\nhi\r\n', starttls: tlsOpts, auth })
    expect(env.lastReply).toBe('553 5.7.1 Sender address <ceo@bank.test> not owned by user alice@corp.test')
    const from = await sendMail(port, { from: 'alice@corp.test', to: ['bob@dest.test'], data: 'From: "Alice" <ceo@bank.test>\r\nSubject: x\r\n\r\nhi\r\n', starttls: tlsOpts, auth })
    expect(from.lastReply).toBe('553 5.7.1 Header sender <ceo@bank.test> not owned by user alice@corp.test')
    const sender = await sendMail(port, { from: 'alice@corp.test', to: ['bob@dest.test'], data: 'From: alice@corp.test\r\nSender: ops@bank.test\r\nSubject: x\r\n\r\nhi\r\n', starttls: tlsOpts, auth })
    expect(sender.lastReply).toMatch(/^553 5\.7\.1 Header sender <ops@bank\.test>/)
    // the Resent- fields name the sender of a resend: the same ownership
    for (const field of ['Resent-From', 'Resent-Sender']) {
      const resent = await sendMail(port, { from: 'alice@corp.test', to: ['bob@dest.test'], data: `From: alice@corp.test\r\n${field}: Ops <ops@bank.test>\r\nSubject: x\r\n\r\nhi\r\n`, starttls: tlsOpts, auth })
      expect(resent.lastReply, field).toBe('553 5.7.1 Header sender <ops@bank.test> not owned by user alice@corp.test')
    }
    // an address with two @ ends in an owned domain but is nobody's
    const doubled = await sendMail(port, { from: 'alice@corp.test', to: ['bob@dest.test'], data: 'From: <mallory@evil.test@corp-alias.test>\r\nSubject: x\r\n\r\nhi\r\n', starttls: tlsOpts, auth })
    expect(doubled.lastReply).toMatch(/^553 5\.7\.1 Header sender/)

    const [msg] = await mx.waitForMessages(1, 10_000)
    const raw = msg!.raw.toString()
    expect(raw).toMatch(/^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n\t\(using TLSv1\.[23] with cipher [A-Z0-9_-]+\)\r\n\tby relay\.test \(Relay\) with ESMTPSA id /)
    expect(mx.messages.filter((m) => /ceo@bank|ops@bank/.test(m.raw.toString()))).toEqual([])
  })
})

describe('AUTH cannot change who sends', () => {
  const tlsOpts = () => ({ ca: ca.caPem, servername: 'relay.test' })
  const mxPort = () => relay.logs.filter((l) => l.role === 'mx' && typeof l.port === 'number').map((l) => l.port as number)[0]!

  it('refuses AUTH inside a mail transaction with 503 5.5.1: a sender given before AUTH is never relayed as the user', async () => {
    // On an MX listener AUTH is optional: MAIL FROM is taken unauthenticated (and not checked
    // against any user), so an AUTH after it must not turn the transaction into the user's.
    const { client } = await connectRaw(mxPort())
    await client.command('EHLO client.test')
    expect(await client.command('STARTTLS')).toMatch(/^220 /)
    await client.startTls(tlsOpts())
    expect(await client.command('EHLO client.test')).toMatch(/AUTH PLAIN LOGIN/)
    expect(await client.command('MAIL FROM:<ceo@bank.test>')).toMatch(/^250 /)
    expect(await client.command(`AUTH PLAIN ${b64(`\0${auth.user}\0${auth.pass}`)}`)).toBe('503 5.5.1 AUTH not permitted during a mail transaction')
    expect(await client.command('AUTH LOGIN')).toMatch(/^503 5\.5\.1 /)
    expect(await client.command('RCPT TO:<bob@dest.test>')).toMatch(/^550 5\.7\.1 Relaying denied/)
    // After the transaction, AUTH works, and the sender is checked against what the user owns.
    expect(await client.command('RSET')).toMatch(/^250 /)
    expect(await client.command(`AUTH PLAIN ${b64(`\0${auth.user}\0${auth.pass}`)}`)).toMatch(/^235 /)
    expect(await client.command('MAIL FROM:<ceo@bank.test>')).toMatch(/^553 5\.7\.1 Sender address <ceo@bank\.test> not owned/)
    client.close()
  })

  it('a user name with characters nobody sees (zero-width space, soft hyphen) fails with 535, even with the right password', async () => {
    const [local, domain] = auth.user.split('@') as [string, string]
    for (const user of [`${auth.user}\u200b`, `${local}@${domain.slice(0, 2)}\u00ad${domain.slice(2)}`, `\ufeff${auth.user}`]) {
      const { client } = await connectRaw(implicitPort(), '127.0.0.1', 5000, tlsOpts())
      await client.command('EHLO client.test')
      expect(await client.command(`AUTH PLAIN ${b64(`\0${user}\0${auth.pass}`)}`), JSON.stringify(user)).toMatch(/^535 5\.7\.8 /)
      client.close()
    }
    expect(relay.logs.filter((l) => l.msg === 'authenticated' && /[\u200b\u00ad\ufeff]/.test(String(l.user)))).toEqual([])
  })

  it('AUTH PLAIN that asks to act as another identity fails with 535 5.7.8, even with the right password', async () => {
    const { client } = await connectRaw(implicitPort(), '127.0.0.1', 5000, tlsOpts())
    await client.command('EHLO client.test')
    expect(await client.command(`AUTH PLAIN ${b64(`ceo@bank.test\0${auth.user}\0${auth.pass}`)}`)).toMatch(/^535 5\.7\.8 /)
    // Its own identity as the authorization identity is the same user.
    expect(await client.command(`AUTH PLAIN ${b64(`${auth.user}\0${auth.user}\0${auth.pass}`)}`)).toMatch(/^235 /)
    client.close()
  })

  it('checks every reading of a malformed From:/Sender: field: any foreign address in it gets 553 5.7.1', async () => {
    const port = starttlsPort()
    const send = (headers: string) =>
      sendMail(port, { from: 'alice@corp.test', to: ['bob@dest.test'], data: `${headers}\r\nSubject: reading\r\n\r\nhi\r\n`, starttls: tlsOpts(), auth })
    // Each is read as ceo@bank.test (or ops@bank.test) by some parser, as nothing or as alice by another.
    for (const header of [
      'From: Bob <ceo@bank.test>:',
      'From: ceo@bank.test:;',
      'From: ceo@bank.test <alice@corp.test>',
      'From: <alice@corp.test> <ceo@bank.test>',
      'From: Alice <alice@corp.test> ceo@bank.test',
      'From: =?utf-8?q?ceo=40bank.test?= <alice@corp.test>',
      'From: alice@corp.test\r\nSender: Ops <ops@bank.test>:',
      // Adjacent encoded words are one text to a reader (RFC 2047 §6.2: the space between them goes),
      // folded or not, in one charset or two.
      'From: =?utf-8?q?ceo?= =?utf-8?q?=40bank.test?= <alice@corp.test>',
      'From: =?utf-8?q?ceo=40?=\r\n =?utf-8?b?YmFuay50ZXN0?= <alice@corp.test>',
      'From: =?iso-8859-1?q?ceo?=  =?utf-8?q?=40bank?= =?us-ascii?q?.test?= <alice@corp.test>',
      'From: alice@corp.test\r\nSender: =?utf-8?q?ops?=\t=?utf-8?q?=40bank.test?=',
      // UTF-7, which TextDecoder does not know and Outlook decodes.
      'From: =?utf-7?q?ceo+AEA-bank.test?= <alice@corp.test>',
    ]) {
      expect((await send(header)).lastReply, header).toMatch(/^553 5\.7\.1 Header sender <(ceo|ops)@bank\.test> not owned by user alice@corp\.test/)
    }
    // White space or a comment inside the domain (RFC 5322 §4.4): a reader joins the parts, and the owned domain is only the start of another.
    for (const header of ['From: Alice <alice@corp.test .evil.test>', 'From: alice@corp.test(x).evil.test', 'From: alice@corp.test. evil.test', 'From: alice@corp.test\r\nSender: <alice@corp.test\r\n .evil.test>']) {
      expect((await send(header)).lastReply, header).toMatch(/^553 5\.7\.1 Header sender <alice@corp\.test\.evil\.test> not owned by user alice@corp\.test/)
    }
    // An @ in a display name that is no address, and an owned address read every way, still pass.
    expect((await send('From: "Team @ Corp" <alice@corp.test>')).lastReply).toMatch(/^250 2\.0\.0 /)
    expect((await send('From: =?utf-8?q?alice=40corp.test?= <alice@corp.test>')).lastReply).toMatch(/^250 2\.0\.0 /)
    expect((await send('From: Alice (of corp.test) <alice@corp.test> (sent by alice@corp.test)')).lastReply).toMatch(/^250 2\.0\.0 /)
  })
})

describe('plaintext AUTH', () => {
  it('is offered without TLS only on a listener that opts in', async () => {
    const r = await startRelay({
      config: {
        listen: [
          { host: '127.0.0.1', port: 0, role: 'submission', tls: 'none', allowPlaintextAuth: true },
          { host: '127.0.0.1', port: 0, role: 'mx', tls: 'none' },
        ],
        smtp: { reverseLookup: false },
        plugins: [[STATIC_AUTH, { users: { 'u@x.test': { password: 'p' } } }]],
      },
    })
    try {
      const sub = await connectRaw(r.ports.submission!)
      expect(await sub.client.command('EHLO c.test')).toMatch(/AUTH PLAIN LOGIN/)
      expect(await sub.client.command(`AUTH PLAIN ${b64('\0u@x.test\0p')}`)).toMatch(/^235 /)
      sub.client.close()
      const mxc = await connectRaw(r.ports.mx!)
      expect(await mxc.client.command('EHLO c.test')).not.toMatch(/AUTH/)
      mxc.client.close()
    } finally {
      await r.stop()
    }
  })
})
