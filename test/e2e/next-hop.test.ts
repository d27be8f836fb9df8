// What the next hop cannot take (issue 12 point 9): 8-bit content to a server without 8BITMIME
// is converted to 7-bit (RFC 6152 §3) and a dkim-sign signature still verifies; a message that
// needs SMTPUTF8 carries the parameter, and bounces with 5.6.7 when the next hop does not offer it
// (one sent with SMTPUTF8 that has only ASCII addresses and header fields goes without it).
import { promises as dnsPromises } from 'node:dns'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import { dkimVerify } from 'mailauth/lib/dkim/verify.js'
import { dkimSign } from 'mailauth'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff } from '../harness/smtp-client.js'
import { eventually, runCli, startRelay, tempDir, type LogLine, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let legacy: TestReceiver // 127.0.0.2, legacy.test: neither 8BITMIME nor SMTPUTF8
let modern: TestReceiver // 127.0.0.3, modern.test: both
let senderMx: TestReceiver // 127.0.0.4, sender.test: where DSNs go
let relay: RelayProcess
let verifyResolver: dnsPromises.Resolver

const TEXT = 'Grüße aus Köln: ½ × 3 = 1,5 €\r\nZweite Zeile mit Umlauten: äöü ÄÖÜ ß, and a trailing space \r\n'

/** One SMTP transaction with MAIL FROM parameters (sendMail has none); returns the last reply. */
async function submit(o: { from: string; to: string; data: Buffer | string; mailArgs?: string }): Promise<string> {
  const { client } = await connectRaw(relay.port, '127.0.0.1')
  try {
    expect(await client.command('EHLO client.test')).toMatch(/^250/)
    expect(await client.command(`MAIL FROM:<${o.from}>${o.mailArgs ? ` ${o.mailArgs}` : ''}`)).toMatch(/^250/)
    expect(await client.command(`RCPT TO:<${o.to}>`)).toMatch(/^250/)
    expect(await client.command('DATA')).toMatch(/^354/)
    const p = client.read()
    client.send(dotStuff(o.data))
    const reply = await p
    expect(reply).toMatch(/^250 /)
    return reply
  } finally {
    await client.command('QUIT', 1000).catch(() => undefined)
    client.close()
  }
}

const header = (from: string, to: string, subject: string, extra: string) =>
  `From: Sender <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nDate: Thu, 03 Dec 2026 04:00:00 +0000\r\nMessage-ID: <${subject.replace(/\W/g, '')}@next-hop.test>\r\nMIME-Version: 1.0\r\n${extra}`

/** A text/plain message whose body is 8-bit UTF-8. */
const singlePart = (from: string, to: string, subject: string) =>
  Buffer.from(`${header(from, to, subject, 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n')}\r\n${TEXT}`, 'utf8')

/** multipart/mixed: an 8-bit text part, a 7-bit one, and an 8-bit attachment with a long line. */
const multiPart = (from: string, to: string, subject: string) =>
  Buffer.from(
    `${header(from, to, subject, 'Content-Type: multipart/mixed; boundary="b1"\r\n')}\r\n` +
      `--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${TEXT}\r\n` +
      `--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain ascii = stays\r\n` +
      `--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${'ÿ'.repeat(600)}\r\n` +
      `--b1--\r\n`,
    'utf8',
  )

const bodyOf = (raw: Buffer) => raw.subarray(raw.indexOf('\r\n\r\n') + 4)
const has8bit = (b: Buffer) => b.some((c) => c > 127)
const qpDecode = (s: string) => Buffer.from(s.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8')

async function delivered(rx: TestReceiver, subject: string): Promise<ReceivedMessage> {
  return eventually(() => rx.messages.find((m) => m.raw.toString('latin1').includes(`\r\nSubject: ${subject}\r\n`)), 10_000, `delivery of '${subject}'`)
}

async function dkim(raw: Buffer) {
  const resolver = async (name: string, type: string) => (type === 'TXT' ? verifyResolver.resolveTxt(name) : verifyResolver.resolve(name, type))
  return (await dkimVerify(raw, { resolver: resolver as never })).results
}

const event = (name: string, recipient: string, timeoutMs = 10_000): Promise<LogLine> => relay.waitForLog((l) => l.event === name && l.recipient === recipient, timeoutMs)

beforeAll(async () => {
  const keyDir = tempDir('relay-next-hop-keys-')
  const r = runCli(['dkim', 'keygen', 'signed.test', '--selector', 's1', '--out', keyDir])
  expect(r.code, r.stderr).toBe(0)
  const keyFile = /^private key: (.+)$/m.exec(r.stdout)![1]!
  const txtName = /^ {2}name: {2}(\S+)$/m.exec(r.stdout)![1]!
  const txtValue = /^ {2}value: (v=DKIM1; .+)$/m.exec(r.stdout)![1]!

  legacy = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true }, serverOptions: { hide8BITMIME: true, hideSMTPUTF8: true } })
  modern = await startReceiver({ host: '127.0.0.3', port: legacy.port, behaviour: { noStartTls: true } })
  senderMx = await startReceiver({ host: '127.0.0.4', port: legacy.port, behaviour: { noStartTls: true } })
  dns = await startDns({
    'legacy.test': { A: ['127.0.0.2'] },
    'modern.test': { A: ['127.0.0.3'] },
    'sender.test': { A: ['127.0.0.4'] },
    [txtName]: { TXT: [txtValue] },
  })
  verifyResolver = new dnsPromises.Resolver({ timeout: 1000, tries: 1 })
  verifyResolver.setServers([dns.server])
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: legacy.port, mtaSts: { enabled: false }, delayWarning: false, connectTimeout: '2s' },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        ['dkim-sign', { keys: [{ domain: 'signed.test', selector: 's1', privateKey: keyFile }] }],
      ],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), legacy?.close(), modern?.close(), senderMx?.close()])
})

describe('8-bit content and a next hop without 8BITMIME', () => {
  it('a single-part 8-bit message arrives 7-bit, quoted-printable, and decodes to the original text', async () => {
    await submit({ from: 'a@sender.test', to: 'x@legacy.test', data: singlePart('a@sender.test', 'x@legacy.test', 'single 8bit'), mailArgs: 'BODY=8BITMIME' })
    const m = await delivered(legacy, 'single 8bit')
    expect(has8bit(m.raw)).toBe(false)
    expect(m.mailParams.BODY).toBeUndefined()
    const text = m.raw.toString('latin1')
    expect(text).toMatch(/\r\nContent-Transfer-Encoding: quoted-printable\r\n/i)
    expect(text).not.toMatch(/Content-Transfer-Encoding: 8bit/i)
    expect(qpDecode(bodyOf(m.raw).toString('latin1'))).toBe(TEXT)
  })

  it('the 8-bit parts of a multipart message are converted, the 7-bit part is left alone', async () => {
    // Sent without BODY=8BITMIME: the relay finds the 8-bit content by looking, not by trusting BODY=.
    await submit({ from: 'a@sender.test', to: 'y@legacy.test', data: multiPart('a@sender.test', 'y@legacy.test', 'multi 8bit') })
    const m = await delivered(legacy, 'multi 8bit')
    expect(has8bit(m.raw)).toBe(false)
    const parts = bodyOf(m.raw).toString('latin1').split(/(?:^|\r\n)--b1(?:--)?\r\n/)
    // parts: [preamble '', text, ascii, attachment]
    expect(parts[1]).toMatch(/^Content-Type: text\/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n/)
    expect(qpDecode(parts[1]!.split('\r\n\r\n').slice(1).join('\r\n\r\n'))).toBe(TEXT)
    expect(parts[2]).toBe('Content-Type: text/plain; charset=us-ascii\r\n\r\nplain ascii = stays')
    expect(parts[3]).toMatch(/^Content-Type: application\/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n/)
    const b64 = parts[3]!.split('\r\n\r\n')[1]!
    expect(b64.split('\r\n').every((l) => l.length <= 76)).toBe(true)
    // Its 1,200-octet line (8-bit data allows 998, RFC 2045 §2.8) was broken when the message came in,
    // at a character boundary; the conversion keeps the rest byte for byte.
    expect(Buffer.from(b64.replace(/\r\n/g, ''), 'base64').toString('utf8')).toBe(`${'ÿ'.repeat(499)}\r\n${'ÿ'.repeat(101)}`)
  })

  it('a message with raw 8-bit header fields cannot be converted: it bounces with 5.6.3', async () => {
    const data = Buffer.from(`${header('hdr8@sender.test', 'h@legacy.test', 'raw header', 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n')}X-Name: Jürgen\r\n\r\n${TEXT}`, 'utf8')
    const mailsBefore = legacy.attempts.mail
    await submit({ from: 'hdr8@sender.test', to: 'h@legacy.test', data, mailArgs: 'BODY=8BITMIME' })
    const ev = await event('bounced', 'h@legacy.test')
    expect(ev.response).toMatch(/^5\.6\.3 legacy\.test\[127\.0\.0\.2\]:\d+ does not support 8BITMIME and the message cannot be converted to 7-bit: it has 8-bit header fields$/)
    expect(legacy.attempts.mail).toBe(mailsBefore)
  })

  it('a next hop with 8BITMIME gets the 8-bit message unchanged', async () => {
    const data = singlePart('a@sender.test', 'x@modern.test', 'single to modern')
    await submit({ from: 'a@sender.test', to: 'x@modern.test', data, mailArgs: 'BODY=8BITMIME' })
    const m = await delivered(modern, 'single to modern')
    expect(m.mailParams.BODY).toBe('8BITMIME')
    expect(bodyOf(m.raw).equals(bodyOf(data))).toBe(true)
  })

  it('with dkim-sign the signature verifies at a next hop without 8BITMIME, and at one with it', async () => {
    for (const [rx, to] of [[legacy, 'x@legacy.test'], [modern, 'x@modern.test']] as const) {
      const subject = `signed 8bit to ${to}`
      await submit({ from: 's@signed.test', to, data: multiPart('s@signed.test', to, subject), mailArgs: 'BODY=8BITMIME' })
      const m = await delivered(rx, subject)
      expect(m.raw.toString('latin1')).toMatch(/^DKIM-Signature: /m)
      expect(has8bit(m.raw)).toBe(false)
      const results = await dkim(m.raw)
      expect(results.map((x) => x.status.result), JSON.stringify(results.map((x) => x.status))).toEqual(['pass'])
    }
  })
})

describe('8-bit content and signatures made before the relay', () => {
  it('a message its sender signed is not converted before the relay signs it: both signatures verify at a next hop with 8BITMIME', async () => {
    // The sender's own key, published for pre.test.
    const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    const der = publicKey.export({ type: 'spki', format: 'der' }).toString('base64')
    dns.set('pre._domainkey.pre.test', { TXT: [`v=DKIM1; k=rsa; p=${der}`] })
    const subject = 'presigned 8bit'
    const unsigned = singlePart('s@signed.test', 'x@modern.test', subject).toString('utf8')
    const { signatures, errors } = await dkimSign(unsigned, { signatureData: [{ signingDomain: 'pre.test', selector: 'pre', privateKey: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() }] } as never)
    expect(errors).toEqual([])
    await submit({ from: 's@signed.test', to: 'x@modern.test', data: Buffer.from(signatures + unsigned, 'utf8'), mailArgs: 'BODY=8BITMIME' })
    const m = await delivered(modern, subject)
    expect(bodyOf(m.raw).equals(bodyOf(Buffer.from(unsigned, 'utf8')))).toBe(true)
    const results = await dkim(m.raw)
    expect(results.map((x) => [x.signingDomain, x.status.result]).sort(), JSON.stringify(results.map((x) => x.status))).toEqual([
      ['pre.test', 'pass'],
      ['signed.test', 'pass'],
    ])
  })

  it('an 8-bit message without MIME-Version is not converted (a transfer encoding means nothing outside MIME): 5.6.3 at a next hop without 8BITMIME', async () => {
    const data = Buffer.from(`From: <nomime@sender.test>\r\nTo: <n@legacy.test>\r\nSubject: no mime\r\nMessage-ID: <nomime@next-hop.test>\r\n\r\n${TEXT}`, 'utf8')
    await submit({ from: 'nomime@sender.test', to: 'n@legacy.test', data, mailArgs: 'BODY=8BITMIME' })
    const ev = await event('bounced', 'n@legacy.test')
    expect(ev.response).toMatch(/^5\.6\.3 .* cannot be converted to 7-bit: it has 8-bit text and no MIME-Version$/)
  })
})

describe('8-bit content too large to keep in memory (spool files)', () => {
  // Over the inline limit (128 KB): the body is a spool file, converted as a stream.
  const big = (from: string, to: string, subject: string) =>
    Buffer.from(`${header(from, to, subject, 'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n')}\r\n${TEXT.repeat(4000)}`, 'utf8')

  it('is converted on the way to a next hop without 8BITMIME, and signed in its 7-bit form', async () => {
    for (const from of ['a@sender.test', 's@signed.test']) {
      const subject = `big from ${from}`
      const data = big(from, 'z@legacy.test', subject)
      expect(data.length).toBeGreaterThan(300_000)
      await submit({ from, to: 'z@legacy.test', data, mailArgs: 'BODY=8BITMIME' })
      const m = await delivered(legacy, subject)
      expect(has8bit(m.raw)).toBe(false)
      expect(qpDecode(bodyOf(m.raw).toString('latin1'))).toBe(TEXT.repeat(4000))
      if (from.endsWith('@signed.test')) expect((await dkim(m.raw)).map((x) => x.status.result)).toEqual(['pass'])
    }
  })
})

describe('SMTPUTF8', () => {
  it('a UTF-8 recipient goes to a next hop with SMTPUTF8 with the parameter on MAIL FROM', async () => {
    await submit({ from: 'a@sender.test', to: 'müller@modern.test', data: singlePart('a@sender.test', 'müller@modern.test', 'utf8 rcpt'), mailArgs: 'SMTPUTF8 BODY=8BITMIME' })
    const m = await delivered(modern, 'utf8 rcpt')
    expect(m.to).toEqual(['müller@modern.test'])
    expect(m.mailParams.SMTPUTF8).toBe('')
  })

  it('a message the client sent with SMTPUTF8 keeps the parameter even with ASCII addresses', async () => {
    const data = Buffer.from(`${header('a@sender.test', 'y@modern.test', 'utf8 headers', 'Content-Type: text/plain; charset=utf-8\r\n')}X-Name: Jürgen Groß\r\n\r\nhi\r\n`, 'utf8')
    await submit({ from: 'a@sender.test', to: 'y@modern.test', data, mailArgs: 'SMTPUTF8' })
    const m = await delivered(modern, 'utf8 headers')
    expect(m.mailParams.SMTPUTF8).toBe('')
  })

  it('a UTF-8 recipient at a next hop without SMTPUTF8 bounces with 5.6.7 before any MAIL FROM', async () => {
    const mailsBefore = legacy.attempts.mail
    await submit({ from: 'bounce-me@sender.test', to: 'jürgen@legacy.test', data: singlePart('bounce-me@sender.test', 'jürgen@legacy.test', 'utf8 to legacy'), mailArgs: 'SMTPUTF8' })
    const ev = await event('bounced', 'jürgen@legacy.test')
    expect(ev.response).toMatch(/^5\.6\.7 legacy\.test\[127\.0\.0\.2\]:\d+ does not support SMTPUTF8 \(RFC 6531\)$/)
    expect(legacy.attempts.mail).toBe(mailsBefore)
    expect(legacy.messages.some((m) => m.to.includes('jürgen@legacy.test'))).toBe(false)
    const dsn = await eventually(() => senderMx.messages.find((m) => m.to.includes('bounce-me@sender.test')), 10_000, 'the DSN')
    expect(dsn.raw.toString('latin1')).toMatch(/Status: 5\.6\.7/)
  })

  it('a message sent with SMTPUTF8 whose addresses and header fields are ASCII goes to a next hop without SMTPUTF8, without the parameter; its 8-bit body converted', async () => {
    // RFC 6531 §3.2 and Postfix: nothing in it needs SMTPUTF8 (a client may ask for it on every message).
    await submit({ from: 'a@sender.test', to: 'ascii@legacy.test', data: singlePart('a@sender.test', 'ascii@legacy.test', 'ascii smtputf8'), mailArgs: 'SMTPUTF8 BODY=8BITMIME' })
    const m = await delivered(legacy, 'ascii smtputf8')
    expect(m.mailParams.SMTPUTF8).toBeUndefined()
    expect(has8bit(m.raw)).toBe(false)
    expect(qpDecode(bodyOf(m.raw).toString('latin1'))).toBe(TEXT)
  })

  it('a message sent with SMTPUTF8 with ASCII addresses but a UTF-8 header field bounces with 5.6.7 at a next hop without SMTPUTF8', async () => {
    const data = Buffer.from(`${header('utf8-header@sender.test', 'u8h@legacy.test', 'utf8 header to legacy', 'Content-Type: text/plain; charset=utf-8\r\n')}X-Name: Jürgen Groß\r\n\r\nhi\r\n`, 'utf8')
    await submit({ from: 'utf8-header@sender.test', to: 'u8h@legacy.test', data, mailArgs: 'SMTPUTF8' })
    const ev = await event('bounced', 'u8h@legacy.test')
    expect(ev.response).toMatch(/^5\.6\.7 legacy\.test\[127\.0\.0\.2\]:\d+ does not support SMTPUTF8 \(RFC 6531\)$/)
    expect(legacy.messages.some((x) => x.to.includes('u8h@legacy.test'))).toBe(false)
  })
})
