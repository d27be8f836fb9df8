// RFC 2920 §3.2: a client that pipelines MAIL, RCPT and DATA gets their replies in one write (one
// TCP segment, one read), as from Postfix, in order and each as it would be alone; a refusal inside
// the group is part of it. A reply the client waits for before it sends more is never held: the
// 220 to a pipelined STARTTLS leaves at once and the TLS session starts, where groups are batched
// the same way.
import net from 'node:net'
import tls from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let rx: TestReceiver
let relay: RelayProcess
let ca: TestCa

beforeAll(async () => {
  ca = makeCa()
  const cert = ca.issue(['relay.test'])
  rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] } })
  relay = await startRelay({
    config: {
      tls: { cert: cert.cert, key: cert.key },
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }]],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), rx?.close()])
})

/** A connection that keeps each read apart: what arrived in which segment. */
class Reads {
  readonly reads: string[] = []
  private waiting: (() => void) | undefined
  constructor(public socket: net.Socket) {
    this.listen(socket)
  }
  listen(socket: net.Socket): void {
    this.socket = socket
    socket.on('data', (d: Buffer) => {
      this.reads.push(d.toString('latin1'))
      this.waiting?.()
    })
  }
  /** Waits until the reads since `from` hold `n` complete replies (final lines); returns those reads. */
  async replies(from: number, n: number): Promise<string[]> {
    const deadline = Date.now() + 5000
    for (;;) {
      const got = this.reads.slice(from)
      const finals = got.join('').split('\r\n').filter((l) => /^\d{3} /.test(l)).length
      if (finals >= n) return got
      if (Date.now() > deadline) throw new Error(`waited for ${n} replies, got: ${JSON.stringify(got)}`)
      await new Promise<void>((r) => {
        this.waiting = r
        setTimeout(r, 100)
      })
    }
  }
  async command(line: string): Promise<string> {
    const from = this.reads.length
    this.socket.write(`${line}\r\n`)
    return (await this.replies(from, 1)).join('')
  }
}

async function connect(): Promise<Reads> {
  const socket = net.connect({ port: relay.port, host: '127.0.0.1' })
  const c = new Reads(socket)
  await c.replies(0, 1) // greeting
  expect(await c.command('EHLO client.test')).toMatch(/250[- ]PIPELINING/)
  return c
}

/** The TLS session on `socket` after its 220 to STARTTLS, and its EHLO (which must offer PIPELINING). */
async function tlsOver(socket: net.Socket): Promise<{ secure: tls.TLSSocket; t: Reads }> {
  socket.removeAllListeners('data')
  const secure = tls.connect({ socket, servername: 'relay.test', ca: ca.caPem })
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve)
    secure.once('error', reject)
  })
  const t = new Reads(secure as unknown as net.Socket)
  expect(await t.command('EHLO client.test')).toMatch(/250[- ]PIPELINING/)
  return { secure, t }
}

/** Sends MAIL, the RCPTs and DATA in one write; their replies must come in one read: returns their codes. */
async function sendGroup(c: Reads, rcpts: string[]): Promise<string[]> {
  const from = c.reads.length
  c.socket.write(group('app@client.test', rcpts))
  const reads = await c.replies(from, rcpts.length + 2)
  expect(reads).toHaveLength(1)
  return reads[0]!.split('\r\n').filter(Boolean).map((l) => l.slice(0, 3))
}

/** Sends the message after the 354; expects its 250 and the message at the receiver. */
async function sendBody(c: Reads, subject: string): Promise<void> {
  const sent = c.reads.length
  c.socket.write(body(subject))
  expect((await c.replies(sent, 1)).join('')).toMatch(/^250 2\.0\.0 /)
  await eventually(() => rx.messages.some((m) => m.raw.toString().includes(`Subject: ${subject}`)), 10_000)
}

const group = (sender: string, rcpts: string[]) => `MAIL FROM:<${sender}>\r\n${rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join('')}DATA\r\n`
const body = (subject: string) => `From: app@client.test\r\nTo: x@dest.test\r\nSubject: ${subject}\r\n\r\nhello\r\n.\r\n`

describe('replies to pipelined commands (RFC 2920)', () => {
  it('MAIL, three RCPTs and DATA in one write: the five replies arrive in one read, in order, and the message relays', async () => {
    const c = await connect()
    expect(await sendGroup(c, ['a@dest.test', 'b@dest.test', 'c@dest.test'])).toEqual(['250', '250', '250', '250', '354'])
    await sendBody(c, 'one group')
    expect(await c.command('QUIT')).toMatch(/^221 /)
    c.socket.destroy()
  })

  it('a refused recipient inside the group is answered in its place, in the same read', async () => {
    const c = await connect()
    const codes = await sendGroup(c, ['a@dest.test', 'bad address', 'b@dest.test'])
    expect(codes[0]).toBe('250')
    expect(codes[1]).toBe('250')
    expect(codes[2]).toMatch(/^5/)
    expect(codes.slice(3)).toEqual(['250', '354'])
    c.socket.destroy()
  })

  it('a pipelined STARTTLS gets its 220 at once and the TLS session starts; over TLS a group is one read too', async () => {
    const socket = net.connect({ port: relay.port, host: '127.0.0.1' })
    const c = new Reads(socket)
    await c.replies(0, 1)
    const from = c.reads.length
    socket.write('EHLO client.test\r\nSTARTTLS\r\n')
    const got = (await c.replies(from, 2)).join('')
    expect(got).toMatch(/^250-/)
    expect(got).toMatch(/\r\n220 /)
    const { secure, t } = await tlsOver(socket)
    expect(await sendGroup(t, ['a@dest.test', 'b@dest.test'])).toEqual(['250', '250', '250', '354'])
    await sendBody(t, 'over tls')
    secure.destroy()
  })
})

describe('a client that half-closes (FIN) after its last command', () => {
  /** Everything the relay sends until it closes its side, and how long after our FIN that was. */
  const untilClosed = (c: Reads) =>
    new Promise<{ text: string; ms: number }>((resolve) => {
      const finAt = Date.now()
      c.socket.once('end', () => resolve({ text: c.reads.join(''), ms: Date.now() - finAt }))
    })

  it('gets the 250 for its message and the 221 (printf ... | nc -N), and the message is delivered once', async () => {
    const c = await connect()
    expect(await sendGroup(c, ['half@dest.test'])).toEqual(['250', '250', '354'])
    const closed = untilClosed(c)
    c.socket.end(`${body('half closed').replace(/\.\r\n$/, '')}.\r\nQUIT\r\n`) // the message's end and QUIT, then FIN
    const { text } = await closed
    expect(text).toMatch(/\r\n250 2\.0\.0 Ok: queued as \w+\r\n221 /)
    await eventually(() => rx.messages.some((m) => m.raw.toString().includes('Subject: half closed')), 10_000)
    expect(rx.messages.filter((m) => m.raw.toString().includes('Subject: half closed'))).toHaveLength(1)
  })

  it('without QUIT: the replies to what it sent, then the relay closes its side at once', async () => {
    const c = await connect()
    const closed = untilClosed(c)
    c.socket.end(`${group('app@client.test', ['half2@dest.test'])}`)
    const { text, ms } = await closed
    expect(text.split('\r\n').filter((l) => /^\d{3} /.test(l)).map((l) => l.slice(0, 3))).toEqual(['220', '250', '250', '250', '354'].slice(0, 5))
    expect(ms).toBeLessThan(3000)
    // The message it never finished is not queued.
    await new Promise((r) => setTimeout(r, 300))
    expect(relay.logs.filter((l) => l.event === 'accepted' && JSON.stringify(l).includes('half2@dest.test'))).toEqual([])
  })

  it('inside TLS after STARTTLS the same: the 250 and the 221 before the relay closes', async () => {
    const socket = net.connect({ port: relay.port, host: '127.0.0.1' })
    const c = new Reads(socket)
    await c.replies(0, 1)
    expect(await c.command('EHLO client.test')).toMatch(/STARTTLS/)
    expect(await c.command('STARTTLS')).toMatch(/^220 /)
    const { secure, t } = await tlsOver(socket)
    expect(await sendGroup(t, ['half-tls@dest.test'])).toEqual(['250', '250', '354'])
    const closed = untilClosed(t)
    secure.end(`${body('half closed in tls').replace(/\.\r\n$/, '')}.\r\nQUIT\r\n`)
    const { text, ms } = await closed
    expect(text).toMatch(/\r\n250 2\.0\.0 Ok: queued as \w+\r\n221 /)
    expect(ms).toBeLessThan(3000)
    await eventually(() => rx.messages.some((m) => m.raw.toString().includes('Subject: half closed in tls')), 10_000)
  })

  it('a FIN right after connecting: the greeting, then the close, without waiting for a timeout', async () => {
    const socket = net.connect({ port: relay.port, host: '127.0.0.1' })
    const c = new Reads(socket)
    const closed = untilClosed(c)
    socket.end()
    const { ms } = await closed
    expect(ms).toBeLessThan(3000)
  })
})

