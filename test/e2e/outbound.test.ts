// Outbound details: opportunistic STARTTLS and its fallback, headers added on submission (and
// Return-Path removed), DNS that does not answer, greeting failures moving on to the next MX, expiry bounces.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import net from 'node:net'
import path from 'node:path'
import { ROOT, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns

/** The DSN that names `recipient`, among those after the first `from`: other tests' messages (the greylisted one) expire and bounce to the same sender meanwhile. */
async function dsnFor(recipient: string, from: number): Promise<string> {
  const deadline = Date.now() + 10_000
  for (let n = from + 1; ; n++) {
    const found = (await senderRx.waitForMessages(n, Math.max(1, deadline - Date.now()))).slice(from).map((m) => m.raw.toString())
      .find((raw) => raw.includes(`\r\nFinal-Recipient: rfc822; ${recipient}\r\n`))
    if (found) return found
  }
}
let tlsRx: TestReceiver // 127.0.0.2: STARTTLS works (self-signed: 'may' TLS does not verify)
let brokenTlsRx: TestReceiver // 127.0.0.3: offers STARTTLS, the handshake always fails
let plainRx: TestReceiver // 127.0.0.4
let greet421: TestReceiver // 127.0.0.5: 421 at the greeting
let senderRx: TestReceiver // 127.0.0.6: where bounces go
let mail421: TestReceiver // 127.0.0.7: 421 to MAIL FROM
let dropAtMail: TestReceiver // 127.0.0.13: closes the connection at MAIL FROM, no reply
let full452: TestReceiver // 127.0.0.14: 452 insufficient storage after the message
let midData: { server: net.Server; connections: number } // 127.0.0.15: closes in the middle of the message
let dropAfterDot: TestReceiver // 127.0.0.16: takes the whole message, closes without a reply
let data421: TestReceiver // 127.0.0.8: 421 after the message
let greylist: TestReceiver // 127.0.0.10: 450 to RCPT
let greet554: TestReceiver // 127.0.0.12: 554 at the greeting (a blocklist entry)
let mute: { server: net.Server; connections: number; sockets: Set<net.Socket> } // 127.0.0.11: takes connections, never greets
let relay: RelayProcess

const msg = (subject: string) => `From: a@sender.test\r\nTo: x@y.test\r\nSubject: ${subject}\r\n\r\nbody\r\n`

beforeAll(async () => {
  tlsRx = await startReceiver({ host: '127.0.0.2' })
  const port = tlsRx.port
  // The client insists on TLS 1.2+; a server capped at TLS 1.0 fails every handshake.
  brokenTlsRx = await startReceiver({ host: '127.0.0.3', port, serverOptions: { maxVersion: 'TLSv1', minVersion: 'TLSv1' } })
  plainRx = await startReceiver({ host: '127.0.0.4', port, behaviour: { noStartTls: true } })
  greet421 = await startReceiver({ host: '127.0.0.5', port, behaviour: { reply: { connect: () => ({ code: 421, message: 'too busy' }) } } })
  senderRx = await startReceiver({ host: '127.0.0.6', port, behaviour: { noStartTls: true } })
  mail421 = await startReceiver({ host: '127.0.0.7', port, behaviour: { reply: { mail: () => ({ code: 421, message: '4.7.0 Try again later, closing connection' }) } } })
  data421 = await startReceiver({ host: '127.0.0.8', port, behaviour: { reply: { data: () => ({ code: 421, message: '4.3.2 Shutting down, closing connection' }) } } })
  greylist = await startReceiver({ host: '127.0.0.10', port, behaviour: { reply: { rcpt: () => ({ code: 450, message: '4.2.0 Greylisted, try again later' }) } } })
  dropAtMail = await startReceiver({ host: '127.0.0.13', port, behaviour: { drop: 'mail' } })
  full452 = await startReceiver({ host: '127.0.0.14', port, behaviour: { reply: { data: () => ({ code: 452, message: '4.3.1 Insufficient system storage' }) } } })
  dropAfterDot = await startReceiver({ host: '127.0.0.16', port, behaviour: { drop: 'data' } })
  midData = { server: net.createServer(), connections: 0 }
  midData.server.on('connection', (s) => {
    midData.connections++
    s.on('error', () => {})
    let inData = false
    s.write('220 middata.test ESMTP\r\n')
    s.on('data', (chunk) => {
      if (inData) return void s.destroy() // the first bytes of the message: gone
      for (const line of chunk.toString('latin1').split('\r\n').filter(Boolean)) {
        if (/^DATA/i.test(line)) {
          inData = true
          s.write('354 go ahead\r\n')
        } else if (/^QUIT/i.test(line)) s.end('221 bye\r\n')
        else s.write(/^EHLO/i.test(line) ? '250 middata.test\r\n' : '250 ok\r\n')
      }
    })
  })
  await new Promise<void>((resolve) => midData.server.listen(port, '127.0.0.15', resolve))
  greet554 = await startReceiver({ host: '127.0.0.12', port, behaviour: { reply: { connect: () => ({ code: 554, message: '5.7.1 You are listed, go away' }) } } })
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => {
    mute.connections++
    sockets.add(s)
    s.on('close', () => sockets.delete(s)).on('error', () => {})
  })
  mute = { server, connections: 0, sockets }
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.11', resolve))
  dns = await startDns({
    'tls.test': { A: ['127.0.0.2'] },
    'brokentls.test': { A: ['127.0.0.3'] },
    'plain.test': { A: ['127.0.0.4'] },
    'busy.test': { MX: [{ exchange: 'mx1.busy.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.busy.test': { A: ['127.0.0.5'] },
    'mx2.busy.test': { A: ['127.0.0.4'] },
    'busymail.test': { MX: [{ exchange: 'mx1.busymail.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.busymail.test': { A: ['127.0.0.7'] },
    'busydata.test': { MX: [{ exchange: 'mx1.busydata.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.busydata.test': { A: ['127.0.0.8'] },
    'dropmail.test': { MX: [{ exchange: 'mx1.dropmail.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.dropmail.test': { A: ['127.0.0.13'] },
    'full.test': { MX: [{ exchange: 'mx1.full.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.full.test': { A: ['127.0.0.14'] },
    'middata.test': { MX: [{ exchange: 'mx1.middata.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.middata.test': { A: ['127.0.0.15'] },
    'dropafterdot.test': { MX: [{ exchange: 'mx1.dropafterdot.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.dropafterdot.test': { A: ['127.0.0.16'] },
    'greylist.test': { MX: [{ exchange: 'mx1.greylist.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.greylist.test': { A: ['127.0.0.10'] },
    'deadprimary.test': { MX: [{ exchange: 'mx1.deadprimary.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.deadprimary.test': { A: ['127.0.0.11'] },
    'listed.test': { A: ['127.0.0.12'] },
    'listedfirst.test': { MX: [{ exchange: 'mx1.listedfirst.test', priority: 1 }, { exchange: 'mx2.busy.test', priority: 2 }] },
    'mx1.listedfirst.test': { A: ['127.0.0.12'] },
    'silent.test': 'TIMEOUT',
    'gone.test': { A: ['127.0.0.9'] }, // nothing listens there
    'sender.test': { A: ['127.0.0.6'] },
  })
  relay = await startRelay({
    config: {
      listen: [
        { host: '127.0.0.1', port: 0, role: 'mx' },
        { host: '127.0.0.1', port: 0, role: 'submission', allowPlaintextAuth: true },
      ],
      dns: { servers: [dns.server], timeout: '1s' },
      // 6 s: an MX lookup nobody answers takes up to 3 s (dns.timeout 1 s, two tries, c-ares doubling
      // the second): with 3 s the message could expire during its first attempt, never deferred.
      delivery: { port, retry: { base: '1s', factor: 1, max: '1s' }, maxQueueLifetime: '6s', connectTimeout: '2s' },
      plugins: [
        [path.join(ROOT, 'test/fixtures/static-auth.plugin.ts'), { users: { 'a@sender.test': { password: 'pw' } } }],
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
      ],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, tlsRx, brokenTlsRx, plainRx, greet421, senderRx, mail421, data421, greylist, greet554, dropAtMail, full452, dropAfterDot].map((x) => x?.close()))
  midData?.server.close()
  for (const s of mute?.sockets ?? []) s.destroy()
  await new Promise((resolve) => mute?.server.close(resolve))
})

describe('outbound', () => {
  it('uses STARTTLS when the receiver offers it', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@tls.test'], data: msg('tls') })
    const [m] = await tlsRx.waitForMessages(1, 10_000)
    expect(m!.secure).toBe(true)
    const ev = await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === 'u@tls.test')
    // smtp-server's built-in certificate is self-signed: TLS used, not verified
    expect(ev.tls).toEqual({ version: expect.stringMatching(/^TLSv1\.[23]$/), cipher: expect.any(String), verified: false })
  })

  it('falls back to plain text on the same host after a failed TLS handshake', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@brokentls.test'], data: msg('broken tls') })
    const [m] = await brokenTlsRx.waitForMessages(1, 10_000)
    expect(m!.secure).toBe(false)
    expect(m!.to).toEqual(['u@brokentls.test'])
    const ev = await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === 'u@brokentls.test')
    expect(ev.tls).toBe(false)
    // The operator is told, with why the handshake failed.
    const warned = await relay.waitForLog((l) => l.domain === 'brokentls.test' && typeof l.msg === 'string' && l.msg.startsWith('TLS with '))
    expect(warned).toMatchObject({ level: 40, queueId: ev.queueId, remoteHost: ev.remoteHost, reason: expect.stringMatching(/^TLS negotiation failed: /) })
    expect(warned.msg).toMatch(/: sent in plain text under TLS policy 'may'$/)
  })

  it('a primary MX that never greets is tried once; the next messages go to the backup without waiting for it', async () => {
    const before = plainRx.messages.length
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u1@deadprimary.test'], data: msg('dead primary 1') })
    await plainRx.waitForMessages(before + 1, 15_000)
    expect(plainRx.messages.at(-1)!.to).toEqual(['u1@deadprimary.test'])
    expect(mute.connections).toBe(1)
    for (const n of [2, 3]) {
      await sendMail(relay.port, { from: 'a@sender.test', to: [`u${n}@deadprimary.test`], data: msg(`dead primary ${n}`) })
      const ev = await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === `u${n}@deadprimary.test`)
      expect(ev.remoteHost).toMatch(/^mx2\.busy\.test\[127\.0\.0\.4\]/)
    }
    // Not tried again while it is known silent (a minute, then longer): no connect timeout per message.
    expect(mute.connections).toBe(1)
  })

  it('moves on to the next MX when the first answers 421 at the greeting', async () => {
    const before = plainRx.messages.length
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@busy.test'], data: msg('busy') })
    const msgs = await plainRx.waitForMessages(before + 1, 10_000)
    expect(msgs.at(-1)!.to).toEqual(['u@busy.test'])
    expect(greet421.messages.length).toBe(0)
    expect(greet421.connections).toBeGreaterThan(0)
  })

  for (const [domain, rx, what] of [
    ['busymail.test', () => mail421, '421 to MAIL FROM'],
    ['busydata.test', () => data421, '421 after the message'],
    ['dropmail.test', () => dropAtMail, 'no reply to MAIL FROM (the connection closed)'],
    ['full.test', () => full452, '452 4.3.1 (insufficient storage) after the message'],
  ] as const) {
    it(`moves on to the next MX in the same attempt when the first answers ${what}`, async () => {
      const before = plainRx.messages.length
      await sendMail(relay.port, { from: 'a@sender.test', to: [`u@${domain}`], data: msg(domain) })
      const msgs = await plainRx.waitForMessages(before + 1, 10_000)
      expect(msgs.at(-1)!.to).toEqual([`u@${domain}`])
      expect(rx().connections).toBeGreaterThan(0)
      expect(rx().messages.length).toBe(0)
      await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === `u@${domain}`)
      // Not deferred first: the next MX was tried at once, not at the next attempt.
      expect(relay.logs.filter((l) => l.event === 'deferred' && l.recipient === `u@${domain}`)).toEqual([])
    })
  }

  it('moves on to the next MX in the same attempt when the first closes the connection in the middle of a message (before its end was sent)', async () => {
    const before = plainRx.messages.length
    // 4 MB: more than the socket buffers take, so the end of the message is still to be written when the host closes.
    const big = msg('middata') + `${'x'.repeat(998)}\r\n`.repeat(4000)
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@middata.test'], data: big })
    const msgs = await plainRx.waitForMessages(before + 1, 15_000)
    expect(msgs.at(-1)!.to).toEqual(['u@middata.test'])
    expect(midData.connections).toBeGreaterThan(0)
    await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === 'u@middata.test')
    expect(relay.logs.filter((l) => l.event === 'deferred' && l.recipient === 'u@middata.test')).toEqual([])
  })

  it('a connection lost after the whole message was sent defers it without trying the next MX (the host may have taken it)', async () => {
    const before = plainRx.messages.length
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@dropafterdot.test'], data: msg('drop after dot') })
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'u@dropafterdot.test', 10_000)
    expect(deferred.response).toMatch(/connection lost/)
    expect(dropAfterDot.refused.length).toBeGreaterThan(0)
    expect(plainRx.messages.slice(before).filter((m) => m.to.includes('u@dropafterdot.test'))).toEqual([])
  })

  it('a 450 to RCPT (greylisting) defers the recipient without trying the next MX in that attempt', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@greylist.test'], data: msg('greylisted') })
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'u@greylist.test', 10_000)
    expect(deferred.response).toMatch(/^450 4\.2\.0 Greylisted/)
    expect(greylist.connections).toBeGreaterThan(0)
    expect(plainRx.messages.some((m) => m.to.includes('u@greylist.test'))).toBe(false)
  })

  it('adds Message-ID and Date on the submission listener when missing, not on mx', async () => {
    const before = plainRx.messages.length
    await sendMail(relay.ports.submission!, { from: 'a@sender.test', to: ['sub@plain.test'], data: 'Subject: no ids\r\n\r\nhi\r\n', auth: { user: 'a@sender.test', pass: 'pw' } })
    await sendMail(relay.ports.mx!, { from: 'a@sender.test', to: ['mx@plain.test'], data: 'Subject: no ids\r\n\r\nhi\r\n' })
    const msgs = await plainRx.waitForMessages(before + 2, 10_000)
    const sub = msgs.find((m) => m.to[0] === 'sub@plain.test')!.raw.toString()
    const mx = msgs.find((m) => m.to[0] === 'mx@plain.test')!.raw.toString()
    expect(sub).toMatch(/^Message-ID: <\w+@relay\.test>\r$/m)
    expect(sub).toMatch(/^Date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000\r$/m)
    expect(mx).not.toMatch(/^Message-ID:/im)
    expect(mx).not.toMatch(/^Date:/im)
    // Present but empty is as good as missing: replaced, not kept beside the new one.
    await sendMail(relay.ports.submission!, { from: 'a@sender.test', to: ['empty@plain.test'], data: 'Message-ID:\r\nDate:  \r\nSubject: empty ids\r\n\r\nhi\r\n', auth: { user: 'a@sender.test', pass: 'pw' } })
    const empty = (await plainRx.waitForMessages(before + 3, 10_000)).find((m) => m.to[0] === 'empty@plain.test')!.raw.toString()
    expect(empty.match(/^Message-ID:.*$/gim)).toEqual([expect.stringMatching(/^Message-ID: <\w+@relay\.test>$/)])
    expect(empty.match(/^Date:.*$/gim)).toEqual([expect.stringMatching(/^Date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000$/)])
  })

  it('removes Return-Path, Bcc, Resent-Bcc and Content-Length fields, on mx and submission alike (Postfix message_drop_headers)', async () => {
    // The final delivery writes Return-Path from the envelope; one passed on would claim another bounce address.
    // Bcc names recipients the others must not see; Content-Length is stale once fields are added.
    const before = plainRx.messages.length
    const data =
      'Return-Path: <forged@evil.test>\r\nFrom: a@sender.test\r\nreturn-path:\r\n <second@evil.test>\r\nBcc: hidden@evil.test\r\n' +
      'To: rp@plain.test\r\nbcc:\r\n other@evil.test\r\nResent-Bcc: resent@evil.test\r\nContent-Length: 1\r\nSubject: return path\r\n\r\nReturn-Path: <in-body@stays.test>\r\nBcc: body@stays.test\r\n'
    await sendMail(relay.ports.submission!, { from: 'a@sender.test', to: ['rp-sub@plain.test'], data, auth: { user: 'a@sender.test', pass: 'pw' } })
    await sendMail(relay.ports.mx!, { from: 'a@sender.test', to: ['rp-mx@plain.test'], data })
    const msgs = await plainRx.waitForMessages(before + 2, 10_000)
    for (const to of ['rp-sub@plain.test', 'rp-mx@plain.test']) {
      const raw = msgs.find((m) => m.to[0] === to)!.raw.toString()
      const [head, body] = [raw.slice(0, raw.indexOf('\r\n\r\n')), raw.slice(raw.indexOf('\r\n\r\n'))]
      expect(head).not.toMatch(/evil\.test|^Return-Path|^Bcc|^Resent-Bcc|^Content-Length/im)
      expect(head).toMatch(/^Subject: return path$/m)
      expect(head).toMatch(/^To: rp@plain\.test$/m)
      expect(body).toContain('Return-Path: <in-body@stays.test>\r\nBcc: body@stays.test')
    }
  })

  it('defers when the DNS server does not answer, and bounces with 4.4.7 once the queue lifetime is over', async () => {
    const before = senderRx.messages.length
    const r = await sendMail(relay.port, { from: 'a@sender.test', to: ['u@silent.test'], data: msg('silent dns') })
    expect(r.lastReply).toMatch(/^250 /)
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'u@silent.test', 15_000)
    expect(deferred.response).toMatch(/^4\.4\.3 DNS MX lookup for silent\.test failed: ETIMEOUT/)
    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'u@silent.test', 20_000)
    expect(bounced.response).toMatch(/^4\.4\.7 Message expired/)
    const dsn = await dsnFor('u@silent.test', before)
    expect(dsn).toMatch(/^Final-Recipient: rfc822; u@silent\.test\r$/m)
    expect(dsn).toMatch(/^Status: 4\.4\.7\r$/m)
    expect(dsn).toMatch(/^Diagnostic-Code: x-local; 4\.4\.7 Message expired/m)
  })

  it('a 554 greeting (a blocklist entry a retry may outlive): the next MX; from the only one, deferred, not bounced, until the message expires', async () => {
    const before = plainRx.messages.length
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@listedfirst.test'], data: msg('listed first') })
    expect((await plainRx.waitForMessages(before + 1, 10_000)).at(-1)!.to).toEqual(['u@listedfirst.test'])

    const dsns = senderRx.messages.length
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@listed.test'], data: msg('listed') })
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'u@listed.test', 15_000)
    expect(deferred.response).toMatch(/^4\.4\.1 Host listed\.test\[127\.0\.0\.12\]:\d+ refused to talk to me: 554 5\.7\.1 You are listed, go away/)
    // maxQueueLifetime is 6 s here: the bounce says it expired, and what the host said.
    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'u@listed.test', 20_000)
    expect(bounced.response).toMatch(/^4\.4\.7 Message expired/)
    const dsn = await dsnFor('u@listed.test', dsns)
    expect(dsn).toMatch(/^Final-Recipient: rfc822; u@listed\.test\r$/m)
    expect(dsn).toContain('You are listed, go away')
    expect(greet554.messages).toHaveLength(0)
  })

  it('defers an unreachable host and records the connection error', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@gone.test'], data: msg('gone') })
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'u@gone.test', 15_000)
    expect(deferred.response).toMatch(/^4\.4\.1 Host gone\.test\[127\.0\.0\.9\]:\d+ unreachable: .*ECONNREFUSED/)
    expect(Date.parse(String(deferred.nextAttemptAt))).toBeGreaterThan(Date.now() - 5000)
  })
})

describe('delivery concurrency', () => {
  it('holds at most delivery.concurrency.perDomain connections to one domain', async () => {
    const rx = await startReceiver({ host: '127.0.0.7', behaviour: { stall: 'data' } })
    const other = await startReceiver({ host: '127.0.0.8', port: rx.port })
    const zones = await startDns({ 'slow.test': { A: ['127.0.0.7'] }, 'fast.test': { A: ['127.0.0.8'] } })
    const r = await startRelay({
      config: {
        dns: { servers: [zones.server] },
        delivery: { port: rx.port, concurrency: { global: 10, perDomain: 2 }, commandTimeout: '60s' },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
        shutdownTimeout: '1s',
      },
    })
    try {
      for (let i = 0; i < 5; i++) await sendMail(r.port, { from: 'a@sender.test', to: [`u${i}@slow.test`], data: msg(`slow ${i}`) })
      // another domain is not held up by the stalled one
      await sendMail(r.port, { from: 'a@sender.test', to: ['v@fast.test'], data: msg('fast') })
      await other.waitForMessages(1, 10_000)
      await new Promise((res) => setTimeout(res, 1000))
      expect(rx.connections).toBe(2)
      const queued = (await r.listQueue()).filter((m) => m.recipients[0]!.address.endsWith('@slow.test'))
      expect(queued).toHaveLength(5)
      // The two in flight are shown as being delivered, not with their lease's expiry as the next attempt.
      const inFlight = queued.map((m) => m.recipients[0]!).filter((rc) => rc.delivering)
      expect(inFlight).toHaveLength(2)
      for (const rc of inFlight) expect(rc.nextAttemptAt).toBeUndefined()
      for (const rc of queued.map((m) => m.recipients[0]!).filter((x) => !x.delivering)) expect(rc.nextAttemptAt).toBeLessThanOrEqual(Date.now() + 1000)
      const text = await runCliAsync(['queue', 'list', '--config', r.configFile])
      expect(text.stdout.match(/next delivering now/g)).toHaveLength(2)
      // Deleting one being delivered is refused (the attempt would deliver it anyway), as bounce is; one waiting goes.
      const busy = queued.find((m) => m.recipients[0]!.delivering)!
      const waiting = queued.find((m) => !m.recipients[0]!.delivering)!
      // `queue show` says so too, not the lease's expiry as its next attempt.
      const shown = await runCliAsync(['queue', 'show', busy.id, '--config', r.configFile])
      expect(shown.stdout).toMatch(new RegExp(`^ +${busy.recipients[0]!.address.replace('.', '\\.')} +queued \\(delivering\\) +\\d+ +delivering now `, 'm'))
      const refused = await runCliAsync(['queue', 'delete', busy.id, '--config', r.configFile])
      expect(refused.code).not.toBe(0)
      expect(refused.stderr).toMatch(/being delivered right now: not deleted/)
      const deleted = await runCliAsync(['queue', 'delete', waiting.id, '--config', r.configFile])
      expect(deleted.code, deleted.stderr).toBe(0)
      expect((await r.listQueue()).map((m) => m.id).sort()).toEqual(queued.map((m) => m.id).filter((id) => id !== waiting.id).sort())
      // The bulk forms name what they left to its delivery and exit 1 as the one-id form does, not
      // "deleted 0 of 1" and exit 0.
      const byStdin = await runCliAsync(['queue', 'delete', '-', '--config', r.configFile], { input: `${busy.id}\n` })
      expect([byStdin.code, byStdin.stdout]).toEqual([1, 'deleted 0 of 1 message\n'])
      expect(byStdin.stderr).toBe(`relay: message ${busy.id} is being delivered right now: not deleted (hold it to stop further attempts, and delete it once this one has ended)\n`)
      const busyIds = inFlight.map((rc) => queued.find((m) => m.recipients[0] === rc)!.id).sort()
      const byDomain = await runCliAsync(['queue', 'delete', '--domain', 'slow.test', '--json', '--config', r.configFile])
      expect(byDomain.code, byDomain.stderr).toBe(1)
      const result = JSON.parse(byDomain.stdout) as { matched: string[]; done: number; skipped: { id: string; reason: string }[] }
      expect(result.matched).toHaveLength(4)
      expect(result.done).toBe(2)
      expect(result.skipped.map((x) => x.id).sort()).toEqual(busyIds)
      for (const id of busyIds) expect(byDomain.stderr).toContain(`relay: message ${id} is being delivered right now: not deleted`)
      expect((await r.listQueue()).map((m) => m.id).sort()).toEqual(busyIds)
    } finally {
      await r.stop()
      await Promise.all([rx.close(), other.close(), zones.close()])
    }
  })
})

describe('connection reuse', () => {
  it('sends further messages to the same host over the open connection, and replaces one the server closed', async () => {
    // the receiver drops connections idle for 400 ms (with a 421, as smtp-server does)
    const rx = await startReceiver({ host: '127.0.0.9', serverOptions: { socketTimeout: 400 } })
    const zones = await startDns({ 'reuse.test': { A: ['127.0.0.9'] } })
    const r = await startRelay({
      config: {
        dns: { servers: [zones.server] },
        delivery: { port: rx.port, reuse: { maxMessages: 3, idleTimeout: '5s' } },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
    try {
      for (let i = 0; i < 4; i++) {
        await sendMail(r.port, { from: 'a@sender.test', to: [`u${i}@reuse.test`], data: msg(`reuse ${i}`) })
        await rx.waitForMessages(i + 1, 10_000)
      }
      // four messages, at most three per connection: two connections
      expect(rx.connections).toBe(2)
      await new Promise((res) => setTimeout(res, 900)) // the receiver closes the idle connection
      await sendMail(r.port, { from: 'a@sender.test', to: ['late@reuse.test'], data: msg('after idle close') })
      const msgs = await rx.waitForMessages(5, 10_000)
      expect(msgs.map((m) => m.to[0])).toEqual(['u0@reuse.test', 'u1@reuse.test', 'u2@reuse.test', 'u3@reuse.test', 'late@reuse.test'])
      expect(rx.connections).toBe(3)
      expect(r.logs.filter((l) => l.event === 'deferred')).toEqual([])
    } finally {
      await r.stop()
      await Promise.all([rx.close(), zones.close()])
    }
  })
})
