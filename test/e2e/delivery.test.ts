// End to end: a real client submits to the relay, which finds the recipient's MX in a real DNS
// server on loopback and delivers to a real receiving SMTP server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import net from 'node:net'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, runCli, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let mx1: TestReceiver // 127.0.0.2
let mx3: TestReceiver // 127.0.0.3
let senderMx: TestReceiver // 127.0.0.4: the sender's domain, where bounces go
let multiMx: RawMx // 127.0.0.7 multiline.test: multi-line replies (smtp-server puts every reply on one line)
let relay: RelayProcess

const message = (subject: string, body = 'Hello there.\r\n.leading dot line\r\n\r\nBye\r\n') =>
  `From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\n\r\n${body}`

interface RawMx {
  /** Messages accepted (their envelope recipients). */
  accepted: string[][]
  close(): Promise<void>
}

/**
 * A bare SMTP server speaking over a socket, for replies smtp-server cannot send: RCPT to an
 * address starting with `long-` gets a 2,002-line 550, one starting with `later-` a 451, and the
 * message gets a three-line 250.
 */
function startRawMx(host: string, port: number): Promise<RawMx> {
  const accepted: string[][] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => undefined)
    let buffer = ''
    let inData = false
    let to: string[] = []
    const reply = (lines: string[], code: number) => socket.write(lines.map((l, i) => `${code}${i < lines.length - 1 ? '-' : ' '}${l}\r\n`).join(''))
    socket.write('220 mx.multiline.test ESMTP\r\n')
    socket.on('data', (chunk) => {
      buffer += chunk.toString('latin1')
      for (;;) {
        if (inData) {
          const end = buffer.indexOf('\r\n.\r\n')
          if (end === -1) return
          buffer = buffer.slice(end + 5)
          inData = false
          accepted.push(to)
          reply(['2.0.0 Ok: queued as MULTI1', 'a second line of the reply', '2.0.0 and a third one'], 250)
          continue
        }
        const eol = buffer.indexOf('\r\n')
        if (eol === -1) return
        const line = buffer.slice(0, eol)
        buffer = buffer.slice(eol + 2)
        const verb = line.slice(0, 4).toUpperCase()
        if (verb === 'EHLO' || verb === 'HELO') reply(['mx.multiline.test', '8BITMIME'], 250)
        else if (verb === 'MAIL') {
          to = []
          reply(['2.1.0 Ok'], 250)
        } else if (verb === 'RCPT') {
          const address = /<([^>]*)>/.exec(line)?.[1] ?? ''
          if (address.startsWith('long-')) reply(Array.from({ length: 2002 }, (_, i) => `5.1.1 <${address}>: line ${i + 1} of a long refusal`), 550)
          else if (address.startsWith('later-')) reply(['4.3.0 Try again later'], 451)
          else {
            to.push(address)
            reply(['2.1.5 Ok'], 250)
          }
        } else if (verb === 'DATA') {
          inData = true
          socket.write('354 End data with <CR><LF>.<CR><LF>\r\n')
        } else if (verb === 'RSET') reply(['2.0.0 Ok'], 250)
        else if (verb === 'QUIT') {
          socket.end('221 2.0.0 Bye\r\n')
          return
        } else reply(['5.5.2 Error: command not recognized'], 502)
      }
    })
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () =>
      resolve({
        accepted,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy()
            server.close(() => done())
          }),
      }),
    )
  })
}

function bodyOf(raw: Buffer): string {
  const s = raw.toString('latin1')
  return s.slice(s.indexOf('\r\n\r\n') + 4)
}

beforeAll(async () => {
  mx1 = await startReceiver({ host: '127.0.0.2' })
  const port = mx1.port
  mx3 = await startReceiver({ host: '127.0.0.3', port })
  senderMx = await startReceiver({ host: '127.0.0.4', port })
  multiMx = await startRawMx('127.0.0.7', port)
  dns = await startDns({
    'dest.test': { MX: [{ exchange: 'mx1.dest.test', priority: 10 }] },
    'mx1.dest.test': { A: ['127.0.0.2'] },
    'sender.test': { MX: [{ exchange: 'mx.sender.test', priority: 10 }] },
    'mx.sender.test': { A: ['127.0.0.4'] },
    // first MX has an address where nothing listens; the second one works
    'failover.test': { MX: [{ exchange: 'down.failover.test', priority: 5 }, { exchange: 'up.failover.test', priority: 20 }] },
    'down.failover.test': { A: ['127.0.0.9'] },
    'up.failover.test': { A: ['127.0.0.3'] },
    // no MX: the domain's own A record
    'amx.test': { A: ['127.0.0.3'] },
    'nullmx.test': { MX: [{ exchange: '', priority: 0 }], A: ['127.0.0.3'] },
    'servfail.test': 'SERVFAIL',
    'retry.test': { MX: [{ exchange: 'mx.retry.test', priority: 10 }] },
    'mx.retry.test': { A: ['127.0.0.3'] },
    'partial.test': { MX: [{ exchange: 'mx.partial.test', priority: 10 }] },
    'cached.test': { MX: [{ exchange: 'mx.cached.test', priority: 10 }] },
    'mx.cached.test': { A: ['127.0.0.3'] },
    // a slow authoritative server: every question about burst.test is answered 400 ms late
    'burst.test': { MX: [{ exchange: 'mx.cached.test', priority: 10 }], delayMs: 400 },
    'mx.partial.test': { A: ['127.0.0.3'] },
    'multiline.test': { A: ['127.0.0.7'] },
    // an MX host whose AAAA query fails (SERVFAIL, or never answered) while its A record answers
    'aaaafail.test': { MX: [{ exchange: 'mx.aaaafail.test', priority: 10 }] },
    'mx.aaaafail.test': { A: ['127.0.0.3'], fail: { AAAA: 'SERVFAIL' } },
    'aaaatimeout.test': { A: ['127.0.0.3'], fail: { AAAA: 'TIMEOUT' } },
    // MX records that name no usable host: a host that does not exist, an IP address
    'mxnx.test': { MX: [{ exchange: 'gone.mxnx.test', priority: 10 }] },
    'mxip.test': { MX: [{ exchange: '127.0.0.3', priority: 10 }] },
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      // Clients here are trusted (smtp.trustedNetworks): DSNs to their senders follow RET and are not limited.
      smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.0/8'] },
      delivery: { port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), mx1?.close(), mx3?.close(), senderMx?.close(), multiMx?.close()])
})

describe('delivery through DNS MX', () => {
  it('delivers a message from swaks to the MX, body byte-identical, with a Received header on top', async () => {
    const body = 'Line one\r\n..two dots stay two after unstuffing\r\n\tindented\r\n\r\n8bit: \xe9t\xe9\r\n'
    const data = message('swaks one', body)
    // swaks is the real-world client; its --data is sent as given (plus dot-stuffing).
    const out = execFileSync('swaks', ['--server', `127.0.0.1:${relay.port}`, '--from', 'alice@sender.test', '--to', 'bob@dest.test', '--helo', 'client.sender.test', '--data', '-'], {
      input: Buffer.from(data, 'latin1'),
      encoding: 'utf8',
    })
    const queued = /250 2\.0\.0 Ok: queued as (\w+)/.exec(out)
    expect(queued, out).not.toBeNull()
    const [msg] = await mx1.waitForMessages(1, 10_000)
    expect(msg!.from).toBe('alice@sender.test')
    expect(msg!.to).toEqual(['bob@dest.test'])
    const raw = msg!.raw.toString('latin1')
    expect(raw.startsWith('Received: from client.sender.test ([127.0.0.1])\r\n\tby relay.test (Relay) with ESMTP id ' + queued![1])).toBe(true)
    expect(raw).toContain('\tfor <bob@dest.test>;')
    // everything the client sent follows the Received header unchanged (swaks ends DATA with
    // CRLF . CRLF after the data, so its last CRLF is part of the message)
    expect(raw.slice(raw.indexOf(data.slice(0, 20)))).toBe(data + '\r\n')
    expect(bodyOf(msg!.raw)).toBe(body + '\r\n')
  })

  it('falls back to the second MX when the first does not answer', async () => {
    const before = mx3.messages.length
    const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['carol@failover.test'], data: message('failover') })
    expect(r.lastReply).toMatch(/^250 /)
    await mx3.waitForMessages(before + 1, 15_000)
    expect(mx3.messages.at(-1)!.to).toEqual(['carol@failover.test'])
  })

  it('uses the A record when a domain has no MX', async () => {
    const before = mx3.messages.length
    await sendMail(relay.port, { from: 'alice@sender.test', to: ['dave@amx.test'], data: message('a fallback') })
    const msgs = await mx3.waitForMessages(before + 1, 10_000)
    expect(msgs.at(-1)!.to).toEqual(['dave@amx.test'])
  })

  it('retries after a 451 and delivers on the next attempt', async () => {
    let failed = 0
    mx3.setBehaviour({
      reply: {
        rcpt: ({ address }) => (address === 'erin@retry.test' && failed++ === 0 ? { code: 451, message: '4.3.0 try again later' } : undefined),
      },
    })
    const before = mx3.messages.length
    await sendMail(relay.port, { from: 'alice@sender.test', to: ['erin@retry.test'], data: message('retry') })
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'erin@retry.test')
    expect(deferred.response).toMatch(/^451 4\.3\.0 try again later/)
    const msgs = await mx3.waitForMessages(before + 1, 15_000)
    expect(msgs.at(-1)!.to).toEqual(['erin@retry.test'])
    const delivered = await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === 'erin@retry.test')
    expect(delivered.attempts).toBe(2)
    mx3.setBehaviour({})
  })

  it('bounces a 550 with an RFC 3464 DSN to the sender, and delivers the other recipient', async () => {
    mx3.setBehaviour({
      reply: { rcpt: ({ address }) => (address === 'nobody@partial.test' ? { code: 550, message: '5.1.1 <nobody@partial.test>: no such user' } : undefined) },
    })
    const beforeSender = senderMx.messages.length
    const before = mx3.messages.length
    const r = await sendMail(relay.port, {
      from: 'alice@sender.test',
      to: ['nobody@partial.test', 'frank@partial.test'],
      data: message('partial'),
    })
    const id = /queued as (\w+)/.exec(r.lastReply)![1]
    const delivered = await mx3.waitForMessages(before + 1, 10_000)
    expect(delivered.at(-1)!.to).toEqual(['frank@partial.test'])

    const [dsn] = (await senderMx.waitForMessages(beforeSender + 1, 10_000)).slice(-1)
    expect(dsn!.from).toBe('') // null sender
    expect(dsn!.to).toEqual(['alice@sender.test'])
    const text = dsn!.raw.toString('latin1')
    expect(text).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status;/m)
    expect(text).toMatch(/^Subject: Undelivered Mail Returned to Sender/m)
    const status = text.slice(text.indexOf('Content-Type: message/delivery-status'))
    expect(status).toMatch(/^Reporting-MTA: dns; relay\.test$/m)
    expect(status).toMatch(/^Final-Recipient: rfc822; nobody@partial\.test$/m)
    expect(status).toMatch(/^Action: failed$/m)
    expect(status).toMatch(/^Status: 5\.1\.1$/m)
    expect(status).toMatch(/^Remote-MTA: dns; mx\.partial\.test$/m)
    expect(status).toMatch(/^Diagnostic-Code: smtp; 550 5\.1\.1 <nobody@partial\.test>: no such user$/m)
    expect(status).not.toContain('frank@partial.test')
    // the original headers come back as text/rfc822-headers
    expect(text).toContain('Content-Type: text/rfc822-headers')
    expect(text).toContain('Subject: partial')
    expect(text).toContain(`id ${id}`)
    mx3.setBehaviour({})
  })

  it('bounces mail for a domain with a null MX without connecting anywhere', async () => {
    const connections = mx3.connections
    const beforeSender = senderMx.messages.length
    await sendMail(relay.port, { from: 'alice@sender.test', to: ['gina@nullmx.test'], data: message('null mx') })
    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'gina@nullmx.test')
    expect(bounced.response).toMatch(/^5\.1\.10 .*null MX/)
    const [dsn] = (await senderMx.waitForMessages(beforeSender + 1, 10_000)).slice(-1)
    expect(dsn!.raw.toString()).toMatch(/^Status: 5\.1\.10$/m)
    expect(mx3.connections).toBe(connections)
  })

  it('uses the A record of a host whose AAAA lookup fails (SERVFAIL, timeout), with or without MX', async () => {
    const before = mx3.messages.length
    await sendMail(relay.port, { from: 'alice@sender.test', to: ['ivy@aaaafail.test', 'jim@aaaatimeout.test'], data: message('aaaa fails') })
    const got = await eventually(() => {
      const to = mx3.messages.slice(before).flatMap((m) => m.to)
      return to.includes('ivy@aaaafail.test') && to.includes('jim@aaaatimeout.test') ? to : undefined
    }, 15_000, 'both delivered through their A records')
    expect(got.sort()).toEqual(['ivy@aaaafail.test', 'jim@aaaatimeout.test'])
  })

  it('bounces (5.4.4) when no MX host can be used: hosts that do not exist, an IP address as MX target', async () => {
    const connections = mx3.connections
    await sendMail(relay.port, { from: 'alice@sender.test', to: ['kim@mxnx.test', 'lou@mxip.test'], data: message('unusable mx') })
    const nx = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'kim@mxnx.test', 10_000)
    expect(nx.response).toMatch(/^5\.4\.4 No address found for the MX hosts of mxnx\.test/)
    const ip = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'lou@mxip.test', 10_000)
    expect(ip.response).toMatch(/^5\.4\.4 .*IP addresses, not host names/)
    expect(mx3.connections).toBe(connections)
  })

  it('defers (does not bounce) when DNS answers SERVFAIL', async () => {
    const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['hank@servfail.test'], data: message('servfail') })
    const id = /queued as (\w+)/.exec(r.lastReply)![1]
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'hank@servfail.test')
    expect(deferred.response).toMatch(/^4\.4\.3 DNS MX lookup for servfail\.test failed/)
    // Retries are 1 s apart here: the listing may come after the second attempt, never after a bounce.
    const entry = await eventually(async () => (await relay.listQueue()).find((m) => m.id === id && m.recipients[0]?.state === 'deferred'))
    expect(entry.recipients[0]).toMatchObject({ address: 'hank@servfail.test', state: 'deferred' })
    expect(entry.recipients[0]!.attempts).toBeGreaterThanOrEqual(1)
    expect(relay.logs.some((l) => l.event === 'bounced' && l.recipient === 'hank@servfail.test')).toBe(false)
    expect(entry.recipients[0]!.lastResponse).toMatch(/SERVFAIL|ESERVFAIL/)
  })

  it('never bounces a bounce: a failing null-sender message is dropped after its attempt', async () => {
    mx3.setBehaviour({ reply: { rcpt: () => ({ code: 550, message: '5.1.1 no such user' }) } })
    try {
      const r = await sendMail(relay.port, { from: '', to: ['ivan@amx.test'], data: message('bounce of bounce') })
      const id = /queued as (\w+)/.exec(r.lastReply)![1]
      await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'ivan@amx.test')
      await new Promise((r) => setTimeout(r, 500))
      // No DSN was made for it (the earlier tests' DSNs to sender.test may still be arriving).
      expect(relay.logs.filter((l) => l.dsnFor === id)).toEqual([])
      expect(senderMx.messages.some((m) => m.raw.toString('latin1').includes('ivan@amx.test'))).toBe(false)
    } finally {
      mx3.setBehaviour({})
    }
  })

  it('asks DNS once for a destination that got two messages in a row (answers are cached briefly)', async () => {
    const before = mx3.messages.length
    for (const n of [1, 2]) {
      await sendMail(relay.port, { from: 'alice@sender.test', to: [`u${n}@cached.test`], data: message(`cached ${n}`) })
      await mx3.waitForMessages(before + n, 10_000)
    }
    // one query (a resolver's resend of it under load repeats its message id)
    const asked = dns.queries.filter((q) => q.name === 'cached.test' && q.type === 'MX')
    expect(new Set(asked.map((q) => q.id)).size, JSON.stringify(asked)).toBe(1)
  })

  it('asks DNS once for a destination that six messages reach at the same time (their jobs share the lookup in flight)', async () => {
    const before = mx3.messages.length
    await Promise.all([1, 2, 3, 4, 5, 6].map((n) => sendMail(relay.port, { from: 'alice@sender.test', to: [`u${n}@burst.test`], data: message(`burst ${n}`) })))
    await mx3.waitForMessages(before + 6, 10_000)
    expect(mx3.messages.slice(before).flatMap((m) => m.to).sort()).toEqual([1, 2, 3, 4, 5, 6].map((n) => `u${n}@burst.test`))
    // One query: Node 24's resolver (c-ares with timeouts learnt from loopback answers) may send it
    // again before the 400 ms answer, with the same message id.
    const asked = dns.queries.filter((q) => q.name === 'burst.test' && q.type === 'MX')
    expect(new Set(asked.map((q) => q.id)).size, JSON.stringify(asked)).toBe(1)
  })

  it('keeps a multi-line reply as one bounded line: a three-line 250 in the event and `relay queue show`, a 2,002-line 550 in the event, the queue and the DSN', async () => {
    const beforeSender = senderMx.messages.length
    const r = await sendMail(relay.port, {
      from: 'alice@sender.test',
      to: ['ok@multiline.test', 'long-refusal@multiline.test', 'later-one@multiline.test'],
      data: message('multi-line replies'),
    })
    const id = /queued as (\w+)/.exec(r.lastReply)![1]!
    await eventually(() => multiMx.accepted.some((to) => to.includes('ok@multiline.test')), 10_000, 'delivered to multiline.test')

    // The three lines of the 250, joined with a space, the continuation lines' codes dropped.
    const delivered = await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === 'ok@multiline.test')
    expect(delivered.response).toBe('250 2.0.0 Ok: queued as MULTI1 a second line of the reply and a third one')
    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'long-refusal@multiline.test')
    const refusal = bounced.response as string
    expect(refusal).toMatch(/^550 5\.1\.1 <long-refusal@multiline\.test>: line 1 of a long refusal <long-refusal@multiline\.test>: line 2 of a long refusal /)
    expect(refusal).not.toMatch(/[\r\n]/)
    expect(refusal.length).toBeLessThanOrEqual(1000)
    expect(refusal).toMatch(/ \[truncated\]$/)
    // No log line carries the whole reply.
    expect(relay.logs.filter((l) => JSON.stringify(l).includes('line 2002 of a long refusal'))).toEqual([])

    // The queue keeps the same forms: `queue show` has one line per recipient, --json has no line break.
    await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'later-one@multiline.test')
    const cli = (...args: string[]) => runCli([...args, '--config', relay.configFile])
    const show = cli('queue', 'show', id)
    expect(show.code, show.stderr).toBe(0)
    expect(show.stdout).toMatch(/\n {2}ok@multiline\.test +delivered +1 +\S+ +250 2\.0\.0 Ok: queued as MULTI1 a second line of the reply and a third one\n {2}long-refusal@multiline\.test /)
    for (const line of show.stdout.split('\n')) expect(line.length).toBeLessThan(1200)
    const detail = JSON.parse(cli('queue', 'show', id, '--json').stdout) as { recipients: { address: string; lastResponse?: string; history: { response: string }[] }[] }
    const byAddress = new Map(detail.recipients.map((x) => [x.address, x]))
    expect(byAddress.get('ok@multiline.test')!.lastResponse).toBe('250 2.0.0 Ok: queued as MULTI1 a second line of the reply and a third one')
    expect(byAddress.get('long-refusal@multiline.test')!.lastResponse).toBe(refusal)
    for (const x of detail.recipients) for (const h of x.history) expect([h.response.length <= 1000, /[\r\n]/.test(h.response)]).toEqual([true, false])

    // The DSN quotes the start of the reply, every line within 998 octets.
    const [dsn] = (await senderMx.waitForMessages(beforeSender + 1, 10_000)).slice(-1)
    const raw = dsn!.raw.toString('latin1')
    for (const line of raw.split('\r\n')) expect(Buffer.byteLength(line, 'latin1')).toBeLessThanOrEqual(998)
    const status = raw.slice(raw.indexOf('Content-Type: message/delivery-status'))
    const diagnostic = /^Diagnostic-Code: (.*(?:\r\n[ \t].*)*)/m.exec(status)![1]!.replace(/\r\n(?=[ \t])/g, '')
    expect(diagnostic).toMatch(/^smtp; 550 5\.1\.1 <long-refusal@multiline\.test>: line 1 of a long refusal <long-refusal@multiline\.test>: line 2 /)
    expect(diagnostic.length).toBeLessThan(1100)
    // A retry of later-one may be under way: delete is refused while it runs, then goes through.
    // (runCliAsync: the blocking form would stall this process's receivers, and so the attempt, for as long as it runs.)
    await eventually(async () => (await runCliAsync(['queue', 'delete', id, '--config', relay.configFile])).code === 0, 15_000, 'deleted once no attempt is under way')
  })
})
