// PROXY protocol on listeners (core/smtp/proxy.ts), against the built relay over real sockets.
// The test plays the TCP load balancer: it connects from a trusted address (127.0.0.1, or
// 127.0.0.20 inside the trusted block 127.0.0.16/28) and writes a PROXY v1 line or a v2 binary
// header claiming a client such as 203.0.113.7. That address must then be the one the relay uses
// everywhere: the Received header, the 'accepted' delivery event log line, relay-acl trustedNetworks,
// SPF (mail-auth) and rate limits (rate-limit). An untrusted peer (127.0.0.5) that sends a PROXY
// header is refused and not believed; a trusted peer that sends none is dropped; v2 LOCAL (a health
// check) keeps the balancer's own address; on an implicit-TLS listener the header precedes TLS.
// The header encoders below follow the spec on their own (they share no code with the relay).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { Duplex } from 'node:stream'
import tls from 'node:tls'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { eventually, runCli, startRelay, tempDir, type LogLine, type RelayProcess } from '../harness/relay.js'

const BALANCER = '127.0.0.1' // trusted by address
const BALANCER2 = '127.0.0.20' // trusted through the block 127.0.0.16/28
const STRANGER = '127.0.0.5' // not trusted
const HEADER_TIMEOUT_MS = 3000 // smtp.socketTimeout below: the header wait is min(10 s, socketTimeout)

let ca: TestCa
let dns: TestDns
let mx: TestReceiver
let relay: RelayProcess
let tlsPort: number
const sockets = new Set<net.Socket>()

// ---- PROXY headers, written from the spec (haproxy.org/download/2.9/doc/proxy-protocol.txt) ----

function v1(client: string, opts: { clientPort?: number; family?: string } = {}): string {
  const family = opts.family ?? (net.isIPv6(client) ? 'TCP6' : 'TCP4')
  const server = family === 'TCP6' ? '2001:db8::25' : '192.0.2.25'
  return `PROXY ${family} ${client} ${server} ${opts.clientPort ?? 40123} 25\r\n`
}

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])

function ipBytes(ip: string): Buffer {
  if (net.isIPv4(ip)) return Buffer.from(ip.split('.').map(Number))
  const [head, tail] = ip.split('::') as [string, string | undefined]
  const h = head ? head.split(':') : []
  const t = tail ? tail.split(':') : []
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t]
  const out = Buffer.alloc(16)
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2))
  return out
}

/** A v2 header: PROXY with the client's address (and optional TLVs after it), or LOCAL. */
function v2(client: string | 'LOCAL', opts: { tlvs?: Buffer; version?: number; clientPort?: number } = {}): Buffer {
  const verCmd = ((opts.version ?? 2) << 4) | (client === 'LOCAL' ? 0 : 1)
  if (client === 'LOCAL') return Buffer.concat([SIGNATURE, Buffer.from([verCmd, 0x00, 0x00, 0x00])])
  const six = net.isIPv6(client)
  const ports = Buffer.alloc(4)
  ports.writeUInt16BE(opts.clientPort ?? 40123, 0)
  ports.writeUInt16BE(25, 2)
  const body = Buffer.concat([ipBytes(client), ipBytes(six ? '2001:db8::25' : '192.0.2.25'), ports, opts.tlvs ?? Buffer.alloc(0)])
  const len = Buffer.alloc(2)
  len.writeUInt16BE(body.length)
  return Buffer.concat([SIGNATURE, Buffer.from([verCmd, six ? 0x21 : 0x11]), len, body])
}

/** TLVs as a load balancer adds them: PP2_TYPE_AUTHORITY (0x02) and PP2_TYPE_NOOP (0x04). */
function tlvs(): Buffer {
  const tlv = (type: number, value: Buffer) => Buffer.concat([Buffer.from([type, value.length >> 8, value.length & 0xff]), value])
  return Buffer.concat([tlv(0x02, Buffer.from('mail.example.test')), tlv(0x04, Buffer.alloc(3))])
}

// ---- a small SMTP client on any socket (the header goes first, then maybe TLS, then SMTP) ----

interface Client {
  socket: net.Socket
  read(timeoutMs?: number): Promise<string>
  command(line: string | Buffer, timeoutMs?: number): Promise<string>
  closed: Promise<void>
  isClosed(): boolean
}

function smtpOn(socket: net.Socket): Client {
  sockets.add(socket)
  let buffer = ''
  let lines: string[] = []
  const replies: string[] = []
  const waiters: ((r: string | Error) => void)[] = []
  let ended = false
  socket.on('error', () => undefined)
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('latin1')
    let i: number
    while ((i = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, i).replace(/\r$/, '')
      buffer = buffer.slice(i + 1)
      lines.push(line)
      if (/^\d{3}-/.test(line)) continue
      const reply = lines.join('\r\n')
      lines = []
      const w = waiters.shift()
      if (w) w(reply)
      else replies.push(reply)
    }
  })
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      ended = true
      for (const w of waiters.splice(0)) w(new Error(`connection closed${buffer ? ` (partial: ${JSON.stringify(buffer)})` : ''}`))
      resolve()
    }),
  )
  const read = (timeoutMs = 5000) => {
    const queued = replies.shift()
    if (queued !== undefined) return Promise.resolve(queued)
    if (ended) return Promise.reject(new Error('connection closed'))
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1)
        reject(new Error(`no reply within ${timeoutMs} ms`))
      }, timeoutMs)
      const w = (r: string | Error) => {
        clearTimeout(timer)
        if (r instanceof Error) reject(r)
        else resolve(r)
      }
      waiters.push(w)
    })
  }
  return {
    socket,
    read,
    command(line, timeoutMs) {
      const p = read(timeoutMs)
      socket.write(typeof line === 'string' ? line + '\r\n' : line)
      return p
    },
    closed,
    isClosed: () => ended,
  }
}

function connect(port: number, from = BALANCER): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from })
    sockets.add(s)
    s.once('connect', () => resolve(s))
    s.once('error', reject)
  })
}

/** Connects as the balancer, writes `header` (in pieces when asked), and reads the greeting. */
async function viaBalancer(header: string | Buffer, opts: { port?: number; from?: string; pieces?: number[] } = {}): Promise<{ client: Client; greeting: string }> {
  const socket = await connect(opts.port ?? relay.port, opts.from)
  const client = smtpOn(socket)
  const bytes = Buffer.from(header)
  let at = 0
  for (const cut of opts.pieces ?? []) {
    socket.write(bytes.subarray(at, cut))
    at = cut
    await sleep(50)
  }
  socket.write(bytes.subarray(at))
  return { client, greeting: await client.read() }
}

/** EHLO, MAIL, RCPT, DATA, message, QUIT; stops at the first 4xx/5xx. Returns every reply. */
async function transaction(client: Client, from: string, to: string, subject: string): Promise<string[]> {
  const replies: string[] = []
  const data = `From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W+/g, '-')}@client.test>\r\n\r\nhello\r\n`
  for (const step of ['EHLO client.test', `MAIL FROM:<${from}>`, `RCPT TO:<${to}>`, 'DATA', dotStuff(data)]) {
    const reply = await client.command(step)
    replies.push(reply)
    if (/^[45]/.test(reply)) break
  }
  if (!client.isClosed()) await client.command('QUIT').catch(() => undefined)
  return replies
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The message the test MX received with this subject. */
async function received(subject: string): Promise<string> {
  const m = await eventually(() => mx.messages.find((x) => x.raw.toString().includes(`Subject: ${subject}\r\n`)), 10_000, `delivery of "${subject}"`)
  return m.raw.toString()
}

/** The relay's own Received field (the first one), unfolded. */
const ourReceived = (raw: string) => /^Received: ([^\r\n]*(\r\n[ \t][^\r\n]*)*)/m.exec(raw)![1]!.replace(/\r\n[ \t]+/g, ' ')

const logged = (match: (l: LogLine) => boolean, ms = 5000) => relay.waitForLog(match, ms)

beforeAll(async () => {
  ca = makeCa()
  const cert = ca.issue(['relay.test'])
  mx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
  dns = await startDns({
    'dest.test': { A: ['127.0.0.2'] },
    'local.test': { A: ['127.0.0.2'] },
    'spf.test': { TXT: ['v=spf1 ip4:203.0.113.7 ip4:203.0.113.9 -all'] },
  })
  relay = await startRelay({
    config: {
      listen: [
        { host: '127.0.0.1', port: 0, role: 'mx', tls: 'none', proxyProtocol: [BALANCER, '127.0.0.16/28'] },
        { host: '127.0.0.1', port: 0, role: 'mx', tls: 'implicit', proxyProtocol: [BALANCER] },
      ],
      tls: { cert: cert.cert, key: cert.key },
      localDomains: ['local.test'],
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, mtaSts: { enabled: false }, delayWarning: false },
      smtp: { reverseLookup: false, socketTimeout: `${HEADER_TIMEOUT_MS}ms` },
      log: { level: 'debug' },
      plugins: [
        // Loopback clients (the balancer's own health checks, the untrusted peer) are exempt; proxied clients are not.
        ['rate-limit', { perIp: { connectionsPerMinute: 2 }, exempt: ['127.0.0.0/8'] }],
        ['mail-auth', { spf: { fail: 'reject' } }],
        // Only proxied clients from this block may relay; the balancer's own address may not.
        ['relay-acl', { trustedNetworks: ['203.0.113.0/24'] }],
      ],
    },
  })
  tlsPort = relay.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on') && l.tls === 'implicit')!.port as number
})

afterAll(async () => {
  for (const s of sockets) s.destroy()
  await relay?.stop()
  await Promise.all([dns?.close(), mx?.close()])
})

describe('PROXY protocol from a trusted balancer', () => {
  it('v1: the client address of the header is the session address (Received, log, relay-acl, SPF pass)', async () => {
    const { client, greeting } = await viaBalancer(v1('203.0.113.7', { clientPort: 50007 }))
    expect(greeting).toMatch(/^220 relay\.test ESMTP/)
    // relay-acl trusts 203.0.113.0/24 only: relaying to dest.test works only if the relay believed the header.
    const replies = await transaction(client, 'alice@spf.test', 'bob@dest.test', 'proxy v1')
    expect(replies.at(-1)).toMatch(/^250 2\.0\.0 Ok: queued as /)
    const raw = await received('proxy v1')
    expect(ourReceived(raw)).toMatch(/^from client\.test \(\[203\.0\.113\.7\]\) by relay\.test \(Relay\) with ESMTP id /)
    expect(raw).not.toContain('[127.0.0.1]')
    // SPF was evaluated for 203.0.113.7 (the only address spf.test allows), not for the balancer.
    expect(raw).toMatch(/Authentication-Results: relay\.test;[\s\S]*spf=pass/)
    const accepted = await logged((l) => l.msg === 'accepted' && l.event === 'accepted' && (l.recipients as string[])?.includes('bob@dest.test') && l.client === '203.0.113.7')
    expect(accepted.client).toBe('203.0.113.7')
  })

  it('v2 (binary, with TLVs, split across TCP segments): IPv4 and IPv6 clients', async () => {
    const header = v2('203.0.113.8', { tlvs: tlvs() })
    const { client, greeting } = await viaBalancer(header, { pieces: [5, 14, 20] }) // inside the signature, the length, the addresses
    expect(greeting).toMatch(/^220 /)
    expect((await transaction(client, 'carol@other.test', 'bob@dest.test', 'proxy v2 ipv4')).at(-1)).toMatch(/^250 2\.0\.0 /)
    expect(ourReceived(await received('proxy v2 ipv4'))).toMatch(/^from client\.test \(\[203\.0\.113\.8\]\) by relay\.test/)

    // An IPv6 client (not in relay-acl's block): local mail only, and the Received field says so.
    const six = await viaBalancer(v2('2001:db8:0:0::7'), { from: BALANCER2 })
    expect(six.greeting).toMatch(/^220 /)
    expect(await six.client.command('EHLO client6.test')).toMatch(/^250/)
    expect(await six.client.command('MAIL FROM:<dave@other.test>')).toMatch(/^250/)
    expect(await six.client.command('RCPT TO:<bob@dest.test>')).toMatch(/^550 5\.7\.1 Relaying denied/)
    six.client.socket.destroy()
    const local = await viaBalancer(v2('2001:db8::7'), { from: BALANCER2 })
    expect((await transaction(local.client, 'dave@other.test', 'someone@local.test', 'proxy v2 ipv6')).at(-1)).toMatch(/^250 2\.0\.0 /)
    // RFC 5321 §4.1.3: an IPv6 address literal is [IPv6:…].
    expect(ourReceived(await received('proxy v2 ipv6'))).toMatch(/^from client\.test \(\[IPv6:2001:db8::7\]\) by relay\.test/)
  })

  it('relay-acl and SPF judge the proxied address: another client through the same balancer is refused', async () => {
    const { client } = await viaBalancer(v1('198.51.100.9'))
    expect(await client.command('EHLO client.test')).toMatch(/^250/)
    // SPF of spf.test allows 203.0.113.7 only: the refusal names the proxied client.
    expect(await client.command('MAIL FROM:<alice@spf.test>')).toMatch(/^550 5\.7\.1 SPF fail: spf\.test does not designate 198\.51\.100\.9 /)
    expect(await client.command('MAIL FROM:<erin@other.test>')).toMatch(/^250/)
    expect(await client.command('RCPT TO:<bob@dest.test>')).toMatch(/^550 5\.7\.1 Relaying denied/)
    expect(await client.command('RCPT TO:<someone@local.test>')).toMatch(/^250/)
    client.socket.destroy()
  })

  it('rate limits count the proxied address, not the balancer', async () => {
    const first = await viaBalancer(v1('203.0.113.20'))
    const second = await viaBalancer(v2('203.0.113.20'))
    expect([first.greeting, second.greeting]).toEqual([expect.stringMatching(/^220 /), expect.stringMatching(/^220 /)])
    const third = await viaBalancer(v1('203.0.113.20'))
    expect(third.greeting).toMatch(/^421 4\.7\.0 relay\.test Error: too many connections per minute from 203\.0\.113\.20$/)
    await third.client.closed
    const hit = await logged((l) => l.limit === 'perIp.connectionsPerMinute' && l.key === '203.0.113.20')
    expect(hit.client).toBe('203.0.113.20')
    // Another client through the same balancer has its own budget.
    expect((await viaBalancer(v1('203.0.113.21'))).greeting).toMatch(/^220 /)
    for (const c of [first, second]) c.client.socket.destroy()
  })

  it('v2 LOCAL (a health check) and v1 UNKNOWN keep the balancer\'s own address', async () => {
    const local = await viaBalancer(v2('LOCAL'))
    expect(local.greeting).toMatch(/^220 /)
    expect(await local.client.command('EHLO lb.test')).toMatch(/^250/)
    expect(await local.client.command('MAIL FROM:<probe@other.test>')).toMatch(/^250/)
    // 127.0.0.1 is not in relay-acl's block: the session really is the balancer's.
    expect(await local.client.command('RCPT TO:<bob@dest.test>')).toMatch(/^550 5\.7\.1 Relaying denied/)
    expect(await local.client.command('QUIT')).toMatch(/^221 /)

    const unknown = await viaBalancer('PROXY UNKNOWN\r\n')
    expect((await transaction(unknown.client, 'probe@other.test', 'someone@local.test', 'proxy unknown')).at(-1)).toMatch(/^250 2\.0\.0 /)
    expect(ourReceived(await received('proxy unknown'))).toMatch(/^from client\.test \(\[127\.0\.0\.1\]\) by relay\.test/)
  })

  it('implicit TLS: the header comes before the handshake, and the session is the proxied client\'s', async () => {
    const socket = await connect(tlsPort)
    socket.write(v2('203.0.113.9'))
    const secure = tls.connect({ socket, ca: ca.caPem, servername: 'relay.test' })
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve)
      secure.once('error', reject)
    })
    expect(secure.authorized).toBe(true)
    const client = smtpOn(secure)
    expect(await client.read()).toMatch(/^220 relay\.test ESMTP/)
    expect((await transaction(client, 'alice@spf.test', 'bob@dest.test', 'proxy tls')).at(-1)).toMatch(/^250 2\.0\.0 /)
    const raw = await received('proxy tls')
    expect(ourReceived(raw)).toMatch(/^from client\.test \(\[203\.0\.113\.9\]\) \(using TLSv1\.[23] with cipher \S+\) by relay\.test/)
    expect(raw).toMatch(/spf=pass/)

    // v1 this time, and the header in the same write as the ClientHello (bytes after the header
    // must reach the TLS layer).
    const raw2 = await connect(tlsPort)
    let first = true
    const glued = new Duplex({
      write(chunk: Buffer, _enc, cb) {
        raw2.write(first ? Buffer.concat([Buffer.from(v1('203.0.113.10')), chunk]) : chunk, cb)
        first = false
      },
      read() {},
    })
    raw2.on('data', (d: Buffer) => glued.push(d))
    raw2.on('end', () => glued.push(null))
    const secure2 = tls.connect({ socket: glued, ca: ca.caPem, servername: 'relay.test' })
    await new Promise<void>((resolve, reject) => {
      secure2.once('secureConnect', resolve)
      secure2.once('error', reject)
    })
    const client2 = smtpOn(secure2 as unknown as net.Socket)
    expect(await client2.read()).toMatch(/^220 /)
    expect((await transaction(client2, 'carol@other.test', 'bob@dest.test', 'proxy tls glued')).at(-1)).toMatch(/^250 2\.0\.0 /)
    expect(ourReceived(await received('proxy tls glued'))).toMatch(/^from client\.test \(\[203\.0\.113\.10\]\) \(using TLS/)

    // A trusted peer that starts TLS without a header: the ClientHello is no PROXY header.
    const bare = await connect(tlsPort)
    const attempt = tls.connect({ socket: bare, ca: ca.caPem, servername: 'relay.test' })
    const outcome = await new Promise<string>((resolve) => {
      attempt.once('secureConnect', () => resolve('handshake completed'))
      attempt.once('error', (err) => resolve(`error: ${err.message}`))
      attempt.once('close', () => resolve('closed'))
    })
    expect(outcome).not.toBe('handshake completed')
    await logged((l) => l.msg === `connection from trusted proxy ${BALANCER} closed: not a PROXY protocol header`)
  })
})

describe('PROXY protocol: who may send it, and what happens without it', () => {
  it('an untrusted peer that sends a PROXY line gets 421 and is not believed (logged)', async () => {
    const { client, greeting } = await connectRaw(relay.port, '127.0.0.1', 5000, undefined, STRANGER)
    expect(greeting).toMatch(/^220 /)
    expect(await client.command('PROXY TCP4 203.0.113.7 192.0.2.25 40123 25')).toMatch(/^421 4\.7\.0 relay\.test PROXY header not accepted from 127\.0\.0\.5, closing connection$/)
    await client.closed
    await logged((l) => l.level === 40 && l.msg === `PROXY header from ${STRANGER} refused: not a trusted proxy`)

    // Sent at once, before the greeting (as a balancer would): refused as well, never honoured.
    const early = await connect(relay.port, STRANGER)
    const c = smtpOn(early)
    early.write(v1('203.0.113.7'))
    // Depending on timing the greeting goes out first or not at all; either way a 421 ends it.
    const replies: string[] = []
    for (let i = 0; i < 3 && !c.isClosed(); i++) replies.push(await c.read().catch((e: Error) => e.message))
    await c.closed
    expect(replies.filter((r) => /^421 /.test(r))).toHaveLength(1)
    expect(replies.filter((r) => /^250 /.test(r))).toEqual([])

    // A v2 header from an untrusted peer reads as blank lines and QUIT: the connection ends.
    const bin = await connectRaw(relay.port, '127.0.0.1', 5000, undefined, STRANGER)
    bin.client.send(v2('203.0.113.7'))
    await Promise.race([bin.client.closed, sleep(5000).then(() => Promise.reject(new Error('still open after a v2 header')))])

    // Without a header the stranger is served as itself: its own address, no relaying.
    const plain = await connectRaw(relay.port, '127.0.0.1', 5000, undefined, STRANGER)
    expect(await plain.client.command('EHLO stranger.test')).toMatch(/^250/)
    expect(await plain.client.command('MAIL FROM:<x@other.test>')).toMatch(/^250/)
    expect(await plain.client.command('RCPT TO:<bob@dest.test>')).toMatch(/^550 5\.7\.1 Relaying denied/)
    expect(await plain.client.command('RCPT TO:<someone@local.test>')).toMatch(/^250/)
    expect(await plain.client.command('DATA')).toMatch(/^354/)
    const reply = plain.client.read()
    plain.client.send(dotStuff('From: x@other.test\r\nSubject: stranger\r\n\r\nhi\r\n'))
    expect(await reply).toMatch(/^250 2\.0\.0 /)
    plain.client.close()
    expect(ourReceived(await received('stranger'))).toMatch(/^from stranger\.test \(\[127\.0\.0\.5\]\) by relay\.test/)
  })

  it('a trusted peer that sends SMTP instead of a header is dropped with 421 (logged)', async () => {
    const socket = await connect(relay.port, BALANCER2)
    const client = smtpOn(socket)
    expect(await client.command('EHLO client.test')).toBe('421 4.7.0 relay.test PROXY protocol header required')
    await client.closed
    const line = await logged((l) => l.msg === `connection from trusted proxy ${BALANCER2} closed: not a PROXY protocol header`)
    expect(line.level).toBe(50)
  })

  it('malformed headers from a trusted peer: the connection is closed, the reason logged', async () => {
    const cases: { bytes: string | Buffer; reason: string }[] = [
      { bytes: v2('203.0.113.7', { version: 3 }), reason: 'PROXY v2 header: unsupported version 3' },
      { bytes: 'PROXY TCP4 203.0.113.7 192.0.2.25 40123\r\n', reason: 'malformed PROXY v1 header' },
      { bytes: 'PROXY TCP6 203.0.113.7 192.0.2.25 40123 25\r\n', reason: 'PROXY v1 header: addresses are not TCP6' },
      // The spec (2.1): "Leading zeroes are not permitted" in a port, nor a port above 65535.
      { bytes: 'PROXY TCP4 203.0.113.7 192.0.2.25 40123 025\r\n', reason: 'PROXY v1 header: bad port' },
      { bytes: 'PROXY TCP4 203.0.113.7 192.0.2.25 40123 65536\r\n', reason: 'PROXY v1 header: bad port' },
      { bytes: `PROXY TCP4 203.0.113.7 192.0.2.25 40123 25${' '.repeat(120)}\r\n`, reason: 'PROXY v1 header longer than 107 bytes' },
      { bytes: Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])]), reason: 'PROXY v2 header longer than 4096 bytes' },
    ]
    for (const { bytes, reason } of cases) {
      const from = relay.logs.length
      const socket = await connect(relay.port)
      const client = smtpOn(socket)
      socket.write(bytes)
      await Promise.race([client.closed, sleep(5000).then(() => Promise.reject(new Error(`still open after: ${reason}`)))])
      await eventually(() => relay.logs.slice(from).find((l) => l.msg === `connection from trusted proxy ${BALANCER} closed: ${reason}`), 5000, reason)
    }
  })

  it('a trusted peer that sends nothing is closed after the header timeout (logged); a bare TCP check is not an error', async () => {
    const started = Date.now()
    const socket = await connect(relay.port)
    const client = smtpOn(socket)
    await Promise.race([client.closed, sleep(HEADER_TIMEOUT_MS + 5000).then(() => Promise.reject(new Error('not closed')))])
    const took = Date.now() - started
    expect(took).toBeGreaterThanOrEqual(HEADER_TIMEOUT_MS - 100)
    expect(took).toBeLessThan(HEADER_TIMEOUT_MS + 4000)
    await logged((l) => l.level === 50 && l.msg === `connection from trusted proxy ${BALANCER} closed: no complete PROXY header within ${HEADER_TIMEOUT_MS} ms`)

    // A TCP health check: connect, close. Debug level only.
    const from = relay.logs.length
    const probe = await connect(relay.port, BALANCER2)
    probe.end()
    await logged((l) => l.msg === 'connection from a trusted proxy closed before sending anything' && l.proxy === BALANCER2)
    expect(relay.logs.slice(from).filter((l) => l.level >= 50 && l.proxy === BALANCER2)).toEqual([])
  })
})

describe('listen[].proxyProtocol in the config', () => {
  it('entries are IP addresses or CIDR blocks; anything else stops the start naming the entry', () => {
    const dir = tempDir('relay-proxy-config-')
    const file = path.join(dir, 'relay.config.json')
    const listen = [{ host: '127.0.0.1', port: 0, role: 'mx', proxyProtocol: ['10.0.0.0/8', '2001:db8::/32', '192.0.2.7', 'lb.example.com', '10.0.0.0/33'] }]
    fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', listen, dataDir: path.join(dir, 'data'), log: { level: 'silent' } }))
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/^ {2}listen\[0\]\.proxyProtocol\[3\]: expected an IP address or CIDR block, like '10\.0\.0\.0\/8' or '2001:db8::\/32'$/m)
    expect(r.stderr).toMatch(/^ {2}listen\[0\]\.proxyProtocol\[4\]: expected an IP address or CIDR block/m)
    expect(r.stderr).not.toMatch(/proxyProtocol\[[012]\]/)

    listen[0]!.proxyProtocol = ['10.0.0.0/8', '2001:db8::/32', '192.0.2.7']
    fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', listen, dataDir: path.join(dir, 'data'), log: { level: 'silent' } }))
    const ok = runCli(['check-config', '--config', file])
    expect(ok.code, ok.stderr).toBe(0)
  })
})
