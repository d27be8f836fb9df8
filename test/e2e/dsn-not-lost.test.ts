// A DSN is not lost for what it quotes nor to the untrusted-sender limit:
// - a RET=FULL bounce of a message with 8-bit header fields, to a sender whose MX has no 8BITMIME,
//   returns it as message/global, base64 (RFC 6532, 6533), instead of failing 5.6.3; a DSN with
//   8-bit content goes with BODY=8BITMIME to a next hop that offers it;
// - for mail from an untrusted client (delivery.untrustedDsn): a delay warning does not use up
//   the sender's allowance for the failure that follows, and the failures of one message in
//   several domains count as one notification.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'

/** The receivers' port (one for every address: delivery.port), free when the first starts. */
let PORT = 0
const UNTRUSTED = '127.0.0.99' // not in smtp.trustedNetworks (127.0.0.1 is)
let dns: TestDns
let dest: TestReceiver // 127.0.35.12: the recipients' MX; 550 to bad*, 451 then 550 to later*, 451 to stuck*
let legacy: TestReceiver // 127.0.35.13: legacy.test, no 8BITMIME (nor SMTPUTF8)
let modern: TestReceiver // 127.0.35.14: modern.test, offers 8BITMIME
let relay: RelayProcess
const tries = new Map<string, number>()

async function submit(opts: { from: string; to: string[]; data: string; mailArgs?: string; localAddress?: string }): Promise<void> {
  const { client } = await connectRaw(relay.port, '127.0.0.1', 5000, undefined, opts.localAddress)
  try {
    await client.command('EHLO client.test')
    expect(await client.command(`MAIL FROM:<${opts.from}>${opts.mailArgs ? ` ${opts.mailArgs}` : ''}`)).toMatch(/^250 /)
    for (const to of opts.to) expect(await client.command(`RCPT TO:<${to}>`)).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const end = client.read(10_000)
    client.send(dotStuff(opts.data))
    expect(await end).toMatch(/^250 /)
    await client.command('QUIT', 1000).catch(() => undefined)
  } finally {
    client.close()
  }
}

const text = (m: ReceivedMessage) => m.raw.toString('utf8')
const dsnsTo = (rx: TestReceiver, address: string) => rx.messages.filter((m) => m.from === '' && m.to.includes(address))

beforeAll(async () => {
  dest = await startReceiver({
    host: '127.0.35.12',
    port: 0,
    behaviour: {
      noStartTls: true,
      reply: {
        rcpt: ({ address }) => {
          const n = (tries.get(address!) ?? 0) + 1
          tries.set(address!, n)
          if (/^bad/.test(address!)) return { code: 550, message: '5.1.1 No such user' }
          if (/^stuck/.test(address!)) return { code: 451, message: '4.3.0 Try again later' }
          if (/^later/.test(address!)) return n < 3 ? { code: 451, message: '4.3.0 Try again later' } : { code: 550, message: '5.1.1 No such user after all' }
          return undefined
        },
      },
    },
  })
  PORT = dest.port
  legacy = await startReceiver({ host: '127.0.35.13', port: PORT, behaviour: { noStartTls: true }, serverOptions: { hide8BITMIME: true, hideSMTPUTF8: true } })
  modern = await startReceiver({ host: '127.0.35.14', port: PORT, behaviour: { noStartTls: true } })
  dns = await startDns({
    'dest.test': { A: ['127.0.35.12'] },
    'a.test': { A: ['127.0.35.12'] },
    'b.test': { A: ['127.0.35.12'] },
    'c.test': { A: ['127.0.35.12'] },
    'legacy.test': { A: ['127.0.35.13'] },
    'modern.test': { A: ['127.0.35.14'] },
  })
  relay = await startRelay({
    config: {
      // Accepted from anyone (untrusted clients too): the domains are this relay's to deliver.
      localDomains: ['dest.test', 'a.test', 'b.test', 'c.test'],
      dns: { servers: [dns.server], timeout: '1s' },
      smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.1/32'] },
      delivery: { port: PORT, mtaSts: { enabled: false }, connectTimeout: '1s', delayWarning: '1s', retry: { base: '1s', factor: 1, max: '1s' } },
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, dest, legacy, modern].map((x) => x?.close()))
})

const utf8Message = (from: string, to: string, id: string, headers8bit: boolean) =>
  `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${headers8bit ? 'Grüße aus Köln' : 'plain subject'}\r\nMessage-ID: <${id}@sender.test>\r\n` +
  `MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nÄÖÜ body of ${id}\r\n`

describe('a DSN that a next hop without 8BITMIME could not take as built', () => {
  it('RET=FULL of a message with 8-bit header fields: the whole message comes back as message/global, base64 for a next hop without 8BITMIME (RFC 6532 3.7), not a 5.6.3 failure', async () => {
    await submit({ from: 's1@legacy.test', to: ['bad1@dest.test'], data: utf8Message('s1@legacy.test', 'bad1@dest.test', 'hdr8', true), mailArgs: 'BODY=8BITMIME RET=FULL' })
    const dsn = await eventually(() => dsnsTo(legacy, 's1@legacy.test')[0], 10_000, 'the bounce at legacy.test')
    const raw = text(dsn)
    expect(raw).toContain('Final-Recipient: rfc822; bad1@dest.test')
    // RFC 6533: the report of an internationalized message is a global one.
    expect(raw).toMatch(/Content-Type: multipart\/report; report-type=global-delivery-status;/)
    expect(raw).toMatch(/Content-Type: message\/global-delivery-status/)
    expect(raw).not.toMatch(/Content-Type: (message\/rfc822|text\/rfc822-headers)/)
    expect(raw).not.toContain('Only the headers')
    // Sent as 7-bit: the returned message base64, whole.
    expect([...dsn.raw].some((b) => b > 127)).toBe(false)
    const returned = /Content-Type: message\/global\r\nContent-Transfer-Encoding: base64\r\n\r\n([A-Za-z0-9+/=\r\n]+)\r\n--/.exec(raw)
    expect(returned, raw).not.toBeNull()
    const original = Buffer.from(returned![1]!.replace(/\s+/g, ''), 'base64').toString('utf8')
    expect(original).toContain('Subject: Grüße aus Köln')
    expect(original).toContain('ÄÖÜ body of hdr8')
    expect(relay.logs.some((l) => l.event === 'bounced' && l.recipient === 's1@legacy.test')).toBe(false)
  })

  it('an SMTPUTF8 message (a UTF-8 sender): its DSN is a global report returning message/global-headers, to a next hop with SMTPUTF8', async () => {
    await submit({ from: 'rené@modern.test', to: ['bad4@dest.test'], data: utf8Message('rené@modern.test', 'bad4@dest.test', 'utf8smtp', true), mailArgs: 'SMTPUTF8 BODY=8BITMIME' })
    const dsn = await eventually(() => dsnsTo(modern, 'rené@modern.test')[0], 10_000, 'the bounce at modern.test')
    const raw = text(dsn)
    expect(raw).toMatch(/Content-Type: multipart\/report; report-type=global-delivery-status;/)
    expect(raw).toMatch(/Content-Type: message\/global-delivery-status\r\n/)
    expect(raw).toMatch(/Content-Type: message\/global-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\n[^]*Subject: Grüße aus Köln\r\n/)
    expect(raw).toContain('Final-Recipient: rfc822; bad4@dest.test')
  })

  it('RET=FULL with 8-bit in the body only still returns the whole message, converted to 7-bit', async () => {
    await submit({ from: 's2@legacy.test', to: ['bad2@dest.test'], data: utf8Message('s2@legacy.test', 'bad2@dest.test', 'body8', false), mailArgs: 'BODY=8BITMIME RET=FULL' })
    const dsn = await eventually(() => dsnsTo(legacy, 's2@legacy.test')[0], 10_000, 'the bounce at legacy.test')
    expect(text(dsn)).toMatch(/Content-Type: message\/rfc822/)
    expect(text(dsn)).toContain('=C3=84=C3=96=C3=9C body of body8')
    expect(text(dsn)).not.toContain('Only the headers')
  })

  it('a DSN with 8-bit content goes with BODY=8BITMIME to a next hop that offers it', async () => {
    await submit({ from: 's3@modern.test', to: ['bad3@dest.test'], data: utf8Message('s3@modern.test', 'bad3@dest.test', 'modern8', false), mailArgs: 'BODY=8BITMIME RET=FULL' })
    const dsn = await eventually(() => dsnsTo(modern, 's3@modern.test')[0], 10_000, 'the bounce at modern.test')
    expect(dsn.mailParams.BODY ?? dsn.mailParams.body).toBe('8BITMIME')
    expect(text(dsn)).toContain('ÄÖÜ body of modern8')
  })
})

describe('DSNs for mail from an untrusted client', () => {
  const plain = (from: string, to: string, id: string) => `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${id}\r\nMessage-ID: <${id}@sender.test>\r\n\r\nhello\r\n`

  it('a delay warning does not use up the allowance: the failure that follows reaches the sender', async () => {
    await submit({ from: 'stranger1@modern.test', to: ['later1@dest.test'], data: plain('stranger1@modern.test', 'later1@dest.test', 'delayed-then-failed'), localAddress: UNTRUSTED })
    const dsns = await eventually(() => {
      const got = dsnsTo(modern, 'stranger1@modern.test')
      return got.length >= 2 ? got : undefined
    }, 20_000, 'a delay warning and a bounce')
    expect(text(dsns[0]!)).toContain('Action: delayed')
    expect(text(dsns[1]!)).toContain('Action: failed')
    expect(text(dsns[1]!)).toContain('5.1.1 No such user after all')
    expect(relay.logs.some((l) => /DSN dropped/.test(String(l.msg)) && l.to === 'stranger1@modern.test')).toBe(false)
  })

  it("a delay warning for one message does not hold back the failure of the sender's next one", async () => {
    await submit({ from: 'stranger3@modern.test', to: ['stuck3@dest.test'], data: plain('stranger3@modern.test', 'stuck3@dest.test', 'stuck'), localAddress: UNTRUSTED })
    await eventually(() => dsnsTo(modern, 'stranger3@modern.test')[0], 10_000, 'the delay warning')
    await submit({ from: 'stranger3@modern.test', to: ['badnext3@dest.test'], data: plain('stranger3@modern.test', 'badnext3@dest.test', 'next-fails'), localAddress: UNTRUSTED })
    const bounce = await eventually(() => dsnsTo(modern, 'stranger3@modern.test').find((m) => text(m).includes('Action: failed')), 10_000, 'the bounce')
    expect(text(bounce)).toContain('Final-Recipient: rfc822; badnext3@dest.test')
    expect(dsnsTo(modern, 'stranger3@modern.test').filter((m) => text(m).includes('Action: delayed'))).toHaveLength(1)
  })

  it('one message failing in three domains counts once: the sender hears of all three, a second message is limited', async () => {
    const to = ['bad@a.test', 'bad@b.test', 'bad@c.test']
    await submit({ from: 'stranger2@modern.test', to, data: plain('stranger2@modern.test', to[0]!, 'three-domains'), localAddress: UNTRUSTED })
    const finals = () => dsnsTo(modern, 'stranger2@modern.test').flatMap((m) => [...text(m).matchAll(/^Final-Recipient: rfc822; (\S+)/gm)].map((x) => x[1]))
    await eventually(() => (finals().length >= 3 ? true : undefined), 10_000, 'bounces for all three recipients')
    expect(finals().sort()).toEqual(to)
    expect(relay.logs.some((l) => /DSN dropped/.test(String(l.msg)) && l.to === 'stranger2@modern.test')).toBe(false)
    // The limit still holds for the next message of this sender within the interval.
    await submit({ from: 'stranger2@modern.test', to: ['bad2@a.test'], data: plain('stranger2@modern.test', 'bad2@a.test', 'second-message'), localAddress: UNTRUSTED })
    await relay.waitForLog((l) => /DSN dropped/.test(String(l.msg)) && l.to === 'stranger2@modern.test', 10_000)
    expect(finals()).not.toContain('bad2@a.test')
  })
})
