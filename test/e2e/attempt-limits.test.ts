// One delivery attempt is bounded in hosts and in time: a domain publishing many MX hosts gets at
// most delivery.maxHostsPerAttempt (5, Postfix's smtp_mx_address_limit) connections per attempt, best
// first; a host that answers a byte at a time (never idle long enough for commandTimeout) is cut
// off at delivery.attemptTimeout and the message deferred, whether it trickles its greeting or
// its reply to the message.
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { sendMail } from '../harness/smtp-client.js'
import { startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'

const MANY = 8 // MX hosts of many.test: mx1 (preference 10) … mx8 (80), on 127.0.3.1 … 127.0.3.8
let dns: TestDns
let relay: RelayProcess
const servers: net.Server[] = []
const connectedTo: string[] = [] // local address of every connection made to a 421 host
const closed = { greeting: 0, reply: 0 } // trickling connections the relay closed

/** A server on `host`:`port` (0: any free port) that runs `onConnection` for each client. */
async function listen(host: string, port: number, onConnection: (sock: net.Socket) => void): Promise<number> {
  const server = net.createServer((sock) => {
    sock.on('error', () => undefined)
    onConnection(sock)
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(port, host, resolve))
  return (server.address() as net.AddressInfo).port
}

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
  dns = await startDns({
    'many.test': { MX: Array.from({ length: MANY }, (_, i) => ({ exchange: `mx${i + 1}.many.test`, priority: (i + 1) * 10 })) },
    ...Object.fromEntries(Array.from({ length: MANY }, (_, i) => [`mx${i + 1}.many.test`, { A: [`127.0.3.${i + 1}`] }])),
    'greeting.trickle.test': { A: ['127.0.3.21'] },
    'reply.trickle.test': { A: ['127.0.3.22'] },
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
})
