// Mail loops (RFC 5321 §6.3): the hop limit (`smtp.maxHops`) at the end of DATA and at delivery, and
// delivery that never goes to the relay itself, whether the next hop is one of its own listeners
// (by address and port) or a server that greets with its own hostname. Real relays, DNS, receivers.
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { ROOT, eventually, runCliAsync, startRelay, type LogLine, type RelayProcess } from '../harness/relay.js'
import { send } from '../../testing/index.js'

const text = (m: ReceivedMessage) => m.raw.toString('latin1')
const receivedFields = (s: string) => s.match(/^Received:/gm)?.length ?? 0

let counter = 0
/** A message that has already made `hops` hops (that many Received fields). */
function withHops(hops: number, to: string): { data: string; subject: string } {
  const subject = `hops-${hops}-${process.pid}-${++counter}`
  const received = Array.from({ length: hops }, (_, i) => `Received: from hop${i}.example (hop${i}.example [192.0.2.${(i % 250) + 1}])\r\n\tby hop${i + 1}.example with ESMTP id H${i}; Thu, 3 Dec 2026 03:00:00 +0000\r\n`).join('')
  return { subject, data: `${received}From: <alice@sender.test>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@sender.test>\r\n\r\nHello.\r\n` }
}

/** A free TCP port on `host`. */
async function freePort(host: string): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>((resolve, reject) => srv.once('error', reject).listen(0, host, resolve))
  const port = (srv.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return port
}

/** A server that names itself `name` in its greeting and EHLO reply, and records every command. */
async function startNamedServer(host: string, port: number, name: string): Promise<{ commands: string[]; connections: number; close(): Promise<void> }> {
  const state = { commands: [] as string[], connections: 0 }
  const sockets = new Set<net.Socket>()
  const srv = net.createServer((sock) => {
    state.connections++
    sockets.add(sock)
    sock.on('error', () => undefined).on('close', () => sockets.delete(sock))
    sock.write(`220 ${name} ESMTP ready\r\n`)
    let buf = ''
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1')
      let nl: number
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 2)
        state.commands.push(line)
        const verb = line.slice(0, 4).toUpperCase()
        if (verb === 'EHLO') sock.write(`250-${name} at your service\r\n250 PIPELINING\r\n`)
        else if (verb === 'QUIT') sock.end('221 2.0.0 Bye\r\n')
        else sock.write('250 2.0.0 Ok\r\n')
      }
    })
  })
  await new Promise<void>((resolve, reject) => srv.once('error', reject).listen(port, host, resolve))
  return {
    commands: state.commands,
    get connections() {
      return state.connections
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        srv.close(() => resolve())
      }),
  }
}

// Logs each connection the relay accepts. The tests connect from CLIENT; any other client is the relay itself.
const LOG_CONNECTIONS = path.join(ROOT, 'test/fixtures/log-connections.plugin.ts')
const CLIENT = '127.0.0.77'
const selfConnections = (relay: RelayProcess) => relay.logs.filter((l) => l.msg === 'connection accepted' && l.client !== CLIENT).length
const accepted = (relay: RelayProcess, rcpt: string) => relay.logs.filter((l) => l.event === 'accepted' && (l.recipients as string[] | undefined)?.includes(rcpt))
const eventsFor = (relay: RelayProcess, event: string, rcpt: string): LogLine[] => relay.logs.filter((l) => l.event === event && l.recipient === rcpt)

describe('hop limit and loops to ourselves (relay on 127.0.0.1:P, delivering to port P)', () => {
  let dns: TestDns
  let rx: TestReceiver // 127.0.0.2:P: dest.test and sender.test (DSNs)
  let imposter: Awaited<ReturnType<typeof startNamedServer>> // 127.0.0.4:P greets as relay.test
  let relay: RelayProcess
  let port: number

  beforeAll(async () => {
    rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
    port = rx.port
    imposter = await startNamedServer('127.0.0.4', port, 'relay.test')
    dns = await startDns({
      'dest.test': { A: ['127.0.0.2'] },
      'sender.test': { A: ['127.0.0.2'] },
      'loop.test': { MX: [{ exchange: 'mx.loop.test', priority: 10 }] },
      'mx.loop.test': { A: ['127.0.0.1'] },
      'greet.test': { MX: [{ exchange: 'mx.greet.test', priority: 10 }] },
      'mx.greet.test': { A: ['127.0.0.4'] },
      // We are the backup MX (20); the primary (10) does not answer.
      'backup.test': { MX: [{ exchange: 'mx1.backup.test', priority: 10 }, { exchange: 'mx2.backup.test', priority: 20 }] },
      'mx1.backup.test': { A: ['127.0.0.5'] },
      'mx2.backup.test': { A: ['127.0.0.1'] },
      // We are the backup MX (20) behind NAT: known only by the greeting; the primary (10) does not answer.
      'natbackup.test': { MX: [{ exchange: 'mx1.natbackup.test', priority: 10 }, { exchange: 'mx2.natbackup.test', priority: 20 }] },
      'mx1.natbackup.test': { A: ['127.0.0.5'] },
      'mx2.natbackup.test': { A: ['127.0.0.4'] },
    })
    relay = await startRelay({
      config: {
        hostname: 'relay.test',
        // Same port as the receivers, on another address: only 127.0.0.1:P is us.
        listen: [{ host: '127.0.0.1', port, role: 'mx' }],
        dns: { servers: [dns.server], timeout: '1s' },
        delivery: { port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s', delayWarning: false },
        plugins: [LOG_CONNECTIONS, ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
  })

  afterAll(async () => {
    await relay?.stop()
    await Promise.all([dns?.close(), rx?.close(), imposter?.close()])
  })

  it('51 Received fields: 554 5.4.6 Too many hops at the end of DATA; 50 are accepted and relayed with ours on top', async () => {
    const over = withHops(51, 'bob@dest.test')
    const refused = await send({ port: relay.port, localAddress: CLIENT, from: 'alice@sender.test', to: 'bob@dest.test', data: over.data })
    expect(refused.data).toBe(554)
    expect(refused.last).toMatch(/^554 5\.4\.6 Too many hops/)

    const limit = withHops(50, 'bob@dest.test')
    const ok = await send({ port: relay.port, localAddress: CLIENT, from: 'alice@sender.test', to: 'bob@dest.test', data: limit.data })
    expect(ok.data).toBe(250)
    const got = await eventually(() => rx.messages.find((m) => text(m).includes(limit.subject)), 10_000, 'the 50-hop message at dest.test')
    expect(receivedFields(text(got))).toBe(51)
    expect(text(got)).toMatch(/^Received: from [^\r\n]*\r\n(\t[^\r\n]*\r\n)*\tby relay\.test /)
    expect(rx.messages.some((m) => text(m).includes(over.subject))).toBe(false)
  })

  it("MX on our own listener: bounced with 5.4.6 'mail for loop.test loops back to myself', received once, never sent to ourselves", async () => {
    const r = await send({ port: relay.port, localAddress: CLIENT, from: 'alice@sender.test', to: 'carol@loop.test' })
    expect(r.data).toBe(250)
    const dsn = await eventually(() => rx.messages.find((m) => m.from === '' && m.to.includes('alice@sender.test') && text(m).includes('carol@loop.test')), 10_000, 'the DSN')
    expect(text(dsn)).toContain('Status: 5.4.6')
    expect(text(dsn)).toContain('mail for loop.test loops back to myself')
    await eventually(() => eventsFor(relay, 'bounced', 'carol@loop.test').length, 5000, 'the bounce event')
    const bounced = eventsFor(relay, 'bounced', 'carol@loop.test')
    expect(bounced).toHaveLength(1)
    expect(bounced[0]!.response).toBe('5.4.6 mail for loop.test loops back to myself')
    expect(bounced[0]!.remoteHost).toBeUndefined() // decided before connecting
    // Give a loop time to show itself: the message entered the relay exactly once.
    await new Promise((resolve) => setTimeout(resolve, 500))
    expect(accepted(relay, 'carol@loop.test')).toHaveLength(1)
    expect(selfConnections(relay)).toBe(0) // the relay never connected to itself
  })

  it('a server on another address that greets with our hostname: QUIT after EHLO, no MAIL FROM, bounced with 5.4.6', async () => {
    // Another sender: the relay sends one DSN per untrusted sender per interval.
    const r = await send({ port: relay.port, localAddress: CLIENT, from: 'alice2@sender.test', to: 'dave@greet.test' })
    expect(r.data).toBe(250)
    const dsn = await eventually(() => rx.messages.find((m) => m.from === '' && m.to.includes('alice2@sender.test') && text(m).includes('dave@greet.test')), 10_000, 'the DSN')
    expect(text(dsn)).toContain('Status: 5.4.6')
    expect(text(dsn)).toContain('mail for greet.test loops back to myself')
    expect(imposter.connections).toBe(1)
    expect(imposter.commands).toEqual(['EHLO relay.test', 'QUIT'])
    // The relay's log may trail the DSN: its bounce line comes after the message's 'accepted' line.
    const bounced = await eventually(() => eventsFor(relay, 'bounced', 'dave@greet.test')[0], 5000, 'the bounce event')
    expect(bounced.remoteHost).toMatch(/^mx\.greet\.test\[127\.0\.0\.4\]:/)
    expect(accepted(relay, 'dave@greet.test')).toHaveLength(1)
  })

  it('we are the backup MX: never to ourselves nor a worse MX; deferred while the primary is down (no bounce)', async () => {
    const r = await send({ port: relay.port, localAddress: CLIENT, from: 'alice@sender.test', to: 'erin@backup.test' })
    expect(r.data).toBe(250)
    const deferred = await eventually(() => eventsFor(relay, 'deferred', 'erin@backup.test')[0], 10_000, 'the deferral')
    expect(deferred.response).toMatch(/^4\.4\.1 .*127\.0\.0\.5/)
    expect(eventsFor(relay, 'bounced', 'erin@backup.test')).toHaveLength(0)
    expect(accepted(relay, 'erin@backup.test')).toHaveLength(1)
    expect(selfConnections(relay)).toBe(0)
  })

  it('we are the backup MX known only by its greeting, the primary down and so tried last: deferred on every attempt, never bounced as a loop', async () => {
    // The backup.test test above left 127.0.0.5 (the primary) silent: it is now tried after the host that is us.
    const before = imposter.connections
    for (const rcpt of ['fay@natbackup.test', 'gus@natbackup.test']) {
      const r = await send({ port: relay.port, localAddress: CLIENT, from: 'alice@sender.test', to: rcpt })
      expect(r.data).toBe(250)
      const deferred = await eventually(() => eventsFor(relay, 'deferred', rcpt)[0], 10_000, `the deferral of ${rcpt}`)
      expect(deferred.response).toMatch(/^4\.4\.1 .*mx1\.natbackup\.test\[127\.0\.0\.5\]/)
    }
    expect((await runCliAsync(['queue', 'flush', '--config', relay.configFile])).code).toBe(0)
    await eventually(() => eventsFor(relay, 'deferred', 'fay@natbackup.test').length >= 2 || undefined, 10_000, 'the second attempt')
    expect(eventsFor(relay, 'bounced', 'fay@natbackup.test')).toHaveLength(0)
    expect(eventsFor(relay, 'bounced', 'gus@natbackup.test')).toHaveLength(0)
    expect(rx.messages.some((m) => m.from === '' && /fay@natbackup|gus@natbackup/.test(text(m)))).toBe(false)
    // The host that is us was asked only its name each time: EHLO, QUIT.
    expect(imposter.connections).toBeGreaterThan(before)
    expect(imposter.commands.filter((c) => c.startsWith('MAIL'))).toEqual([])
  })
})

describe('a listener on 0.0.0.0 is every local address', () => {
  let dns: TestDns
  let relay: RelayProcess
  // A non-loopback address of this machine, when it has one.
  const external = Object.values(os.networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address ?? '127.0.0.10'

  beforeAll(async () => {
    const port = await freePort('0.0.0.0')
    dns = await startDns({
      'lo.test': { MX: [{ exchange: 'mx.lo.test', priority: 10 }] },
      'mx.lo.test': { A: ['127.0.0.9'] },
      'eth.test': { A: [external] },
      // IPv4-mapped IPv6, in the hex spelling too: still this machine.
      'mapped.test': { AAAA: ['::ffff:7f00:9'] },
    })
    relay = await startRelay({
      config: {
        hostname: 'wild.relay.test',
        listen: [{ host: '0.0.0.0', port, role: 'mx' }],
        dns: { servers: [dns.server], timeout: '1s' },
        delivery: { port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s', delayWarning: false },
        plugins: [LOG_CONNECTIONS, ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
  })

  afterAll(async () => {
    await relay?.stop()
    await dns?.close()
  })

  it.each([['frank@lo.test', 'lo.test'], ['gina@eth.test', 'eth.test'], ['hugo@mapped.test', 'mapped.test']])('%s bounces with 5.4.6 before any connection', async (rcpt, domain) => {
    // From the null sender: no DSN, the bounce event tells.
    const r = await send({ port: relay.port, localAddress: CLIENT, from: '', to: rcpt })
    expect(r.data).toBe(250)
    const bounced = await eventually(() => eventsFor(relay, 'bounced', rcpt)[0], 10_000, 'the bounce')
    expect(bounced.response).toBe(`5.4.6 mail for ${domain} loops back to myself`)
    expect(bounced.remoteHost).toBeUndefined()
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(accepted(relay, rcpt)).toHaveLength(1)
    expect(selfConnections(relay)).toBe(0)
  })
})

describe('smtp.maxHops is configurable; a queued message that crosses a lowered limit bounces once', () => {
  let dns: TestDns
  let rx: TestReceiver
  let relay: RelayProcess

  beforeAll(async () => {
    // dest.test parks parked@ (451 at RCPT); DSNs to sender.test arrive at the same server.
    rx = await startReceiver({ host: '127.0.0.1', behaviour: { noStartTls: true, reply: { rcpt: ({ address }) => (address === 'parked@dest.test' ? { code: 451, message: '4.2.0 parked, try later' } : undefined) } } })
    dns = await startDns({ 'dest.test': { A: ['127.0.0.1'] }, 'sender.test': { A: ['127.0.0.1'] } })
    relay = await startRelay({
      config: {
        dns: { servers: [dns.server], timeout: '1s' },
        delivery: { port: rx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s', delayWarning: false },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
  })

  afterAll(async () => {
    await relay?.stop()
    await Promise.all([dns?.close(), rx?.close()])
  })

  it('queued with 10 hops, restarted with smtp.maxHops 5: one DSN with 5.4.6 Too many hops, no further attempt', async () => {
    const queued = withHops(10, 'parked@dest.test')
    const r = await send({ port: relay.port, localAddress: CLIENT, from: 'alice@sender.test', to: 'parked@dest.test', data: queued.data })
    expect(r.data).toBe(250)
    await eventually(() => eventsFor(relay, 'deferred', 'parked@dest.test').length > 0, 10_000, 'a deferral')

    await relay.stop()
    const config = JSON.parse(fs.readFileSync(relay.configFile, 'utf8')) as { smtp: Record<string, unknown> }
    config.smtp = { ...config.smtp, maxHops: 5 }
    fs.writeFileSync(relay.configFile, JSON.stringify(config, null, 2))
    const rcptsBefore = rx.attempts.rcpt
    await relay.restart()

    const dsn = await eventually(() => rx.messages.find((m) => m.from === '' && text(m).includes('parked@dest.test')), 10_000, 'the DSN')
    expect(text(dsn)).toContain('Status: 5.4.6')
    expect(text(dsn)).toContain('Too many hops')
    // Retries are 1 s apart: had it stayed queued, it would have been tried again by now.
    await new Promise((resolve) => setTimeout(resolve, 2500))
    expect(rx.messages.filter((m) => m.from === '' && text(m).includes('parked@dest.test'))).toHaveLength(1)
    expect(rx.attempts.rcpt - rcptsBefore).toBe(1) // the DSN's RCPT only
    expect((await relay.listQueue()).filter((m) => m.recipients.some((x) => x.address === 'parked@dest.test'))).toHaveLength(0)
  })

  it('with smtp.maxHops 5: 6 Received fields get 554 5.4.6, 5 are accepted and delivered', async () => {
    const over = await send({ port: relay.port, localAddress: CLIENT, from: 'alice@sender.test', to: 'bob@dest.test', data: withHops(6, 'bob@dest.test').data })
    expect(over.last).toMatch(/^554 5\.4\.6 Too many hops/)
    const limit = withHops(5, 'bob@dest.test')
    const ok = await send({ port: relay.port, localAddress: CLIENT, from: 'alice@sender.test', to: 'bob@dest.test', data: limit.data })
    expect(ok.data).toBe(250)
    const got = await eventually(() => rx.messages.find((m) => text(m).includes(limit.subject)), 10_000, 'the 5-hop message')
    expect(receivedFields(text(got))).toBe(6)
  })
})
