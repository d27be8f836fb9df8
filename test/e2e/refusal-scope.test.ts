// What a refusal is evidence of. Only a reply that says a recipient's mailbox does not exist may
// put that recipient on the suppression list: a next hop that refuses the *sender* (Postfix's
// smtpd_reject_unlisted_sender: "550 5.1.0 <s>: Sender address rejected: User unknown", at MAIL FROM
// or, with smtpd_delay_reject, at RCPT) bounces the message but says nothing of the recipients.
// Microsoft 365's unknown user (550 5.1.10 RecipientNotFound) is a bad mailbox, not a null MX. And
// "552 5.5.3 Too many recipients" at RCPT means 452 (RFC 5321 §4.5.3.1.10): never a bounce.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, sendMail } from '../harness/smtp-client.js'
import { runCli, startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'

/** The receivers' port (one for every address: delivery.port), free when the first starts. */
let PORT = 0
let dns: TestDns
let relay: RelayProcess
const receivers: TestReceiver[] = []
let inTransaction = 0 // RCPTs since the last MAIL FROM at cap.test
let capRx: TestReceiver

const msg = (subject: string) => `From: a@sender.test\r\nTo: x@dest.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\n\r\nHello.\r\n`
const outcome = (recipient: string): Promise<LogLine> => relay.waitForLog((l) => ['delivered', 'deferred', 'bounced'].includes(String(l.event)) && l.recipient === recipient, 15_000)
const suppressed = () => (JSON.parse(runCli(['suppression', 'list', '--json', '--config', relay.configFile]).stdout) as { address: string }[]).map((s) => s.address)

/** How the relay answers RCPT for `address` now (a suppressed address gets 550). */
async function rcptReply(address: string): Promise<string> {
  const { client } = await connectRaw(relay.port)
  try {
    await client.command('EHLO client.test')
    await client.command('MAIL FROM:<real@sender.test>')
    return await client.command(`RCPT TO:<${address}>`)
  } finally {
    await client.command('QUIT', 1000).catch(() => undefined)
    client.close()
  }
}

beforeAll(async () => {
  type Options = Parameters<typeof startReceiver>[0]
  const rx = (host: string, reply: Options['behaviour'], serverOptions?: Options['serverOptions']) =>
    startReceiver({ host, port: PORT, behaviour: { noStartTls: true, ...reply }, serverOptions }).then((r) => (receivers.push(r), (PORT = r.port), r))
  // sender.test's own MX: where the DSNs go.
  await rx('127.0.9.1', {})
  // Refuses the sender ghost1 at MAIL FROM; ghost2 and ghost3 at RCPT (Postfix with smtpd_delay_reject).
  // No PIPELINING: the refusal of MAIL FROM is then the reply every recipient gets.
  await rx('127.0.9.2', {
    reply: {
      mail: ({ address }) =>
        address?.startsWith('ghost1')
          ? { code: 550, message: `5.1.0 <${address}>: Sender address rejected: User unknown in local recipient table` }
          : address?.startsWith('ghost5')
            ? { code: 550, message: '5.1.1 User unknown' }
            : undefined,
      rcpt: ({ address }) =>
        address?.startsWith('bob')
          ? { code: 550, message: '5.1.0 <ghost2@sender.test>: Sender address rejected: User unknown in local recipient table' }
          : address?.startsWith('carol')
            ? { code: 550, message: '5.7.1 <ghost3@sender.test>: Sender address rejected: undeliverable address' }
            : address?.startsWith('dave')
              ? { code: 553, message: '5.1.7 sender mailbox unavailable' }
              : undefined,
    },
  }, { hidePIPELINING: true })
  // Microsoft 365's wording for a recipient it does not know.
  await rx('127.0.9.3', {
    reply: {
      rcpt: ({ address }) =>
        address?.startsWith('nobody')
          ? { code: 550, message: '5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup' }
          : address?.startsWith('full')
            ? { code: 552, message: '5.2.2 Mailbox full' }
            : undefined,
    },
  })
  // Refuses the message after DATA with a 5.1.1 that names one of its recipients.
  await rx('127.0.9.6', { reply: { data: () => ({ code: 550, message: '5.1.1 <bob@tx.test>: Recipient address rejected: User unknown' }) } })
  // At most 2 recipients per transaction, the rest refused with 552 5.5.3 (older servers' 452).
  capRx = await rx('127.0.9.4', {
    reply: {
      mail: () => ((inTransaction = 0), undefined),
      rcpt: () => (++inTransaction > 2 ? { code: 552, message: '5.5.3 Too many recipients' } : undefined),
    },
  })
  // 552 5.5.3 to every recipient: no transaction delivers to anyone.
  await rx('127.0.9.5', { reply: { rcpt: () => ({ code: 552, message: '5.5.3 Too many recipients' }) } })
  dns = await startDns({
    'sender.test': { A: ['127.0.9.1'] },
    'dest.test': { A: ['127.0.9.2'] },
    'o365.test': { A: ['127.0.9.3'] },
    'cap.test': { A: ['127.0.9.4'] },
    'nocap.test': { A: ['127.0.9.5'] },
    'tx.test': { A: ['127.0.9.6'] },
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.0/8'] },
      delivery: {
        port: PORT,
        retry: { base: '1h', factor: 1, max: '1h' },
        mtaSts: { enabled: false },
        delayWarning: false,
        maxRecipientsPerTransaction: 4,
        suppression: { enabled: true, ttl: '30d' },
      },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await dns?.close()
  await Promise.all(receivers.map((r) => r.close()))
})

describe('a refusal of the sender', () => {
  it('at MAIL FROM or at RCPT (5.1.0 / 5.7.1 Sender address rejected, 5.1.7): bounced, but no recipient suppressed', async () => {
    await sendMail(relay.port, { from: 'ghost1@sender.test', to: ['alice@dest.test'], data: msg('ghost1') })
    await sendMail(relay.port, { from: 'ghost2@sender.test', to: ['bob@dest.test'], data: msg('ghost2') })
    await sendMail(relay.port, { from: 'ghost3@sender.test', to: ['carol@dest.test'], data: msg('ghost3') })
    await sendMail(relay.port, { from: 'ghost4@sender.test', to: ['dave@dest.test'], data: msg('ghost4') })
    expect(await outcome('alice@dest.test')).toMatchObject({ event: 'bounced', category: 'other', response: expect.stringMatching(/^550 5\.1\.0 .*Sender address rejected/) })
    expect(await outcome('bob@dest.test')).toMatchObject({ event: 'bounced', category: 'other' })
    expect(await outcome('carol@dest.test')).toMatchObject({ event: 'bounced', category: 'policy' })
    expect(await outcome('dave@dest.test')).toMatchObject({ event: 'bounced', category: 'other' })
    await new Promise((r) => setTimeout(r, 300)) // a suppression would be logged with the results
    expect(relay.logs.filter((l) => /^suppressed /.test(String(l.msg)))).toEqual([])
    expect(suppressed()).toEqual([])
    // A legitimate sender still reaches them.
    for (const to of ['alice@dest.test', 'bob@dest.test', 'carol@dest.test', 'dave@dest.test']) expect(await rcptReply(to)).toMatch(/^250 /)
  })
})

describe('a refusal of the whole transaction', () => {
  it('550 5.1.1 at MAIL FROM, or after DATA naming one recipient: all bounced, none suppressed', async () => {
    await sendMail(relay.port, { from: 'ghost5@sender.test', to: ['erin@dest.test'], data: msg('ghost5') })
    const tx = ['alice@tx.test', 'bob@tx.test', 'carol@tx.test']
    await sendMail(relay.port, { from: 'a@sender.test', to: tx, data: msg('tx') })
    expect(await outcome('erin@dest.test')).toMatchObject({ event: 'bounced', category: 'bad-mailbox', response: '550 5.1.1 User unknown' })
    for (const r of tx) expect(await outcome(r)).toMatchObject({ event: 'bounced', response: expect.stringMatching(/^550 5\.1\.1 <bob@tx\.test>/) })
    await new Promise((r) => setTimeout(r, 300)) // a suppression would be logged with the results
    expect(suppressed()).toEqual([])
    for (const to of ['erin@dest.test', ...tx]) expect(await rcptReply(to)).toMatch(/^250 /)
  })
})

describe("Microsoft 365's unknown recipient", () => {
  it('550 5.1.10 RecipientNotFound at RCPT is a bad mailbox: bounced and suppressed', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['nobody@o365.test'], data: msg('o365') })
    expect(await outcome('nobody@o365.test')).toMatchObject({ event: 'bounced', category: 'bad-mailbox' })
    await relay.waitForLog((l) => l.msg === 'suppressed nobody@o365.test')
    expect(await rcptReply('nobody@o365.test')).toMatch(/^550 5\.1\.1 <nobody@o365\.test>: recipient suppressed/)
  })
})

describe('552 at RCPT (RFC 5321 §4.5.3.1.10, as Postfix: 452)', () => {
  it('552 5.2.2 mailbox full to RCPT: deferred, not bounced', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['full@o365.test'], data: msg('full') })
    expect(await outcome('full@o365.test')).toMatchObject({ event: 'deferred', category: 'mailbox-full', response: '552 5.2.2 Mailbox full' })
  })
})

describe('552 5.5.3 too many recipients at RCPT', () => {
  it('the refused recipients go in the next transaction: all delivered, none bounced', async () => {
    const to = ['r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7'].map((r) => `${r}@cap.test`)
    await sendMail(relay.port, { from: 'a@sender.test', to, data: msg('cap') })
    for (const r of to) expect(await outcome(r)).toMatchObject({ event: 'delivered' })
    expect(capRx.messages.map((m) => m.to.length).every((n) => n <= 2)).toBe(true)
    expect(capRx.messages.flatMap((m) => m.to).sort()).toEqual(to)
  })

  it('when nobody of the transaction was taken: deferred, not bounced', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['x1@nocap.test', 'x2@nocap.test'], data: msg('nocap') })
    for (const r of ['x1@nocap.test', 'x2@nocap.test']) expect(await outcome(r)).toMatchObject({ event: 'deferred', response: '552 5.5.3 Too many recipients' })
    expect(relay.logs.some((l) => l.event === 'bounced' && String(l.recipient).endsWith('@nocap.test'))).toBe(false)
  })
})
