// The core's protocol limits end to end, against the built relay over real sockets: SIZE and
// smtp.maxMessageSize (552 5.3.4), smtp.maxRecipients (452 4.5.3), smtp.maxErrors (421 and close),
// smtp.sessionTimeout (421 4.4.2), smtp.socketTimeout (idle), smtp.maxUnauthenticatedCommands on
// a submission listener, and a slowloris flood (500 trickling connections from one address) that
// must not keep a well-behaved client from getting its message accepted, with and without the
// rate-limit plugin's per-IP concurrency limit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import net from 'node:net'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, sendMail, type RawSmtp } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { eventually, ROOT, startRelay, type RelayProcess } from '../harness/relay.js'

const STATIC_AUTH = path.join(ROOT, 'test/fixtures/static-auth.plugin.ts')
const b64 = (s: string) => Buffer.from(s).toString('base64')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

let ca: TestCa
let dns: TestDns
let mx: TestReceiver
let sized: RelayProcess // maxMessageSize 10 KB, maxRecipients 3, maxErrors 3
let timed: RelayProcess // socketTimeout 1s, sessionTimeout 2s
let submission: RelayProcess // submission listeners (STARTTLS, implicit TLS), maxUnauthenticatedCommands 4
let plain: RelayProcess // defaults: the slowloris target
let guarded: RelayProcess // defaults plus rate-limit perIp.concurrent 20
const clients = new Set<RawSmtp>()

const base = () => ({
  localDomains: ['limits.test'],
  dns: { servers: [dns.server], timeout: '1s' },
  delivery: { port: mx.port },
})

const message = (tag: string, body = 'hello\r\n') => `From: a@client.test\r\nTo: b@limits.test\r\nSubject: ${tag}\r\n\r\n${body}`

async function open(port: number, ip = '127.0.0.1', tls?: { ca: Buffer; servername: string }): Promise<RawSmtp> {
  const { client, greeting } = await connectRaw(port, '127.0.0.1', 5000, tls, ip)
  clients.add(client)
  expect(greeting).toMatch(/^220 /)
  return client
}

/** Waits for the connection to be closed by the relay, at most `ms`; true if it was. */
const closedWithin = (c: RawSmtp, ms: number) => Promise.race([c.closed.then(() => true), sleep(ms).then(() => false)])

function closeClients(): void {
  for (const c of clients) c.close()
  clients.clear()
}

beforeAll(async () => {
  ca = makeCa()
  const cert = ca.issue(['relay.test'])
  mx = await startReceiver({ host: '127.0.0.2' })
  dns = await startDns({ 'limits.test': { A: ['127.0.0.2'] } })
  ;[sized, timed, submission, plain, guarded] = await Promise.all([
    startRelay({ config: { ...base(), smtp: { reverseLookup: false, maxMessageSize: '10KB', maxRecipients: 3, maxErrors: 3 } } }),
    startRelay({ config: { ...base(), smtp: { reverseLookup: false, socketTimeout: '1s', sessionTimeout: '2s' } } }),
    startRelay({
      config: {
        ...base(),
        listen: [
          { host: '127.0.0.1', port: 0, role: 'submission', tls: 'implicit' },
          { host: '127.0.0.1', port: 0, role: 'submission', tls: 'starttls' },
        ],
        tls: { cert: cert.cert, key: cert.key },
        smtp: { reverseLookup: false, maxUnauthenticatedCommands: 4, authFailureDelay: '10ms' },
        plugins: [[STATIC_AUTH, { users: { 'u@client.test': { password: 'pw' } } }]],
      },
    }),
    // The slowloris targets: the core's per-client cap (test/e2e/client-connections.test.ts) and
    // rate-limit's connection rate are lifted, so the flood reaches what these tests measure.
    startRelay({ config: { ...base(), smtp: { maxConnectionsPerClient: 1000 } } }),
    startRelay({ config: { ...base(), smtp: { maxConnectionsPerClient: 1000 }, plugins: [['rate-limit', { perIp: { concurrent: 20, connectionsPerMinute: false } }]] } }),
  ])
})

afterAll(async () => {
  closeClients()
  await Promise.all([sized, timed, submission, plain, guarded].map((r) => r?.stop()))
  await Promise.all([dns?.close(), mx?.close()])
})

describe('smtp.maxHeaderMemory: header sections being received share one budget', () => {
  // Each header section is held in memory while it arrives; its first 64 KB are free, the rest
  // comes from one budget for the process, so a thousand sessions each sending a header at
  // maxHeaderSize (1 MB) cannot take a gigabyte. Over it: 452 4.3.1, and the session goes on.
  it('a header that needs more than is left gets 452 4.3.1; a small header is not held up; the budget comes back', async () => {
    const relay = await startRelay({ config: { ...base(), smtp: { reverseLookup: false, maxHeaderMemory: '150KB' } } })
    try {
      const field = (tag: string, kb: number) => Array.from({ length: kb }, (_, i) => `X-${tag}-${i}: ${'h'.repeat(1000)}\r\n`).join('')
      const begin = async (c: RawSmtp) => {
        for (const line of ['EHLO client.test', 'MAIL FROM:<a@client.test>', 'RCPT TO:<b@limits.test>']) expect(await c.command(line)).toMatch(/^250[ -]/)
        expect(await c.command('DATA')).toMatch(/^354 /)
      }
      // A holds about 200 KB of header (135 KB of it from the budget of 150 KB) and waits.
      const a = await open(relay.port)
      await begin(a)
      a.send(field('a', 200))
      await sleep(500)
      // B needs about 100 KB (36 KB from the budget): more than is left.
      const b = await open(relay.port)
      await begin(b)
      b.send(`${field('b', 100)}Subject: b\r\n\r\nbody\r\n.\r\n`)
      expect(await b.read()).toMatch(/^452 4\.3\.1 /)
      // A message with an ordinary header takes nothing from the budget.
      const small = await sendMail(relay.port, { from: 'a@client.test', to: ['b@limits.test'], data: message('small') })
      expect(small.lastReply).toMatch(/^250 /)
      // A ends its message: accepted, and what it held is free again, so B's goes now.
      a.send('Subject: a\r\n\r\nbody\r\n.\r\n')
      expect(await a.read()).toMatch(/^250 /)
      expect(await b.command('RSET')).toMatch(/^250 /)
      await begin(b)
      b.send(`${field('b', 100)}Subject: b\r\n\r\nbody\r\n.\r\n`)
      expect(await b.read()).toMatch(/^250 /)
      // The refusal's log line (it may reach stdout after the reply reached the client).
      await relay.waitForLog((l) => l.msg === 'refused' && l.rule === 'core:header-memory', 5000)
    } finally {
      closeClients()
      await relay.stop()
    }
  }, 60_000)
})

describe('message size and recipients', () => {
  it('SIZE is advertised; a declared SIZE over the limit and a message over it both get 552 5.3.4', async () => {
    const c = await open(sized.port)
    expect(await c.command('EHLO client.test')).toMatch(/^250[- ]SIZE 10240$/m)
    expect(await c.command('MAIL FROM:<a@client.test> SIZE=20000')).toMatch(/^552 5\.3\.4 /)
    expect(await c.command('MAIL FROM:<a@client.test> SIZE=2000')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<b@limits.test>')).toMatch(/^250 /)
    expect(await c.command('DATA')).toMatch(/^354 /)
    const reply = c.read()
    c.send(dotStuff(message('too big', `${'x'.repeat(998)}\r\n`.repeat(20))))
    expect(await reply).toMatch(/^552 5\.3\.4 /)
    // The session goes on: a message under the limit is accepted.
    expect(await c.command('MAIL FROM:<a@client.test>')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<b@limits.test>')).toMatch(/^250 /)
    expect(await c.command('DATA')).toMatch(/^354 /)
    const ok = c.read()
    c.send(dotStuff(message('small')))
    expect(await ok).toMatch(/^250 2\.0\.0 Ok: queued as /)
    closeClients()
  })

  it('a message just under the limit that the relay\'s own fields (Received) take over it gets 552 5.3.4, as Postfix', async () => {
    const c = await open(sized.port)
    await c.command('EHLO client.test')
    expect(await c.command('MAIL FROM:<a@client.test>')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<b@limits.test>')).toMatch(/^250 /)
    expect(await c.command('DATA')).toMatch(/^354 /)
    const head = message('near the limit', '')
    const line = `${'y'.repeat(98)}\r\n`
    const data = head + line.repeat(Math.floor((10240 - 40 - head.length) / line.length))
    expect(data.length).toBeGreaterThan(10240 - 140)
    expect(data.length).toBeLessThanOrEqual(10240 - 40)
    const reply = c.read()
    c.send(dotStuff(data))
    expect(await reply).toMatch(/^552 5\.3\.4 /)
    closeClients()
  })

  it('smtp.maxRecipients: the 4th RCPT gets 452 4.5.3; the message goes to the first 3', async () => {
    const c = await open(sized.port)
    await c.command('EHLO client.test')
    expect(await c.command('MAIL FROM:<a@client.test>')).toMatch(/^250 /)
    for (const r of ['r1', 'r2', 'r3']) expect(await c.command(`RCPT TO:<${r}@limits.test>`)).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<r4@limits.test>')).toMatch(/^452 4\.5\.3 /)
    expect(await c.command('DATA')).toMatch(/^354 /)
    const reply = c.read()
    c.send(dotStuff(message('three recipients')))
    expect(await reply).toMatch(/^250 2\.0\.0 /)
    closeClients()
  })

  it('recipients over smtp.maxRecipients are not errors (maxErrors 3): 10 more get 452 and the message still goes to the first 3', async () => {
    const c = await open(sized.port)
    await c.command('EHLO client.test')
    expect(await c.command('MAIL FROM:<a@client.test>')).toMatch(/^250 /)
    for (let i = 1; i <= 13; i++) expect(await c.command(`RCPT TO:<over${i}@limits.test>`)).toMatch(i <= 3 ? /^250 / : /^452 4\.5\.3 /)
    expect(await c.command('DATA')).toMatch(/^354 /)
    const reply = c.read()
    c.send(dotStuff(message('overshoot')))
    expect(await reply).toMatch(/^250 2\.0\.0 /)
    const m = await eventually(() => mx.messages.find((x) => x.raw.toString('latin1').includes('Subject: overshoot\r\n')), 10_000, 'the message at the MX')
    expect(m.to).toEqual(['over1@limits.test', 'over2@limits.test', 'over3@limits.test'])
    closeClients()
  })
})

describe('errors and timeouts', () => {
  it('smtp.maxErrors (3): the 3rd refused command is answered 421 4.7.0 and the session is closed', async () => {
    const c = await open(sized.port)
    await c.command('EHLO client.test')
    expect(await c.command('MAIL FROM:<a@client.test>')).toMatch(/^250 /)
    // Relaying is denied: each of these is a refused command.
    expect(await c.command('RCPT TO:<x1@elsewhere.test>')).toMatch(/^550 5\.7\.1 /)
    expect(await c.command('RCPT TO:<x2@elsewhere.test>')).toMatch(/^550 5\.7\.1 /)
    expect(await c.command('RCPT TO:<x3@elsewhere.test>')).toMatch(/^421 4\.7\.0 .*Too many errors/)
    expect(await closedWithin(c, 2000)).toBe(true)
    closeClients()
  })

  it('smtp.maxErrors counts every refused command, not only refused recipients', async () => {
    const c = await open(sized.port)
    await c.command('EHLO client.test')
    expect(await c.command('RCPT TO:<b@limits.test>')).toMatch(/^503 /) // no MAIL yet
    expect(await c.command('MAIL FROM:<not an address>')).toMatch(/^5\d\d /)
    const third = await c.command('MAIL FROM:<@bad@route>').catch((e: Error) => e.message)
    expect(third).toMatch(/^421 /)
    expect(await closedWithin(c, 2000)).toBe(true)
    closeClients()
  })

  it('MAIL/RSET loops: after 100 non-progress commands since the last accepted message each one counts as an error (maxErrors 3): the 3rd gets 421 4.7.0', async () => {
    const c = await open(sized.port)
    await c.command('EHLO client.test')
    // 50 transactions begun and given up (100 commands): answered as usual.
    for (let i = 0; i < 49; i++) {
      expect(await c.command(`MAIL FROM:<loop${i}@client.test>`)).toMatch(/^250 /)
      expect(await c.command(i % 2 ? 'RSET' : 'EHLO client.test')).toMatch(/^250[ -]/)
    }
    expect(await c.command('MAIL FROM:<loop49@client.test>')).toMatch(/^250 /)
    // Then each one is an error: the 3rd ends the session.
    expect(await c.command('RSET')).toMatch(/^250 /)
    expect(await c.command('MAIL FROM:<more@client.test>')).toMatch(/^250 /)
    expect(await c.command('RSET').catch((e: Error) => e.message)).toMatch(/^421 4\.7\.0 .*Too many errors/)
    expect(await closedWithin(c, 2000)).toBe(true)
    await sized.waitForLog((l) => l.msg === 'too many errors: closing the session')
    closeClients()
  })

  // Postfix's smtpd_junk_command_limit: a session that only sends commands that move no mail holds a
  // slot (and CPU) until the session time limit; past 100 of them each one counts as an error.
  for (const [command, reply] of [
    ['NOOP', /^250 /],
    ['RSET', /^250 /],
    ['VRFY user@limits.test', /^252 /],
    ['HELP', /^214 /],
    ['EHLO client.test', /^250[ -]/],
    ['HELO client.test', /^250 /],
  ] as const) {
    it(`${command.split(' ')[0]} loops: 100 are answered, then each counts as an error (maxErrors 3): the 3rd gets 421 4.7.0`, async () => {
      const c = await open(sized.port)
      for (let i = 0; i < 102; i++) expect(await c.command(command)).toMatch(reply)
      expect(await c.command(command).catch((e: Error) => e.message)).toMatch(/^421 4\.7\.0 .*Too many errors/)
      expect(await closedWithin(c, 2000)).toBe(true)
      closeClients()
    })
  }

  it("sendmail's joke commands (WIZ, SHELL, KILL) are not recognized (500 5.5.2), EXPN is not implemented (502 5.5.1); both count as errors", async () => {
    const c = await open(sized.port)
    expect(await c.command('WIZ secret')).toMatch(/^500 5\.5\.2 /)
    expect(await c.command('EXPN staff')).toMatch(/^502 5\.5\.1 Error: command not implemented/)
    expect(await c.command('KILL').catch((e: Error) => e.message)).toMatch(/^421 4\.7\.0 .*Too many errors/)
    expect(await closedWithin(c, 2000)).toBe(true)
    closeClients()
  })

  it('RFC 5321 commands the relay does not implement (EXPN, TURN, ETRN, ATRN, SEND, SOML, SAML, BDAT without CHUNKING) get 502 5.5.1 (§4.2.4), unknown ones 500 5.5.2', async () => {
    const c = await open(plain.port)
    for (const command of ['EXPN staff', 'turn', 'ETRN limits.test', 'ATRN', 'SEND FROM:<a@limits.test>', 'SOML FROM:<a@limits.test>', 'SAML FROM:<a@limits.test>', 'BDAT 10 LAST']) {
      expect(await c.command(command), command).toMatch(/^502 5\.5\.1 Error: command not implemented\r?$/)
    }
    closeClients()
    const d = await open(plain.port)
    expect(await d.command('XEXPN staff')).toMatch(/^500 5\.5\.2 Error: command not recognized/)
    expect(await d.command('NOOP')).toMatch(/^250 /)
    closeClients()
  })

  it('a command line over the limit gets 500 5.5.2 Line too long (not a 4xx to retry) and the session ends', async () => {
    const c = await open(plain.port)
    const reply = c.read()
    c.send(`EHLO ${'x'.repeat(100_000)}\r\n`)
    expect(await reply).toMatch(/^500 5\.5\.2 Line too long/)
    expect(await closedWithin(c, 2000)).toBe(true)
    closeClients()
  })

  it('ten unrecognized commands end the session as refused commands do: 421 4.7.0', async () => {
    const c = await open(plain.port)
    for (let i = 1; i < 10; i++) expect(await c.command(`XYZZY${i}`)).toMatch(/^500 /)
    expect(await c.command('XYZZY10').catch((e: Error) => e.message)).toMatch(/^421 4\.7\.0 .*Too many errors/)
    expect(await closedWithin(c, 2000)).toBe(true)
    closeClients()
  })

  it('smtp.sessionTimeout (2s): a session that keeps talking but never finishes is closed with 421 4.4.2', async () => {
    const c = await open(timed.port)
    await c.command('EHLO client.test')
    const started = Date.now()
    const replies: string[] = []
    // NOOP every 300 ms: never idle for the 1 s socket timeout.
    while (!c.isClosed() && Date.now() - started < 5000) {
      const r = await c.command('NOOP', 2000).catch(() => undefined)
      if (r) replies.push(r)
      if (r?.startsWith('421 ')) break
      await sleep(300)
    }
    const elapsed = Date.now() - started
    // The 421 may have come while no command was pending: it is then the next reply read.
    if (!replies.at(-1)?.startsWith('421 ')) replies.push(await c.read(100).catch(() => 'nothing'))
    expect(replies.at(-1)).toMatch(/^421 4\.4\.2 relay\.test Session time limit exceeded/)
    expect(replies.slice(0, -1).every((r) => r.startsWith('250 '))).toBe(true)
    expect(elapsed).toBeGreaterThanOrEqual(1500)
    expect(elapsed).toBeLessThan(3500)
    expect(await closedWithin(c, 2000)).toBe(true)
    closeClients()
  })

  it('smtp.socketTimeout (1s): an idle session is closed with 421 4.4.2 naming the host, and the relay logs which command the client went quiet after', async () => {
    const c = await open(timed.port)
    await c.command('EHLO client.test')
    const started = Date.now()
    const reply = await c.read(4000)
    expect(reply).toMatch(/^421 4\.4\.2 relay\.test Timeout exceeded, closing connection\r?$/)
    expect(Date.now() - started).toBeGreaterThanOrEqual(800)
    expect(Date.now() - started).toBeLessThan(2500)
    expect(await closedWithin(c, 2000)).toBe(true)
    await timed.waitForLog((l) => l.msg === 'idle timeout after EHLO: closing' && l.after === 'EHLO' && l.client === '127.0.0.1', 2000)

    // Quiet in the middle of a message: "after DATA", and nothing is queued.
    const d = await open(timed.port)
    await d.command('EHLO client.test')
    expect(await d.command('MAIL FROM:<a@limits.test>')).toMatch(/^250 /)
    expect(await d.command('RCPT TO:<b@limits.test>')).toMatch(/^250 /)
    expect(await d.command('DATA')).toMatch(/^354 /)
    d.send('Subject: half\r\n\r\nnever finished\r\n')
    expect(await d.read(4000)).toMatch(/^421 4\.4\.2 relay\.test Timeout exceeded/)
    await timed.waitForLog((l) => l.msg === 'idle timeout after DATA: closing', 2000)
    expect(timed.logs.some((l) => l.msg === 'accepted')).toBe(false)
    closeClients()
  })
})

describe('before AUTH on a submission listener', () => {
  const implicitPort = () => submission.logs.find((l) => l.tls === 'implicit')!.port as number
  const starttlsPort = () => submission.logs.find((l) => l.tls === 'starttls')!.port as number

  it('smtp.maxUnauthenticatedCommands (4): the 4th command without AUTH gets 421 and the session ends (implicit TLS)', async () => {
    const c = await open(implicitPort(), '127.0.0.1', { ca: ca.caPem, servername: 'relay.test' })
    expect(await c.command('EHLO client.test')).toMatch(/AUTH PLAIN/)
    expect(await c.command('NOOP')).toMatch(/^250 /)
    expect(await c.command('MAIL FROM:<u@client.test>')).toMatch(/^530 5\.7\.0 /)
    // 4.7.0: a policy limit (as before STARTTLS), not 4.4.2 "bad connection".
    expect(await c.command('NOOP')).toMatch(/^421 4\.7\.0 Error: too many unauthenticated commands/)
    expect(await closedWithin(c, 2000)).toBe(true)
    closeClients()
  })

  it('the same limit applies before STARTTLS', async () => {
    const c = await open(starttlsPort())
    const replies: string[] = []
    for (let i = 0; i < 10 && !c.isClosed(); i++) replies.push(await c.command(i === 0 ? 'EHLO client.test' : 'NOOP').catch((e: Error) => `closed: ${e.message}`))
    expect(replies.slice(0, 3).every((r) => r.startsWith('250'))).toBe(true)
    expect(replies[3]).toMatch(/^421 4\.7\.0 Error: too many unauthenticated commands/)
    expect(await closedWithin(c, 2000)).toBe(true)
    closeClients()
  })

  it('an authenticated session is not limited', async () => {
    const c = await open(implicitPort(), '127.0.0.1', { ca: ca.caPem, servername: 'relay.test' })
    await c.command('EHLO client.test')
    expect(await c.command(`AUTH PLAIN ${b64('\0u@client.test\0pw')}`)).toMatch(/^235 /)
    for (let i = 0; i < 10; i++) expect(await c.command('NOOP')).toMatch(/^250 /)
    closeClients()
  })
})

/**
 * 500 connections from 127.0.0.50, each trickling one byte a second of a command line that never
 * ends. Resolves with the sockets and what each got as its first line (or '' for nothing yet).
 */
async function slowloris(port: number, n = 500): Promise<{ sockets: net.Socket[]; firstLine: string[]; stop(): void }> {
  const sockets: net.Socket[] = []
  const firstLine: string[] = []
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      new Promise<void>((resolve) => {
        const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.50' })
        sockets.push(s)
        firstLine[i] = ''
        let buf = ''
        s.on('data', (d) => {
          buf += d.toString('latin1')
          if (!firstLine[i] && buf.includes('\n')) firstLine[i] = buf.slice(0, buf.indexOf('\n')).trim()
          resolve()
        })
        s.on('error', () => resolve())
        s.on('close', () => resolve())
        setTimeout(resolve, 5000).unref()
      }),
    ),
  )
  let k = 0
  const timer = setInterval(() => {
    for (const s of sockets) if (!s.destroyed) s.write(Buffer.from([0x41 + (k % 26)]))
    k++
  }, 1000)
  return {
    sockets,
    firstLine,
    stop() {
      clearInterval(timer)
      for (const s of sockets) s.destroy()
    },
  }
}

/** A well-behaved client from 127.0.0.1: its message is accepted; resolves with ms taken. */
async function wellBehaved(port: number, tag: string): Promise<number> {
  const started = Date.now()
  const r = await sendMail(port, { from: 'a@client.test', to: ['b@limits.test'], data: message(tag), timeoutMs: 5000 })
  expect(r.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as /)
  return Date.now() - started
}

describe('slowloris', () => {
  it('500 trickling connections from one address: a well-behaved client still gets 250 within seconds', async () => {
    const flood = await slowloris(plain.port)
    try {
      expect(flood.firstLine.filter((l) => l.startsWith('220 ')).length).toBe(500)
      await sleep(2500) // a few bytes trickled into every command line
      const ms = await wellBehaved(plain.port, 'during slowloris')
      expect(ms).toBeLessThan(3000)
      expect(plain.exited()).toBe(false)
      expect(flood.sockets.filter((s) => !s.destroyed).length).toBe(500) // still holding on (bounded only by the timeouts)
    } finally {
      flood.stop()
    }
    expect(flood.sockets.every((s) => s.destroyed)).toBe(true)
    expect(plain.exited()).toBe(false)
  })

  it('with rate-limit perIp.concurrent 20: the flood is cut to 20 connections, the rest get 421 4.7.0', async () => {
    const flood = await slowloris(guarded.port)
    try {
      const taken = flood.firstLine.filter((l) => l.startsWith('220 ')).length
      const refused = flood.firstLine.filter((l) => /^421 4\.7\.0 .*too many connections from 127\.0\.0\.50/.test(l)).length
      expect(taken).toBe(20)
      expect(refused).toBe(480)
      await sleep(1500)
      expect(flood.sockets.filter((s) => !s.destroyed).length).toBe(20)
      const ms = await wellBehaved(guarded.port, 'during slowloris, guarded')
      expect(ms).toBeLessThan(3000)
      expect(guarded.exited()).toBe(false)
    } finally {
      flood.stop()
    }
    expect(flood.sockets.every((s) => s.destroyed)).toBe(true)
  })
})
