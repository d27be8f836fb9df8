// Outbound SMTP against servers that break the protocol (scripted raw replies): a 2xx to DATA, a
// reply more than asked for (the relay would read every later reply one command late), malformed
// reply codes, an enhanced status code of another class than its reply, and the advertised SIZE.
// What Postfix does decides: nothing of the message goes out unless DATA got 3xx, a connection whose
// replies are out of step is never reused and its transaction deferred, SIZE= on MAIL FROM.
import net from 'node:net'
import { SMTPServer } from 'smtp-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { listenRaw } from '../harness/raw-server.js'
import { connectRaw, dotStuff, sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'

/** One connection to a scripted server, as the server saw it. */
interface Conn {
  commands: string[]
  /** Each message received (un-dot-stuffed, without the final dot). */
  messages: string[]
  closed: boolean
}

/** Raw replies (with their CRLFs) of a scripted server; `n` is the message's index on its connection. */
interface Script {
  greeting?: string
  /** EHLO keywords after the first line. */
  ehlo?: string[]
  /** The raw reply to EHLO instead of 250 and the keywords. */
  ehloReply?: string
  mail?: (n: number) => string
  rcpt?: (n: number) => string
  data?: (n: number) => string
  end?: (n: number) => string
  /** Held after the reply to message n, written just before the reply to the next command. */
  late?: (n: number) => string | undefined
  /** The reply to STARTTLS (offer it in `ehlo`); the connection stays in plain text. */
  starttls?: string
}

let dns: TestDns
let relay: RelayProcess
const servers: net.Server[] = []
const seen: Record<string, Conn[]> = {}
const dsns: string[] = [] // messages (bounces) the relay sent to sender.test

function scripted(name: string, script: Script) {
  const conns: Conn[] = (seen[name] = [])
  return (sock: net.Socket) => {
    const conn: Conn = { commands: [], messages: [], closed: false }
    conns.push(conn)
    sock.on('close', () => (conn.closed = true))
    sock.write(script.greeting ?? `220 ${name} ESMTP\r\n`)
    let buffered = ''
    let inData = false
    let body: string[] = []
    let n = 0
    let held: string | undefined
    const reply = (text: string) => {
      sock.write((held ?? '') + text)
      held = undefined
    }
    sock.on('data', (chunk) => {
      buffered += chunk.toString('latin1')
      for (let nl = buffered.indexOf('\r\n'); nl >= 0; nl = buffered.indexOf('\r\n')) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 2)
        if (inData) {
          if (line !== '.') {
            body.push(line.startsWith('.') ? line.slice(1) : line)
            continue
          }
          inData = false
          conn.messages.push(body.map((l) => `${l}\r\n`).join(''))
          reply(script.end?.(n) ?? '250 2.0.0 queued\r\n')
          held = script.late?.(n)
          n++
          continue
        }
        conn.commands.push(line)
        const verb = line.slice(0, 4).toUpperCase()
        if (verb === 'EHLO' && script.ehloReply !== undefined) reply(script.ehloReply)
        else if (verb === 'EHLO') reply([name, ...(script.ehlo ?? [])].map((k, i, all) => `250${i < all.length - 1 ? '-' : ' '}${k}\r\n`).join(''))
        else if (verb === 'MAIL') reply(script.mail?.(n) ?? '250 2.1.0 Ok\r\n')
        else if (verb === 'RCPT') reply(script.rcpt?.(n) ?? '250 2.1.5 Ok\r\n')
        else if (verb === 'DATA') {
          const r = script.data?.(n) ?? '354 go ahead\r\n'
          if (r.startsWith('354')) {
            inData = true
            body = []
          }
          reply(r)
        } else if (verb === 'RSET') reply('250 2.0.0 Ok\r\n')
        else if (verb === 'STAR' && script.starttls !== undefined) reply(script.starttls)
        else if (verb === 'QUIT') {
          sock.end('221 2.0.0 bye\r\n')
          return
        } else reply('502 5.5.2 Error: command not recognized\r\n')
      }
    })
  }
}

const listen = (host: string, port: number, onConnection: (sock: net.Socket) => void) => listenRaw(servers, host, port, onConnection)

const SCRIPTS: Record<string, Script> = {
  'data250.test': { data: () => '250 ok whatever\r\n' },
  'data250p.test': { ehlo: ['PIPELINING'], data: () => '250 ok whatever\r\n' },
  'greetextra.test': { greeting: '220 greetextra.test ESMTP\r\n250 extra\r\n' },
  'mailextra.test': { mail: () => '250 2.1.0 Ok\r\n250 extra\r\n' },
  'mailextrap.test': { ehlo: ['PIPELINING'], mail: () => '250 2.1.0 Ok\r\n250 extra\r\n' },
  'rcptextra.test': { rcpt: () => '250 2.1.5 Ok\r\n250 extra\r\n' },
  // The extras after the reply to the first message come when the next one starts; the second is refused.
  'late.test': { ehlo: ['PIPELINING'], end: (n) => (n === 0 ? '250 2.0.0 queued\r\n' : '554 5.7.1 second message refused\r\n'), late: (n) => (n === 0 ? '250 extra\r\n250 extra\r\n' : undefined) },
  'sameburst.test': { ehlo: ['PIPELINING'], end: () => '250 2.0.0 queued\r\n250 extra\r\n' },
  'code4.test': { rcpt: () => '2500 ok\r\n' },
  'mixed.test': { end: () => '250-ok\r\n550 5.1.1 no\r\n' },
  // Codes outside 2xx-5xx (RFC 5321 §4.2.1), at each stage of a session.
  'greeting600.test': { greeting: '600 greeting600.test ESMTP\r\n' },
  'ehlo600.test': { ehloReply: '600 what\r\n' },
  'mail700.test': { mail: () => '700 7.0.0 what\r\n' },
  'rcpt600.test': { rcpt: () => '600 bad\r\n' },
  'rcpt150.test': { rcpt: () => '150 wait\r\n' },
  'data600.test': { data: () => '600 bad\r\n' },
  'end600.test': { end: () => '600 6.0.0 what\r\n' },
  'end099.test': { end: () => '099 what\r\n' },
  'end900.test': { end: () => '900 9.0.0 what\r\n' },
  'starttls600.test': { ehlo: ['STARTTLS'], starttls: '600 no\r\n' },
  // Take everything; what their MAIL and RCPT lines carry is the point.
  'dsnhop.test': { ehlo: ['PIPELINING', 'DSN'] },
  'nodsnhop.test': { ehlo: ['PIPELINING'] },
  'takes8bit.test': { ehlo: ['PIPELINING', '8BITMIME', 'SMTPUTF8'] },
  'limit.test': { ehlo: ['PIPELINING', 'SIZE 1000'] },
  'roomy.test': { ehlo: ['PIPELINING', 'SIZE 1000000'] },
  // No SIZE keyword, only "size" in its name (nodemailer's EHLO parser takes that for SIZE).
  'no-size.test': { ehlo: ['PIPELINING'] },
  'weird.test': { end: () => '550 2.0.0 weird\r\n' },
  // Replies shaped to cost: a scan of them that restarts at every character, or a line at a time.
  'hexreply.test': { ehlo: ['STARTTLS'], starttls: `${'A'.repeat(100_000)}\r\n` },
  'blankflood.test': { mail: () => `${'\r\n'.repeat(1_000_000)}250 2.1.0 Ok\r\n` },
  // Offers nothing; its name (the first line of its EHLO reply) spells keywords nodemailer looks for anywhere.
  'mx-starttls-dsn-8bitmime-pipelining.test': { greeting: '220 mx-starttls-dsn-8bitmime-pipelining.test ESMTP STARTTLS\r\n' },
}

beforeAll(async () => {
  const names = Object.keys(SCRIPTS)
  let port = 0
  const zones: Parameters<typeof startDns>[0] = {}
  for (const [i, name] of names.entries()) {
    const address = `127.0.5.${i + 1}`
    port = await listen(address, port, scripted(name, SCRIPTS[name]!))
    zones[name] = { A: [address] }
  }
  const bounces = new SMTPServer({
    authOptional: true,
    disableReverseLookup: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData(stream, _session, cb) {
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.on('end', () => {
        dsns.push(Buffer.concat(chunks).toString('latin1'))
        cb()
      })
    },
  })
  servers.push(bounces.server)
  await new Promise<void>((resolve) => bounces.listen(port, '127.0.5.100', resolve))
  zones['sender.test'] = { A: ['127.0.5.100'] }
  dns = await startDns(zones)
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: {
        port,
        connectTimeout: '5s',
        commandTimeout: '5s', dataDoneTimeout: '5s',
        attemptTimeout: '20s',
        concurrency: { global: 10, perDomain: 1 },
        retry: { base: '1h', factor: 1, max: '1h' },
        mtaSts: { enabled: false },
        delayWarning: false,
      },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await dns?.close()
  for (const s of servers) s.close()
})

const msg = (subject: string, body = 'body\r\n') => `From: a@sender.test\r\nTo: x@y.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\n\r\n${body}`
const outcome = (recipient: string, timeoutMs = 15_000): Promise<LogLine> => relay.waitForLog((l) => (l.event === 'delivered' || l.event === 'deferred' || l.event === 'bounced') && l.recipient === recipient, timeoutMs)
const events = (recipient: string, event: string) => relay.logs.filter((l) => l.event === event && l.recipient === recipient)
/** Did anything of a message reach the server, as a message or as commands? */
const leaked = (conns: Conn[]) => conns.some((c) => c.messages.length > 0 || c.commands.some((l) => /^(Subject|From|To|Message-ID|Received):/i.test(l)))

describe('a reply that is not 354 to DATA', () => {
  for (const domain of ['data250.test', 'data250p.test']) {
    it(`${domain}: 250 to DATA sends nothing of the message, defers with a protocol error, closes the connection`, async () => {
      await sendMail(relay.port, { from: 'a@sender.test', to: [`u@${domain}`], data: msg(`data 250 ${domain}`) })
      const ev = await outcome(`u@${domain}`)
      expect(ev.event).toBe('deferred')
      expect(ev.response).toMatch(/protocol error: 250 ok whatever in reply to DATA \(expected 354\)/)
      expect(ev.response).not.toMatch(/connection lost/)
      await eventually(() => seen[domain]!.every((c) => c.closed), 5_000, 'the connection closed')
      // A second message gets a connection of its own.
      await sendMail(relay.port, { from: 'a@sender.test', to: [`v@${domain}`], data: msg(`data 250 again ${domain}`) })
      expect((await outcome(`v@${domain}`)).event).toBe('deferred')
      const conns = seen[domain]!
      expect(conns.length).toBe(2)
      for (const c of conns) expect(c.commands.filter((l) => /^MAIL FROM:/i.test(l)).length).toBe(1)
      expect(leaked(conns)).toBe(false)
    })
  }
})

describe('a server that sends more replies than it was asked for', () => {
  for (const domain of ['greetextra.test', 'mailextra.test', 'mailextrap.test', 'rcptextra.test']) {
    it(`${domain}: nothing of the message is sent, deferred as a protocol error`, async () => {
      await sendMail(relay.port, { from: 'a@sender.test', to: [`u@${domain}`], data: msg(`extra ${domain}`) })
      const ev = await outcome(`u@${domain}`)
      expect(ev.event).toBe('deferred')
      expect(ev.response).toMatch(/protocol error/)
      expect(leaked(seen[domain]!)).toBe(false)
      await eventually(() => seen[domain]!.every((c) => c.closed), 5_000, 'the connection closed')
    })
  }

  it('extra replies after a message was taken, on a reused connection: the next message (refused by the server) is never logged delivered', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['first@late.test'], data: msg('late first') })
    expect((await outcome('first@late.test')).event).toBe('delivered')
    await sendMail(relay.port, { from: 'a@sender.test', to: ['second@late.test'], data: msg('late second') })
    const ev = await outcome('second@late.test')
    expect(ev.event).not.toBe('delivered')
    expect(ev.response).toMatch(/protocol error/)
    // Both messages went over the one connection, only the first message's bytes were sent.
    const conns = seen['late.test']!
    expect(conns.length).toBe(1)
    expect(conns[0]!.messages.length).toBe(1)
    expect(conns[0]!.messages[0]).toMatch(/Subject: late first/)
    await eventually(() => conns[0]!.closed, 5_000, 'the connection closed')
    expect(events('first@late.test', 'delivered').length).toBe(1)
    expect(events('second@late.test', 'delivered').length).toBe(0)
  })

  it('an extra reply right after the reply to the message: that reply decides, the connection is not reused', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['first@sameburst.test'], data: msg('burst first') })
    expect((await outcome('first@sameburst.test')).event).toBe('delivered')
    await eventually(() => seen['sameburst.test']![0]!.closed, 5_000, 'the connection closed')
    await sendMail(relay.port, { from: 'a@sender.test', to: ['second@sameburst.test'], data: msg('burst second') })
    expect((await outcome('second@sameburst.test')).event).toBe('delivered')
    expect(seen['sameburst.test']!.map((c) => c.messages.length)).toEqual([1, 1])
    expect(events('first@sameburst.test', 'delivered').length).toBe(1)
  })
})

describe('malformed reply codes', () => {
  it('2500 to RCPT is no acceptance: deferred as a protocol error, nothing sent', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@code4.test'], data: msg('code4') })
    const ev = await outcome('u@code4.test')
    expect(ev.event).toBe('deferred')
    expect(ev.response).toMatch(/protocol error: malformed reply: 2500 ok/)
    expect(leaked(seen['code4.test']!)).toBe(false)
  })

  it('a multi-line reply whose lines disagree on the code (250-ok / 550 5.1.1 no) is not a delivery', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@mixed.test'], data: msg('mixed') })
    const ev = await outcome('u@mixed.test')
    expect(ev.event).toBe('deferred')
    expect(ev.response).toMatch(/protocol error: malformed reply/)
    await eventually(() => seen['mixed.test']!.every((c) => c.closed), 5_000, 'the connection closed')
  })
})

describe('reply codes outside 2xx-5xx (RFC 5321 §4.2.1)', () => {
  const cases: [domain: string, stage: string, reply: string][] = [
    ['greeting600.test', 'the greeting', '600 greeting600.test ESMTP'],
    ['ehlo600.test', 'EHLO', '600 what'],
    ['mail700.test', 'MAIL FROM', '700 7.0.0 what'],
    ['rcpt600.test', 'RCPT TO', '600 bad'],
    ['rcpt150.test', 'RCPT TO', '150 wait'],
    ['data600.test', 'DATA', '600 bad'],
    ['end600.test', 'the end of data', '600 6.0.0 what'],
    ['end099.test', 'the end of data', '099 what'],
    ['end900.test', 'the end of data', '900 9.0.0 what'],
  ]
  for (const [domain, stage, reply] of cases) {
    it(`${stage} answered "${reply}": a protocol error, deferred (no bounce, no DSN), the connection closed`, async () => {
      const sender = `${domain.split('.')[0]}@sender.test`
      await sendMail(relay.port, { from: sender, to: [`u@${domain}`], data: msg(`odd code ${domain}`) })
      const ev = await outcome(`u@${domain}`)
      expect(ev.event).toBe('deferred')
      expect(ev.response).toContain(`protocol error: malformed reply: ${reply}`)
      expect((await relay.listQueue()).some((q) => q.recipients.some((r) => r.address === `u@${domain}`))).toBe(true)
      await eventually(() => seen[domain]!.every((c) => c.closed), 5_000, 'the connection closed')
      // Only the end of data comes after the message went out.
      expect(leaked(seen[domain]!)).toBe(stage === 'the end of data')
      await new Promise((r) => setTimeout(r, 300))
      expect(dsns.some((d) => d.includes(`u@${domain}`))).toBe(false)
    })
  }

  it('STARTTLS answered "600 no": a failed negotiation, as any malformed reply to it (TLS policy may: sent again in plain text on a new connection)', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@starttls600.test'], data: msg('odd code starttls') })
    const ev = await outcome('u@starttls600.test')
    expect(ev.event).toBe('delivered')
    expect(ev.tls).toBe(false)
    const fallback = relay.logs.find((l) => /^TLS with .*starttls600\.test.* failed/.test(String(l.msg)))
    expect(String(fallback?.msg)).toMatch(/malformed reply: 600 no/)
    // Nothing went over the connection that got the 600 after it.
    const conns = seen['starttls600.test']!
    expect(conns.map((c) => c.commands)).toEqual([['EHLO relay.test', 'STARTTLS'], expect.arrayContaining(['EHLO relay.test', 'MAIL FROM:<a@sender.test>'])])
  })
})

/** One message over a raw session to the relay: EHLO, `commands` (MAIL, RCPTs), DATA, `data` (its bytes as they are). */
async function submit(commands: string[], data: string | Buffer): Promise<void> {
  const { client } = await connectRaw(relay.port, '127.0.0.1', 5_000)
  for (const line of ['EHLO client.test', ...commands, 'DATA']) expect(await client.command(line), line).toMatch(/^(250|354) /m)
  client.send(dotStuff(Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8')))
  expect(await client.command('.')).toMatch(/^250 /)
  client.close()
}

/** The commands a server got from MAIL FROM:<sender> on, up to DATA. */
function envelopeOf(domain: string, sender: string): string[] {
  const commands = seen[domain]!.flatMap((c) => c.commands)
  const from = commands.findIndex((l) => l.startsWith(`MAIL FROM:<${sender}>`))
  expect(from, `MAIL FROM:<${sender}> at ${domain}`).toBeGreaterThanOrEqual(0)
  return commands.slice(from, commands.indexOf('DATA', from))
}

describe('DSN parameters of several recipients in one transaction (RFC 3461 §4.1, §4.2)', () => {
  const rcpts = (domain: string) => [
    `RCPT TO:<b@${domain}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bb@d2.test`,
    `RCPT TO:<c@${domain}> NOTIFY=NEVER`,
    `RCPT TO:<d@${domain}> NOTIFY=FAILURE ORCPT=rfc822;d1@d2.test`,
    `RCPT TO:<e@${domain}> NOTIFY=FAILURE ORCPT=rfc822;e1@d2.test`,
    `RCPT TO:<f@${domain}>`,
  ]

  it("a next hop that offers DSN gets each recipient's own NOTIFY and ORCPT, in one transaction with one copy; the success report is its to send", async () => {
    await submit(['MAIL FROM:<dsn1@sender.test>', ...rcpts('dsnhop.test')], msg('dsn per recipient'))
    for (const r of 'bcdef') expect((await outcome(`${r}@dsnhop.test`)).event).toBe('delivered')
    const envelope = envelopeOf('dsnhop.test', 'dsn1@sender.test')
    expect(envelope.filter((l) => /^MAIL /.test(l))).toHaveLength(1)
    expect(envelope.filter((l) => /^RCPT /.test(l)).sort()).toEqual(rcpts('dsnhop.test').sort())
    expect(seen['dsnhop.test']!.flatMap((c) => c.messages).filter((m) => m.includes('Subject: dsn per recipient'))).toHaveLength(1)
    // Give a stray "relayed" report for b time to arrive: none may.
    await new Promise((r) => setTimeout(r, 1000))
    expect(dsns.some((d) => d.includes('b@dsnhop.test'))).toBe(false)
  })

  it('a next hop without DSN: the RCPTs carry none, and NOTIFY=SUCCESS gets the relay\'s "relayed" report', async () => {
    await submit(['MAIL FROM:<dsn2@sender.test>', ...rcpts('nodsnhop.test')], msg('dsn without dsn'))
    for (const r of 'bcdef') expect((await outcome(`${r}@nodsnhop.test`)).event).toBe('delivered')
    expect(envelopeOf('nodsnhop.test', 'dsn2@sender.test').filter((l) => /^RCPT /.test(l)).sort()).toEqual([...'bcdef'].map((r) => `RCPT TO:<${r}@nodsnhop.test>`))
    const report = await eventually(() => dsns.find((d) => /Final-Recipient: rfc822; ?b@nodsnhop\.test/i.test(d)), 10_000, 'the relayed report for b')
    expect(report).toMatch(/^Action: relayed/im)
    expect(report).toMatch(/^Original-Recipient: rfc822; ?orig\+b@d2\.test/im)
    expect(report).not.toMatch(/[cdef]@nodsnhop\.test/)
  })
})

describe('8BITMIME (RFC 6152 §3): 8-bit bytes go to a next hop only with BODY=8BITMIME', () => {
  const mime = 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n'
  const cases: [what: string, sender: string, params: string, data: string, eightBit: boolean][] = [
    ['an 8-bit body, no BODY= from the client', 'eb1@sender.test', '', mime + msg('eight bit no body', 'caf\u00e9\r\n'), true],
    ['an 8-bit body declared BODY=7BIT', 'eb2@sender.test', ' BODY=7BIT', mime + msg('eight bit 7bit', 'caf\u00e9\r\n'), true],
    ['a SMTPUTF8 message with a UTF-8 Subject and a 7-bit body', 'eb3@sender.test', ' SMTPUTF8', msg('Gr\u00fc\u00dfe utf8 header'), true],
    ['a 7-bit message', 'eb4@sender.test', '', msg('seven bit'), false],
  ]
  for (const [what, sender, params, data, eightBit] of cases) {
    it(`${what}: ${eightBit ? 'BODY=8BITMIME on MAIL FROM, the bytes as they are' : 'no BODY='}`, async () => {
      const rcpt = `${sender.split('@')[0]}@takes8bit.test`
      await submit([`MAIL FROM:<${sender}>${params}`, `RCPT TO:<${rcpt}>`], data)
      expect((await outcome(rcpt)).event).toBe('delivered')
      const mail = envelopeOf('takes8bit.test', sender)[0]!
      if (eightBit) expect(mail).toMatch(/ BODY=8BITMIME( |$)/)
      else expect(mail).not.toMatch(/BODY=/)
      if (params.includes('SMTPUTF8')) expect(mail).toMatch(/ SMTPUTF8( |$)/)
      // The message as the next hop got it: its 8-bit lines byte for byte, nothing converted.
      const sent = Buffer.from(data, 'utf8').toString('latin1')
      const got = seen['takes8bit.test']!.flatMap((c) => c.messages).find((m) => m.includes(/^Message-ID: .*$/m.exec(sent)![0]))
      for (const line of sent.split('\r\n').filter((l) => /[\x80-\xff]/.test(l))) expect(got).toContain(line)
      expect(got).not.toMatch(/quoted-printable/i)
    })
  }
})

describe('SIZE (RFC 1870)', () => {
  it('a message over the advertised limit bounces with 5.3.4 before MAIL FROM', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@limit.test'], data: msg('too big', `${'x'.repeat(70)}\r\n`.repeat(30)) })
    const ev = await outcome('u@limit.test')
    expect(ev.event).toBe('bounced')
    expect(ev.response).toMatch(/^552 5\.3\.4 Message size \d+ exceeds the fixed limit 1000 of limit\.test\[127\.0\.5\.\d+\]:\d+$/)
    expect(seen['limit.test']!.flatMap((c) => c.commands).some((l) => /^MAIL/i.test(l))).toBe(false)
  })

  it('MAIL FROM carries SIZE= with the message size when the limit allows it', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@roomy.test'], data: msg('fits', `${'x'.repeat(70)}\r\n`.repeat(30)) })
    expect((await outcome('u@roomy.test')).event).toBe('delivered')
    const conn = seen['roomy.test']![0]!
    const size = /^MAIL FROM:<[^>]*>.* SIZE=(\d+)/i.exec(conn.commands.find((l) => /^MAIL/i.test(l)) ?? '')?.[1]
    expect(size).toBeDefined()
    expect(Number(size)).toBe(Buffer.byteLength(conn.messages[0]!, 'latin1'))
  })

  it('no SIZE= to a server that does not offer SIZE (whatever its name)', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@no-size.test'], data: msg('no size') })
    expect((await outcome('u@no-size.test')).event).toBe('delivered')
    const mail = seen['no-size.test']![0]!.commands.find((l) => /^MAIL/i.test(l))
    expect(mail).toBeDefined()
    expect(mail).not.toMatch(/SIZE=/i)
  })
})

describe('EHLO keywords', () => {
  it('only the keyword lines of the EHLO reply count, not the server\'s name: no STARTTLS, NOTIFY= or BODY=8BITMIME to a server offering none', async () => {
    const domain = 'mx-starttls-dsn-8bitmime-pipelining.test'
    const { client } = await connectRaw(relay.port, '127.0.0.1', 5_000)
    for (const line of ['EHLO client.test', 'MAIL FROM:<a@sender.test> BODY=8BITMIME', `RCPT TO:<u@${domain}> NOTIFY=FAILURE`, 'DATA']) await client.command(line)
    const eightBit = 'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n' + msg('ehlo keywords', 'caf\u00e9 8-bit body\r\n')
    client.send(dotStuff(Buffer.from(eightBit, 'utf8')))
    expect(await client.command('.')).toMatch(/^250/)
    client.close()
    expect((await outcome(`u@${domain}`)).event).toBe('delivered')
    const commands = seen[domain]!.flatMap((c) => c.commands)
    expect(commands.some((l) => /^STARTTLS/i.test(l))).toBe(false)
    expect(commands.find((l) => /^MAIL/i.test(l))).not.toMatch(/BODY=8BITMIME/i)
    expect(commands.find((l) => /^RCPT/i.test(l))).not.toMatch(/NOTIFY=|ORCPT=/i)
    // Without 8BITMIME the 8-bit body went out converted to 7 bits.
    expect(seen[domain]![0]!.messages[0]).toMatch(/^Content-Transfer-Encoding: quoted-printable/im)
  })
})

describe('enhanced status codes', () => {
  it('550 2.0.0 at the end of data: the bounce says 5.x.x, not 2.0.0', async () => {
    // A sender of its own: untrusted mail gets one DSN per sender per interval (delivery.untrustedDsn).
    await sendMail(relay.port, { from: 'weird@sender.test', to: ['u@weird.test'], data: msg('weird') })
    const ev = await outcome('u@weird.test')
    expect(ev.event).toBe('bounced')
    expect(ev.response).toMatch(/^550 2\.0\.0 weird/)
    expect(ev.dsn).toMatch(/^5\./)
    const dsn = await eventually(() => dsns.find((d) => /Final-Recipient: rfc822; ?u@weird\.test/i.test(d)), 10_000, 'the DSN')
    expect(dsn).toMatch(/^Action: failed/im)
    expect(dsn).toMatch(/^Status: 5\.\d+\.\d+/im)
  })
})

describe('replies shaped to cost the relay (a domain owner points an MX at such a server)', () => {
  /**
   * Runs `work` while a client of the relay sends NOOP every ~30 ms; the longest round trip in ms.
   * At most 90 of them: past 100 commands that move no mail a session is cut off (patches.ts 14).
   */
  async function slowestNoop(work: () => Promise<unknown>): Promise<number> {
    const { client } = await connectRaw(relay.port, '127.0.0.1', 5000)
    expect(await client.command('EHLO probe.test')).toMatch(/^250 /m)
    let done = false
    let slowest = 0
    const probing = (async () => {
      for (let i = 0; i < 90 && !done; i++) {
        const t = performance.now()
        expect(await client.command('NOOP', 60_000)).toMatch(/^250 /)
        slowest = Math.max(slowest, performance.now() - t)
        await new Promise((r) => setTimeout(r, 30))
      }
    })()
    await work().finally(() => (done = true))
    await probing
    client.close()
    return slowest
  }

  it('STARTTLS answered with one line of 100,000 hex digits: a failed negotiation (TLS policy may: sent in plain text), its reason cut short; the relay answers its clients meanwhile', async () => {
    let ev: LogLine | undefined
    const slowest = await slowestNoop(async () => {
      await sendMail(relay.port, { from: 'a@sender.test', to: ['u@hexreply.test'], data: msg('hex reply') })
      ev = await outcome('u@hexreply.test', 30_000)
    })
    expect(ev!.event).toBe('delivered')
    expect(ev!.tls).toBe(false)
    const fallback = relay.logs.find((l) => /^TLS with .*hexreply\.test.* failed/.test(String(l.msg)))
    expect(String(fallback?.msg)).toMatch(/plain text after the reply to STARTTLS \(malformed reply: A{10}/)
    expect(String(fallback?.msg).length).toBeLessThan(2000)
    expect(slowest).toBeLessThan(1000)
  }, 60_000)

  it('MAIL FROM answered with a million blank lines: a protocol error at once, not read a line a tick; nothing of the message sent', async () => {
    let ev: LogLine | undefined
    const slowest = await slowestNoop(async () => {
      await sendMail(relay.port, { from: 'a@sender.test', to: ['u@blankflood.test'], data: msg('blank flood') })
      ev = await outcome('u@blankflood.test', 30_000)
    })
    expect(ev!.event).toBe('deferred')
    expect(ev!.response).toMatch(/protocol error: more than 100 lines no command waits for/)
    expect(slowest).toBeLessThan(1000)
    const conns = seen['blankflood.test']!
    expect(conns.every((c) => !c.commands.some((l) => /^RCPT/i.test(l)))).toBe(true)
    expect(leaked(conns)).toBe(false)
  }, 60_000)
})
