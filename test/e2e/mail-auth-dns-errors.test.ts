// mail-auth: a DNS failure while checking a message must never turn into a permanent refusal of
// mail that might be genuine, and a sender must not be able to use one to escape a refusal. The
// DMARC failure of a p=reject domain whose own DKIM key could not be fetched (SERVFAIL) may not be
// real (RFC 7489 §6.6.2): with tempError 'tempfail' it is deferred (451), with 'accept' it is
// accepted and quarantined (never 550). A key failure of an unrelated domain's signature says
// nothing about the author: the spoof is refused as usual.
// The built relays run with an `mx` listener; DNS comes from the test DNS server; delivered mail
// lands in a real SMTP receiver (the MX of local.test).
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
let tempfailing: RelayProcess // tempError 'tempfail' (the default)
let accepting: RelayProcess // tempError 'accept'
const pem = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()

const message = (subject: string) =>
  `From: Bank <news@bank.test>\r\nTo: <rcpt@local.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@bank.test>\r\nDate: ${new Date().toUTCString()}\r\n\r\nHello.\r\n`

/** The message signed with d=<domain> (whose key record, in these zones, cannot be fetched). */
async function signedBy(msg: string, domain: string): Promise<string> {
  const { signatures, errors } = await dkimSign(msg, { signatureData: [{ signingDomain: domain, selector: 'sel', privateKey: pem }] } as never)
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

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.0.3' })
  dns = await startDns({
    'local.test': { MX: [{ exchange: 'mx.local.test', priority: 10 }] },
    'mx.local.test': { A: ['127.0.0.3'] },
    'bank.test': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
    '_dmarc.bank.test': { TXT: ['v=DMARC1; p=reject'] },
    'sel._domainkey.bank.test': 'SERVFAIL',
    'sel._domainkey.mail.bank.test': 'SERVFAIL',
    'sel._domainkey.elsewhere.test': 'SERVFAIL',
  })
  const config = (options: Record<string, unknown>) => ({
    config: { localDomains: ['local.test'], dns: { servers: [dns.server], timeout: '500ms' }, delivery: { port: mx.port }, plugins: [['mail-auth', options]] },
  })
  ;[tempfailing, accepting] = await Promise.all([startRelay(config({})), startRelay(config({ tempError: 'accept' }))])
})

afterAll(async () => {
  await Promise.all([tempfailing?.stop(), accepting?.stop()])
  await Promise.all([dns?.close(), mx?.close()])
})

describe("the author's own DKIM key cannot be fetched (SERVFAIL), DMARC p=reject fails", () => {
  it("tempError 'tempfail': 451 4.7.1, for d= the author domain and for a subdomain of it", async () => {
    for (const d of ['bank.test', 'mail.bank.test']) {
      expect(await send(tempfailing, await signedBy(message(`tf-${d}`), d))).toMatch(/^451 4\.7\.1 Temporary DNS error checking the message authentication/)
    }
  })

  it("tempError 'accept': accepted (not 550), quarantined, with dkim=temperror recorded", async () => {
    expect(await send(accepting, await signedBy(message('accept-own-key'), 'bank.test'))).toMatch(/^250 /)
    const head = (await delivered('accept-own-key')).raw.toString('latin1').split('\r\n\r\n')[0]!.replace(/\r\n[ \t]+/g, ' ')
    expect(head).toMatch(/\r\nX-Relay-Quarantine: dmarc\r\n/)
    expect(head).toMatch(/\r\nAuthentication-Results: relay\.test; dkim=temperror .*header\.d=bank\.test.*dmarc=fail /)
  })
})

describe("a key failure of an unrelated domain's signature", () => {
  it('does not save a spoof of a p=reject domain from 550, with either tempError', async () => {
    for (const relay of [tempfailing, accepting]) {
      const spoof = await signedBy(message(`spoof-${relay.port}`), 'elsewhere.test')
      expect(await send(relay, spoof)).toMatch(/^550 5\.7\.1 Message rejected: bank\.test publishes DMARC policy reject/)
    }
  })
})
