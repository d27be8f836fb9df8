// mail-auth: what a sender can do to be believed. DKIM signatures with a body length limit (l=, RFC 6376 §3.5) whose message carries
// more body than the signature covers. Whoever holds one signed message of a p=reject domain
// could append (or, with l=0, write) any text, and the signature would still "pass" and carry
// DMARC (RFC 6376 §8.2). Such a signature is dkim=policy and does not count for DMARC.
// And Authentication-Results fields that claim this relay's authserv-id in a form a reader still
// takes for it (RFC 8601 §5).
// The built relay runs with an `mx` listener; DNS (the author's key, SPF, DMARC) comes from the
// test DNS server; delivered mail lands in a real SMTP receiver (the MX of local.test).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import { dkimSign } from 'mailauth'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'

const CLIENT = '127.0.0.11' // in no SPF record: only DKIM can carry DMARC here
let dns: TestDns
let mx: TestReceiver
let relay: RelayProcess
let partial: RelayProcess // partialBody: 'pass'
const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()

const message = (subject: string, body: string) =>
  `From: Bank <news@bank.test>\r\nTo: <rcpt@local.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@bank.test>\r\nDate: ${new Date().toUTCString()}\r\n\r\n${body}`

/** The bank's own signature, with l= set to `length` when given. */
async function signed(msg: string, length?: number): Promise<string> {
  const data = { signingDomain: 'bank.test', selector: 'sel', privateKey: pem, ...(length === undefined ? {} : { maxBodyLength: length }) }
  const { signatures, errors } = await dkimSign(msg, { signatureData: [data] } as never)
  expect(errors).toEqual([])
  return signatures + msg
}

async function send(to: RelayProcess, data: string): Promise<string> {
  const r = await sendMail(to.port, { from: 'news@bank.test', to: ['rcpt@local.test'], data, localAddress: CLIENT, helo: 'client.example.test', timeoutMs: 8000 })
  return r.lastReply
}

async function delivered(subject: string): Promise<ReceivedMessage> {
  return eventually(() => mx.messages.find((m) => m.raw.toString('latin1').includes(`\r\nSubject: ${subject}\r\n`)), 10_000, `delivery of ${subject}`)
}

/** The entries of this relay's Authentication-Results, unfolded. */
function results(raw: Buffer): string[] {
  const head = raw.toString('latin1').split('\r\n\r\n')[0]!
  const ours = head.split(/\r\n(?![ \t])/).filter((f) => /^Authentication-Results: relay\.test;/i.test(f))
  expect(ours).toHaveLength(1)
  return ours[0]!.replace(/\r\n[ \t]+/g, ' ').replace(/^[^;]*;\s*/, '').split(/;\s*/)
}

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.0.3' })
  dns = await startDns({
    'local.test': { MX: [{ exchange: 'mx.local.test', priority: 10 }] },
    'mx.local.test': { A: ['127.0.0.3'] },
    'bank.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
    '_dmarc.bank.test': { TXT: ['v=DMARC1; p=reject'] },
    'sel._domainkey.bank.test': { TXT: [`v=DKIM1; k=rsa; p=${publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`] },
  })
  const config = (options: Record<string, unknown>) => ({
    config: {
      localDomains: ['local.test'],
      dns: { servers: [dns.server], timeout: '500ms' },
      delivery: { port: mx.port },
      plugins: [['mail-auth', options]],
    },
  })
  ;[relay, partial] = await Promise.all([startRelay(config({})), startRelay(config({ partialBody: 'pass' }))])
})

afterAll(async () => {
  await Promise.all([relay?.stop(), partial?.stop()])
  await Promise.all([dns?.close(), mx?.close()])
})

describe('DKIM l=: a signature that does not cover the whole body (RFC 6376 §8.2)', () => {
  it('text appended after the signed length: dkim=policy, and p=reject refuses it (550 5.7.1)', async () => {
    const body = 'Your statement is ready.\r\n'
    const forged = (await signed(message('l-appended', body), body.length)) + 'Urgent: confirm your password at http://bank.example.invalid/\r\n'
    expect(await send(relay, forged)).toMatch(/^550 5\.7\.1 Message rejected: bank\.test publishes DMARC policy reject/)
    expect(await relay.waitForLog((l) => l.msg === 'message refused: DMARC policy reject', 5000)).toMatchObject({ dkim: ['bank.test:policy'] })
  })

  it("l=0 and a body of the sender's choosing: refused the same way", async () => {
    const forged = (await signed(message('l-zero', ''), 0)) + 'Anything at all.\r\n'
    expect(await send(relay, forged)).toMatch(/^550 5\.7\.1 /)
  })

  it('a body exactly as long as l= says, and a signature without l=, still pass and carry DMARC', async () => {
    const body = 'Your statement is ready.\r\n'
    expect(await send(relay, await signed(message('l-exact', body), body.length))).toMatch(/^250 /)
    expect(await send(relay, await signed(message('l-none', body)))).toMatch(/^250 /)
    for (const subject of ['l-exact', 'l-none']) {
      const entries = results((await delivered(subject)).raw)
      expect(entries.find((e) => e.startsWith('dkim='))).toMatch(/^dkim=pass .*header\.d=bank\.test/)
      expect(entries.find((e) => e.startsWith('dmarc='))).toMatch(/^dmarc=pass /)
    }
  })

  it("with partialBody: 'pass' the signature passes as mailauth says, noting the unsigned bytes", async () => {
    const body = 'Your statement is ready.\r\n'
    const appended = (await signed(message('l-allowed', body), body.length)) + 'A list footer.\r\n'
    expect(await send(partial, appended)).toMatch(/^250 /)
    const entries = results((await delivered('l-allowed')).raw)
    expect(entries.find((e) => e.startsWith('dkim='))).toMatch(/^dkim=pass \(undersized signature: 16 bytes unsigned\) header\.d=bank\.test/)
    expect(entries.find((e) => e.startsWith('dmarc='))).toMatch(/^dmarc=pass /)
  })
})

describe('Authentication-Results claiming our authserv-id (RFC 8601 §5)', () => {
  it('the fully qualified form with its trailing dot (RELAY.TEST.) is removed too; other ids stay', async () => {
    const forged =
      'Authentication-Results: RELAY.TEST.; dkim=pass header.d=forged.test\r\n' +
      'Authentication-Results: relay.test. 1; spf=pass smtp.mailfrom=forged.test\r\n' +
      'Authentication-Results: relay.test.other.test; spf=none\r\n'
    const msg = message('ar-dot', 'Hello.\r\n').replace('\r\n\r\n', `\r\n${forged}\r\n`)
    expect(await send(relay, await signed(msg))).toMatch(/^250 /)
    const head = (await delivered('ar-dot')).raw.toString('latin1').split('\r\n\r\n')[0]!
    const ars = head.split(/\r\n(?![ \t])/).filter((f) => /^Authentication-Results:/i.test(f))
    expect(ars.join('\n')).not.toMatch(/forged\.test/)
    expect(ars).toHaveLength(2)
    expect(ars).toContain('Authentication-Results: relay.test.other.test; spf=none')
  })
})
