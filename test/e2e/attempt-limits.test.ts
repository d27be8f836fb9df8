// One delivery attempt is bounded in hosts and in time: a domain publishing many MX hosts gets at
// most delivery.maxHostsPerAttempt (5, Postfix's smtp_mx_address_limit) connections per attempt, best
// first; a host that answers a byte at a time (never idle long enough for commandTimeout) is cut
// off at delivery.attemptTimeout and the message deferred, whether it trickles its greeting or
// its reply to the message. Recipients of one domain go in transactions of at most
// delivery.maxRecipientsPerTransaction; those a server refuses with "452 too many recipients" go in
// the next transaction of the same attempt; a domain no host of which answers is tried once for all.
import net from 'node:net'
import { SMTPServer } from 'smtp-server'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { listenRaw } from '../harness/raw-server.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'

const MANY = 8 // MX hosts of many.test: mx1 (preference 10) … mx8 (80), on 127.0.3.1 … 127.0.3.8
let dns: TestDns
let relay: RelayProcess
const servers: net.Server[] = []
const connectedTo: string[] = [] // local address of every connection made to a 421 host
const closed = { greeting: 0, reply: 0 } // trickling connections the relay closed
const transactions: Record<string, string[][]> = { 'cap.test': [], 'bulk.test': [] } // recipients of each message taken
let busyConnections = 0 // to busy.test, whose host answers every connection with 421

/** An SMTP server on `host`:`port` taking every message; `cap`: 452 4.5.3 for each RCPT past that many. */
async function recorder(host: string, port: number, domain: string, cap?: number): Promise<number> {
  const server = new SMTPServer({
    authOptional: true,
    disableReverseLookup: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onRcptTo(_address, session, cb) {
      if (cap !== undefined && session.envelope.rcptTo.length >= cap) return cb(Object.assign(new Error('4.5.3 Too many recipients'), { responseCode: 452 }))
      cb()
    },
    onData(stream, session, cb) {
      stream.resume()
      stream.on('end', () => {
        transactions[domain]!.push(session.envelope.rcptTo.map((r) => r.address))
        cb()
      })
    },
  })
  servers.push(server.server)
  await new Promise<void>((resolve) => server.listen(port, host, resolve))
  return (server.server.address() as net.AddressInfo).port
}

const listen = (host: string, port: number, onConnection: (sock: net.Socket) => void) => listenRaw(servers, host, port, onConnection)

/** Writes `text` forever, one byte every 200 ms, until the client closes; then counts the close. */
function trickle(sock: net.Socket, text: string, which: keyof typeof closed): void {
  let i = 0
  const timer = setInterval(() => sock.write(text[i++ % text.length]!), 200)
  sock.on('close', () => {
    clearInterval(timer)
    closed[which]++
  })
}

/** A minimal SMTP server: takes one message and answers its end with a never-ending multi-line 250. */
function trickleAfterData(sock: net.Socket): void {
  sock.write('220 reply.trickle.test ESMTP\r\n')
  let inData = false
  let buffered = ''
  sock.on('data', (chunk) => {
    buffered += chunk.toString('latin1')
    for (let nl = buffered.indexOf('\r\n'); nl >= 0; nl = buffered.indexOf('\r\n')) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 2)
      if (inData) {
        if (line === '.') {
          inData = false
          trickle(sock, '250-still thinking\r\n', 'reply')
        }
        continue
      }
      const verb = line.slice(0, 4).toUpperCase()
      if (verb === 'EHLO') sock.write('250-reply.trickle.test\r\n250 8BITMIME\r\n')
      else if (verb === 'DATA') {
        inData = true
        sock.write('354 go ahead\r\n')
      } else if (verb === 'QUIT') sock.end('221 bye\r\n')
      else sock.write('250 ok\r\n')
    }
  })
}

beforeAll(async () => {
  let port = 0
  for (let i = 1; i <= MANY; i++) {
    port = await listen(`127.0.3.${i}`, port, (sock) => {
      connectedTo.push(sock.localAddress!)
      sock.end('421 4.3.2 mx busy\r\n')
    })
  }
  await listen('127.0.3.21', port, (sock) => trickle(sock, '220-hello, slowly\r\n', 'greeting'))
  await listen('127.0.3.22', port, trickleAfterData)
  await recorder('127.0.3.31', port, 'cap.test', 3)
  await recorder('127.0.3.32', port, 'bulk.test')
  await listen('127.0.3.33', port, (sock) => {
    busyConnections++
    sock.end('421 4.3.2 busy\r\n')
  })
  dns = await startDns({
    'many.test': { MX: Array.from({ length: MANY }, (_, i) => ({ exchange: `mx${i + 1}.many.test`, priority: (i + 1) * 10 })) },
    ...Object.fromEntries(Array.from({ length: MANY }, (_, i) => [`mx${i + 1}.many.test`, { A: [`127.0.3.${i + 1}`] }])),
    'greeting.trickle.test': { A: ['127.0.3.21'] },
    'reply.trickle.test': { A: ['127.0.3.22'] },
    // 30 MX names, none of which exists.
    'wide.test': { MX: Array.from({ length: 30 }, (_, i) => ({ exchange: `mx${i + 1}.wide.test`, priority: i + 1 })) },
    'cap.test': { A: ['127.0.3.31'] },
    'bulk.test': { A: ['127.0.3.32'] },
    'busy.test': { A: ['127.0.3.33'] },
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: {
        port,
        // Idle timeouts far above the attempt's limit: only attemptTimeout can end a trickle.
        connectTimeout: '20s',
        commandTimeout: '20s',
        attemptTimeout: '3s',
        maxRecipientsPerTransaction: 5,
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

const msg = (subject: string) => `From: a@sender.test\r\nTo: x@y.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\n\r\nbody\r\n`
const deferral = (recipient: string, timeoutMs: number): Promise<LogLine> => relay.waitForLog((l) => l.event === 'deferred' && l.recipient === recipient, timeoutMs)

describe('the bounds of one delivery attempt', () => {
  it('tries at most 5 of 8 MX hosts, the 5 best, then defers', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@many.test'], data: msg('many mx') })
    const ev = await deferral('u@many.test', 15_000)
    expect(ev.response).toMatch(/421 4\.3\.2 mx busy/)
    expect([...connectedTo].sort()).toEqual(['127.0.3.1', '127.0.3.2', '127.0.3.3', '127.0.3.4', '127.0.3.5'])
  })

  it('looks up at most 25 of 30 MX names that do not exist, best first', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@wide.test'], data: msg('wide mx') })
    const ev = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'u@wide.test', 15_000)
    expect(ev.response).toMatch(/5\.4\.4 No address found for the MX hosts of wide\.test/)
    const asked = new Set(dns.queries.filter((q) => q.name.endsWith('.wide.test')).map((q) => q.name))
    expect([...asked].sort()).toEqual(Array.from({ length: 25 }, (_, i) => `mx${i + 1}.wide.test`).sort())
  })

  it('a host trickling its greeting is cut off at attemptTimeout and the message deferred', async () => {
    const sent = Date.now()
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@greeting.trickle.test'], data: msg('trickled greeting') })
    const ev = await deferral('u@greeting.trickle.test', 15_000)
    expect(Date.now() - sent).toBeLessThan(12_000)
    expect(ev.response).toMatch(/ran out of time/)
    await expect.poll(() => closed.greeting, { timeout: 5_000 }).toBe(1)
  })

  it('a host trickling its reply to the message is cut off at attemptTimeout and the message deferred', async () => {
    const sent = Date.now()
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@reply.trickle.test'], data: msg('trickled reply') })
    const ev = await deferral('u@reply.trickle.test', 15_000)
    expect(Date.now() - sent).toBeLessThan(12_000)
    expect(ev.response).toMatch(/ran out of time/)
    await expect.poll(() => closed.reply, { timeout: 5_000 }).toBe(1)
  })

  const twelve = (domain: string) => Array.from({ length: 12 }, (_, i) => `r${i + 1}@${domain}`)
  const outcomes = (name: string, domain: string) => relay.logs.filter((l) => l.event === name && String(l.recipient).endsWith(`@${domain}`)).length

  it('12 recipients of one domain go in transactions of at most maxRecipientsPerTransaction (5): 5, 5, 2', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: twelve('bulk.test'), data: msg('twelve to bulk') })
    await eventually(() => outcomes('delivered', 'bulk.test') === 12, 10_000, 'twelve delivered')
    expect(transactions['bulk.test']!.map((t) => t.length)).toEqual([5, 5, 2])
    expect(transactions['bulk.test']!.flat().sort()).toEqual(twelve('bulk.test').sort())
  })

  it('recipients a server refuses with 452 4.5.3 too many recipients go in the next transaction at once, not after a retry', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: twelve('cap.test'), data: msg('twelve to cap') })
    await eventually(() => outcomes('delivered', 'cap.test') === 12, 10_000, 'twelve delivered')
    expect(outcomes('deferred', 'cap.test')).toBe(0)
    expect(transactions['cap.test']!.every((t) => t.length <= 3)).toBe(true)
    expect(transactions['cap.test']!.flat().sort()).toEqual(twelve('cap.test').sort())
  })

  it('a domain whose host answers nobody is tried once for all its recipients, not once per transaction', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: twelve('busy.test'), data: msg('twelve to busy') })
    await eventually(() => outcomes('deferred', 'busy.test') === 12, 10_000, 'twelve deferred')
    expect(busyConnections).toBe(1)
    expect(relay.logs.find((l) => l.event === 'deferred' && l.recipient === 'r12@busy.test')!.response).toMatch(/421 4\.3\.2 busy/)
  })
})
