// Connection slots (issue 12, point 6): one client address may hold at most
// smtp.maxConnectionsPerClient sessions (default 50, all listeners together, the PROXY protocol's
// client address counting), trusted networks exempt; a connection that never sends a command is
// closed after smtp.firstCommandTimeout instead of the 5-minute socket timeout.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import dgram from 'node:dgram'
import net from 'node:net'
import path from 'node:path'
import { connectRaw, type RawSmtp } from '../harness/smtp-client.js'
import { eventually, ROOT, runCliAsync, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { compiledPlugin } from '../harness/compiled-plugin.js'

// A submission listener needs a plugin that answers AUTH (else it is a config error).
const STATIC_AUTH = compiledPlugin(path.join(ROOT, 'test/fixtures/static-auth.plugin.ts'))

let capped: RelayProcess // defaults: 50 per client; an mx and a submission listener; 127.0.0.70 trusted
let proxied: RelayProcess // behind a PROXY protocol balancer (127.0.0.1), 2 per client
let quick: RelayProcess // firstCommandTimeout 1s
let cappedWorkers: RelayProcess // as capped, with its sessions in 2 worker processes (config workers)
let proxied128: RelayProcess // as proxied, smtp.clientIpv6Prefix 128 (every IPv6 address on its own)
let proxiedWorkers: RelayProcess // as proxied, with workers: 2
const clients = new Set<RawSmtp>()
const sockets = new Set<net.Socket>() // raw ones (PROXY protocol)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function open(port: number, from = '127.0.0.1'): Promise<{ client: RawSmtp; greeting: string }> {
  const c = await connectRaw(port, '127.0.0.1', 5000, undefined, from)
  clients.add(c.client)
  return c
}

/** Opens `n` sessions one after the other; each must be greeted with 220 and say EHLO. */
async function hold(port: number, n: number, from = '127.0.0.1'): Promise<RawSmtp[]> {
  const held: RawSmtp[] = []
  for (let i = 0; i < n; i++) {
    const { client, greeting } = await open(port, from)
    expect(greeting, `session ${i + 1} from ${from}`).toMatch(/^220 /)
    expect(await client.command('EHLO client.test')).toMatch(/^250/)
    held.push(client)
  }
  return held
}

/** A connection from the balancer (127.0.0.1) for `client` (PROXY v1, TCP4 or TCP6), left open: the socket and the first reply line. */
function proxiedSocket(port: number, client: string): Promise<{ socket: net.Socket; greeting: string }> {
  return new Promise((resolve, reject) => {
    const header = net.isIPv6(client) ? `PROXY TCP6 ${client} 2001:db8::25 40123 25\r\n` : `PROXY TCP4 ${client} 192.0.2.25 40123 25\r\n`
    const s = net.connect({ port, host: '127.0.0.1' }, () => s.write(header))
    sockets.add(s)
    let buf = ''
    s.on('data', (d) => {
      buf += d.toString('latin1')
      if (buf.includes('\r\n')) resolve({ socket: s, greeting: buf.slice(0, buf.indexOf('\r\n')) })
    })
    s.on('error', reject)
  })
}

/** As proxiedSocket: the first reply line (the session stays open until the test ends). */
const proxiedSession = async (port: number, client: string) => (await proxiedSocket(port, client)).greeting

/** A config file in a temporary directory (for check-config). */
function writeConfig(config: Record<string, unknown>): string {
  const dir = tempDir()
  const file = path.join(dir, 'relay.config.json')
  fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: path.join(dir, 'data'), ...config }))
  return file
}

async function closeAll(): Promise<void> {
  const all = [...clients]
  clients.clear()
  for (const s of sockets) s.destroy()
  sockets.clear()
  for (const c of all) c.close()
  await Promise.all(all.map((c) => c.closed))
  await sleep(100) // the relay sees the closes
}

beforeAll(async () => {
  const behindBalancer = (smtp: Record<string, unknown>, more: Record<string, unknown> = {}) => ({
    config: { ...more, listen: [{ host: '127.0.0.1', port: 0, role: 'mx', proxyProtocol: ['127.0.0.1'] }], smtp: { reverseLookup: false, maxConnectionsPerClient: 2, ...smtp } },
  })
  ;[capped, proxied, quick, cappedWorkers, proxied128, proxiedWorkers] = await Promise.all([
    startRelay({
      config: {
        listen: [
          { host: '127.0.0.1', port: 0, role: 'mx' },
          { host: '127.0.0.1', port: 0, role: 'submission', tls: 'none', allowPlaintextAuth: true },
        ],
        plugins: [[STATIC_AUTH, { users: {} }]],
        smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.70/32'] },
      },
    }),
    startRelay({ config: { listen: [{ host: '127.0.0.1', port: 0, role: 'mx', proxyProtocol: ['127.0.0.1'] }], smtp: { reverseLookup: false, maxConnectionsPerClient: 2 } } }),
    startRelay({ config: { smtp: { reverseLookup: false, firstCommandTimeout: '1s' } } }),
    startRelay({
      config: {
        workers: 2,
        listen: [
          { host: '127.0.0.1', port: 0, role: 'mx' },
          { host: '127.0.0.1', port: 0, role: 'submission', tls: 'none', allowPlaintextAuth: true },
        ],
        plugins: [[STATIC_AUTH, { users: {} }]],
        smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.70/32'] },
      },
    }),
    startRelay(behindBalancer({ clientIpv6Prefix: 128 })),
    startRelay(behindBalancer({}, { workers: 2 })),
  ])
})

afterEach(closeAll)

afterAll(async () => {
  await Promise.all([capped, proxied, quick, cappedWorkers, proxied128, proxiedWorkers].map((r) => r?.stop()))
})

describe('smtp.maxConnectionsPerClient', () => {
  // With workers the primary counts for every worker process: still 50, not 50 per worker.
  it.each([
    ['one process', () => capped],
    ['workers: 2', () => cappedWorkers],
  ])('the 51st connection from one address gets 421 4.7.0 and is closed; another address still connects; a closed session frees its slot (%s)', async (_, relay) => {
    const capped = relay()
    // 30 on the mx listener and 20 on the submission one: the count is per address, not per listener.
    await hold(capped.ports.mx!, 30)
    const held = await hold(capped.ports.submission!, 20)
    for (const port of [capped.ports.mx!, capped.ports.submission!]) {
      const { client, greeting } = await open(port)
      expect(greeting).toMatch(/^421 4\.7\.0 \S+ Too many connections from 127\.0\.0\.1, try again later$/)
      await client.closed
    }
    await capped.waitForLog((l) => l.msg === 'too many connections from one client: refused' && l.client === '127.0.0.1' && l.limit === 50)
    const other = await open(capped.ports.mx!, '127.0.0.2')
    expect(other.greeting).toMatch(/^220 /)
    // One session ends: its slot is free again, once.
    await held[0]!.command('QUIT')
    await held[0]!.closed
    await sleep(100)
    expect((await open(capped.ports.mx!)).greeting).toMatch(/^220 /)
    expect((await open(capped.ports.mx!)).greeting).toMatch(/^421 4\.7\.0 /)
  })

  it('a client in smtp.trustedNetworks is not limited (while its untrusted neighbour is)', async () => {
    await hold(capped.ports.mx!, 55, '127.0.0.70')
    await hold(capped.ports.mx!, 50, '127.0.0.71')
    expect((await open(capped.ports.mx!, '127.0.0.71')).greeting).toMatch(/^421 4\.7\.0 \S+ Too many connections from 127\.0\.0\.71/)
  })

  it('behind a PROXY protocol balancer the client address in the header counts, not the balancer', async () => {
    expect(await proxiedSession(proxied.port, '203.0.113.9')).toMatch(/^220 /)
    expect(await proxiedSession(proxied.port, '203.0.113.9')).toMatch(/^220 /)
    expect(await proxiedSession(proxied.port, '203.0.113.9')).toMatch(/^421 4\.7\.0 \S+ Too many connections from 203\.0\.113\.9/)
    expect(await proxiedSession(proxied.port, '203.0.113.10')).toMatch(/^220 /)
  })

  // One customer holds a /64: counted per address it could open 2 connections from each of 2^64.
  it.each([
    ['one process', () => proxied],
    ['workers: 2', () => proxiedWorkers],
  ])('an IPv6 client counts with its /64 (smtp.clientIpv6Prefix default): any address of it fills the same slots; another /64 does not (%s)', async (label, relay) => {
    const port = relay().port
    const net64 = label === 'one process' ? '2001:db8:1:2::' : '2001:db8:1:3::'
    expect(await proxiedSession(port, `${net64}1`)).toMatch(/^220 /)
    expect(await proxiedSession(port, `${net64}2`)).toMatch(/^220 /)
    // The refusal names the address itself; the count is the /64's.
    expect(await proxiedSession(port, `${net64}3`)).toMatch(new RegExp(`^421 4\\.7\\.0 \\S+ Too many connections from ${net64}3, try again later$`))
    expect(await proxiedSession(port, `${net64.slice(0, -2)}:ffff:ffff:ffff:ffff`)).toMatch(/^421 4\.7\.0 /)
    await relay().waitForLog((l) => l.msg === 'too many connections from one client: refused' && l.client === `${net64}3` && l.key === `${net64}/64`)
    // The next /64 (another customer) is not affected.
    expect(await proxiedSession(port, '2001:db8:1:4::1')).toMatch(/^220 /)
    // IPv4-mapped IPv6 is the IPv4 client: ::ffff:203.0.113.44 and 203.0.113.44 share its 2 slots.
    expect(await proxiedSession(port, '::ffff:203.0.113.44')).toMatch(/^220 /)
    expect(await proxiedSession(port, '203.0.113.44')).toMatch(/^220 /)
    expect(await proxiedSession(port, '::ffff:203.0.113.44')).toMatch(/^421 4\.7\.0 \S+ Too many connections from 203\.0\.113\.44/)
  })

  it('a closed session frees its slot in its /64', async () => {
    const port = proxied.port
    const first = await proxiedSocket(port, '2001:db8:5:5::1')
    expect(first.greeting).toMatch(/^220 /)
    expect(await proxiedSession(port, '2001:db8:5:5::2')).toMatch(/^220 /)
    expect(await proxiedSession(port, '2001:db8:5:5::3')).toMatch(/^421 4\.7\.0 /)
    first.socket.destroy()
    let greeting = ''
    for (let i = 0; i < 20 && !greeting.startsWith('220 '); i++) {
      await sleep(100)
      greeting = await proxiedSession(port, '2001:db8:5:5::4')
    }
    expect(greeting).toMatch(/^220 /)
  })

  it('smtp.clientIpv6Prefix: 128 counts every IPv6 address on its own', async () => {
    const port = proxied128.port
    for (let i = 1; i <= 4; i++) expect(await proxiedSession(port, `2001:db8:1:2::${i}`), `address ${i}`).toMatch(/^220 /)
    expect(await proxiedSession(port, '2001:db8:1:2::1')).toMatch(/^220 /)
    expect(await proxiedSession(port, '2001:db8:1:2::1')).toMatch(/^421 4\.7\.0 \S+ Too many connections from 2001:db8:1:2::1,/)
  })

  it('smtp.clientIpv6Prefix: 1 to 128 is taken; outside that, a config error', async () => {
    const check = (prefix: number) => runCliAsync(['check-config', '--config', writeConfig({ smtp: { clientIpv6Prefix: prefix } })])
    const [good, bad] = await Promise.all([[1, 48, 128], [0, 129, 64.5]].map((prefixes) => Promise.all(prefixes.map(async (p) => [p, await check(p)] as const))))
    for (const [prefix, r] of good!) expect(r.code, String(prefix)).toBe(0)
    for (const [prefix, r] of bad!) {
      expect(r.code, String(prefix)).toBe(2)
      expect(r.stderr + r.stdout).toMatch(/smtp\.clientIpv6Prefix/)
    }
  })
})

describe('smtp.maxClients', () => {
  let three: RelayProcess // maxClients 3
  let threeWorkers: RelayProcess // maxClients 3, workers: 2
  let twoWorkers: RelayProcess // maxClients 2, workers: 2
  const tooMany = /^421 4\.7\.0 \S+ Too many connected clients, try again in a moment$/

  beforeAll(async () => {
    const config = (maxClients: number, more: Record<string, unknown> = {}) => ({ config: { ...more, smtp: { reverseLookup: false, maxClients, trustedNetworks: ['127.0.0.70/32'] } } })
    ;[three, threeWorkers, twoWorkers] = await Promise.all([startRelay(config(3)), startRelay(config(3, { workers: 2 })), startRelay(config(2, { workers: 2 }))])
  })

  afterAll(async () => {
    await Promise.all([three, threeWorkers, twoWorkers].map((r) => r?.stop()))
  })

  // With workers the figure is the whole relay's (the primary counts), not 1/N per worker rounded up.
  it.each([
    ['one process', () => three],
    ['workers: 2', () => threeWorkers],
  ])('3 sessions open (one of them trusted): every further connection gets 421 4.7.0, whichever worker takes it; one closes: the next gets 220 (%s)', async (_, relay) => {
    const port = relay().port
    const held = [...(await hold(port, 1, '127.0.0.70')), ...(await hold(port, 1, '127.0.0.61')), ...(await hold(port, 1, '127.0.0.62'))]
    for (let i = 0; i < 4; i++) {
      const { client, greeting } = await open(port, '127.0.0.63')
      expect(greeting, `attempt ${i + 1}`).toMatch(tooMany)
      await client.closed
    }
    // A client in smtp.trustedNetworks is let in past the cap: a flood must not shut out the relay's own apps.
    const trusted = await open(port, '127.0.0.70')
    expect(trusted.greeting).toMatch(/^220 /)
    expect(await trusted.client.command('EHLO app.test')).toMatch(/^250/)
    trusted.client.send('QUIT\r\n')
    await trusted.client.closed
    held[0]!.close()
    await held[0]!.closed
    let greeting = ''
    for (let i = 0; i < 20 && !greeting.startsWith('220 '); i++) {
      await sleep(100)
      const c = await open(port, '127.0.0.63')
      greeting = c.greeting
      if (!greeting.startsWith('220 ')) await c.client.closed
    }
    expect(greeting).toMatch(/^220 /)
    expect((await open(port, '127.0.0.64')).greeting).toMatch(tooMany)
  })

  it('workers: 2, maxClients 8, 5 per client: a flood of 150 connections from one address leaves room for another client (the refused ones never count)', async () => {
    const relay = await startRelay({ config: { workers: 2, smtp: { reverseLookup: false, maxClients: 8, maxConnectionsPerClient: 5 } } })
    try {
      for (let round = 0; round < 3; round++) {
        const flood = Array.from({ length: 150 }, () => open(relay.port, '127.0.0.7').then((c) => c, () => undefined))
        const others = await Promise.all(Array.from({ length: 3 }, () => open(relay.port, '127.0.0.6')))
        expect(others.map((o) => o.greeting.slice(0, 4)), `round ${round + 1}: ${others.map((o) => o.greeting).join(' | ')}`).toEqual(['220 ', '220 ', '220 '])
        for (const c of [...others, ...(await Promise.all(flood))]) c?.client.close()
        await sleep(300) // the relay sees the closes
      }
    } finally {
      await relay.stop()
    }
  })

  it('workers: 2, maxClients 2: with one session open, a second client is served every time (not refused by a worker whose half is taken)', async () => {
    const port = twoWorkers.port
    await hold(port, 1, '127.0.0.61')
    for (let i = 0; i < 6; i++) {
      const { client, greeting } = await open(port, '127.0.0.62')
      expect(greeting, `connection ${i + 1}`).toMatch(/^220 /)
      client.send('QUIT\r\n')
      await client.closed
      await sleep(50) // the relay sees the close
    }
  })
})

describe('commands that move no mail (core/smtp/patches.ts 14)', () => {
  it('a client in smtp.trustedNetworks is not cut off after 120 of them (60 MAIL/RSET); its untrusted neighbour is (maxErrors 20)', async () => {
    const loop = async (from: string) => {
      const { client } = await open(capped.ports.mx!, from)
      await client.command('EHLO client.test')
      for (let i = 0; i < 130; i++) {
        const reply = await client.command(`MAIL FROM:<loop${i}@client.test>`).catch((e: Error) => e.message)
        if (!reply.startsWith('250 ')) return { at: i + 1, reply }
        await client.command('RSET')
      }
      return { at: 0, reply: 'all taken' }
    }
    expect(await loop('127.0.0.70')).toEqual({ at: 0, reply: 'all taken' })
    const cut = await loop('127.0.0.1')
    expect(cut.at).toBe(60)
    expect(cut.reply).toMatch(/^421 4\.7\.0 .*Too many errors/)
  })
})

describe('smtp.firstCommandTimeout', () => {
  it('a connection that says nothing is closed with 421 4.4.2 after the timeout (1s here), not after socketTimeout', async () => {
    const started = Date.now()
    const { client, greeting } = await open(quick.port)
    expect(greeting).toMatch(/^220 /)
    expect(await client.read(5000)).toMatch(/^421 4\.4\.2 \S+ No command received in time, closing connection$/)
    await client.closed
    expect(Date.now() - started).toBeGreaterThanOrEqual(900)
    expect(Date.now() - started).toBeLessThan(4000)
    await quick.waitForLog((l) => l.msg === 'no command before the first-command timeout: closing')
  })

  it('a client that has sent a command is not held to it: idle after EHLO, the session stays open', async () => {
    const { client } = await open(quick.port)
    expect(await client.command('EHLO client.test')).toMatch(/^250/)
    await sleep(1800)
    expect(client.isClosed()).toBe(false)
    expect(await client.command('NOOP')).toMatch(/^250 /)
  })
})

// Before the session starts (an implicit-TLS handshake, the reverse lookup) a connection already
// holds a slot of smtp.maxClients: one address must not be able to take them all there either,
// and a handshake that never finishes must not hold its slot for smtp.socketTimeout (5 minutes).
describe('connections on their way in (TLS handshake, reverse lookup)', () => {
  let ca: TestCa
  let tlsRelay: RelayProcess // implicit TLS; maxClients 30, 5 per client, firstCommandTimeout 2s
  let lookups: RelayProcess // reverse lookups against a DNS server that never answers; maxClients 30, 5 per client
  let tlsWorkers: RelayProcess // as tlsRelay, with workers: 2
  let lookupsWorkers: RelayProcess // as lookups, with workers: 2
  let silentDns: dgram.Socket
  const attackers: net.Socket[] = []

  /** `n` raw TCP connections from 127.0.0.50 that send nothing; each one's received text and whether it closed. */
  function flood(port: number, n: number): { text: string[]; closed: boolean[] } {
    const state = { text: Array<string>(n).fill(''), closed: Array<boolean>(n).fill(false) }
    for (let i = 0; i < n; i++) {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.50' })
      attackers.push(s)
      s.on('data', (d) => (state.text[i] += d.toString('latin1')))
      s.on('error', () => undefined)
      s.on('close', () => (state.closed[i] = true))
    }
    return state
  }

  beforeAll(async () => {
    ca = makeCa()
    const cert = ca.issue(['relay.test'])
    silentDns = dgram.createSocket('udp4')
    await new Promise<void>((resolve) => silentDns.bind(0, '127.0.0.1', resolve))
    const limits = { maxClients: 30, maxConnectionsPerClient: 5 }
    const implicitTls = {
      listen: [{ host: '127.0.0.1', port: 0, role: 'submission', tls: 'implicit' }],
      tls: { cert: cert.cert, key: cert.key },
      smtp: { reverseLookup: false, firstCommandTimeout: '2s', ...limits },
      plugins: [[STATIC_AUTH, { users: {} }]],
    }
    const silentLookups = { dns: { servers: [`127.0.0.1:${(silentDns.address() as net.AddressInfo).port}`], timeout: '5s' }, smtp: { reverseLookup: true, ...limits } }
    ;[tlsRelay, lookups, tlsWorkers, lookupsWorkers] = await Promise.all([
      startRelay({ config: implicitTls }),
      startRelay({ config: silentLookups }),
      startRelay({ config: { ...implicitTls, workers: 2 } }),
      startRelay({ config: { ...silentLookups, workers: 2 } }),
    ])
  })

  afterEach(() => {
    for (const s of attackers) s.destroy()
    attackers.length = 0
  })

  afterAll(async () => {
    await Promise.all([tlsRelay, lookups, tlsWorkers, lookupsWorkers].map((r) => r?.stop()))
    silentDns?.close()
  })

  // With workers the primary counts them for every worker process: 5 in all, not 5 per worker.
  it.each([
    ['one process', () => tlsRelay],
    ['workers: 2', () => tlsWorkers],
  ])('implicit TLS: 40 connections from one address that never start the handshake hold 5 slots, not all 30; another client gets its 220 (%s)', async (_, relay) => {
    const tlsRelay = relay()
    const port = tlsRelay.ports.submission!
    const state = flood(port, 40)
    // The relay has taken them in: those over a limit are closed at once. All 35 of them, before
    // the count is read: with workers each worker refuses its share when the primary answers, and
    // nothing orders that before another worker's 220 to the client below (nor does the kernel
    // order their 'close' events before that 220 here).
    await eventually(() => state.closed.filter(Boolean).length >= 35, 5000, 'the relay to close the 35 connections over the limit')
    const { client, greeting } = await connectRaw(port, '127.0.0.1', 5000, { ca: ca.caPem, servername: 'relay.test' }, '127.0.0.1')
    expect(greeting).toMatch(/^220 /)
    client.close()
    // The 5 that hold a slot are still open (until the 2 s handshake deadline).
    expect(state.closed.filter(Boolean).length).toBe(35)
    await tlsRelay.waitForLog((l) => l.msg === 'too many connections from one client: refused' && l.client === '127.0.0.50' && l.limit === 5)
    // A refusal on arrival is a refused line as any other (docs/logging.md).
    await tlsRelay.waitForLog((l) => l.msg === 'refused' && l.client === '127.0.0.50' && l.stage === 'connect' && l.code === 421 && l.rule === 'core:max-connections-per-client')
  })

  it('implicit TLS: a handshake not finished within smtp.firstCommandTimeout (2s here) is closed, not after socketTimeout, and its slot is free again', async () => {
    const state = flood(tlsRelay.ports.submission!, 3)
    await eventually(() => state.closed.every(Boolean), 10_000, 'the relay to close the silent handshakes')
    await tlsRelay.waitForLog((l) => l.msg === 'client connection failed' && l.client === '127.0.0.50' && /handshake timeout/i.test(String(l.error)))
    // Their slots are free again: the same address is served.
    const { client, greeting } = await connectRaw(tlsRelay.ports.submission!, '127.0.0.1', 5000, { ca: ca.caPem, servername: 'relay.test' }, '127.0.0.50')
    expect(greeting).toMatch(/^220 /)
    client.close()
  })

  it('STARTTLS: a handshake not finished within smtp.firstCommandTimeout after the 220 (a ClientHello dripped, or none) is closed, not after socketTimeout', async () => {
    const cert = ca.issue(['relay.test'])
    const r = await startRelay({ config: { listen: [{ host: '127.0.0.1', port: 0, role: 'mx', tls: 'starttls' }], tls: { cert: cert.cert, key: cert.key }, smtp: { reverseLookup: false, firstCommandTimeout: '2s', socketTimeout: '60s' } } })
    try {
      const started = Date.now()
      const closedAfter = await Promise.all(
        [false, true].map(async (drip) => {
          const { client } = await connectRaw(r.port, '127.0.0.1', 5000, undefined, '127.0.0.51')
          expect(await client.command('EHLO slow.test')).toMatch(/^250 /m)
          expect(await client.command('STARTTLS')).toMatch(/^220 /)
          // A TLS record header, then a byte every 500 ms: never a whole ClientHello.
          const dripper = drip ? setInterval(() => !client.isClosed() && client.send(Buffer.from([0x16])), 500) : undefined
          await Promise.race([client.closed, new Promise((resolve) => setTimeout(resolve, 15_000))])
          clearInterval(dripper)
          expect(client.isClosed()).toBe(true)
          return Date.now() - started
        }),
      )
      for (const ms of closedAfter) expect(ms).toBeLessThan(10_000)
      // The relay goes on serving.
      const { client, greeting } = await connectRaw(r.port, '127.0.0.1', 5000, undefined, '127.0.0.51')
      expect(greeting).toMatch(/^220 /)
      client.close()
    } finally {
      await r.stop()
    }
  })

  it('implicit TLS: after 10 failed handshakes (smtp.maxTlsHandshakeFailures) a client is refused before any handshake; others are served; connections that send nothing do not count', async () => {
    const port = tlsRelay.ports.submission!
    const tls = { ca: ca.caPem, servername: 'relay.test' }
    const closed = (s: net.Socket) => new Promise<void>((resolve) => s.on('error', () => undefined).on('close', () => resolve()))
    // TCP health checks (connect, close, no byte): not handshakes that failed.
    for (let i = 0; i < 12; i++) {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.60' }, () => s.end())
      await closed(s)
    }
    const first = await connectRaw(port, '127.0.0.1', 5000, tls, '127.0.0.60')
    expect(first.greeting).toMatch(/^220 /)
    first.client.close()
    // Ten handshakes that fail (plain text on the TLS port: the server's TLS stack parses each).
    for (let i = 0; i < 10; i++) {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.60' }, () => s.write('EHLO plain.test\r\n'))
      await closed(s)
    }
    await tlsRelay.waitForLog((l) => l.msg === 'client connection failed' && l.client === '127.0.0.60')
    // The next one is closed before its handshake: no TLS session, no 220.
    await expect(connectRaw(port, '127.0.0.1', 5000, tls, '127.0.0.60')).rejects.toThrow()
    await tlsRelay.waitForLog((l) => l.msg === 'too many failed TLS handshakes from one client: refused' && l.client === '127.0.0.60' && l.limit === 10)
    await tlsRelay.waitForLog((l) => l.msg === 'refused' && l.client === '127.0.0.60' && l.stage === 'connect' && l.dsn === '4.7.0' && l.rule === 'core:too-many-tls-failures')
    const other = await connectRaw(port, '127.0.0.1', 5000, tls, '127.0.0.61')
    expect(other.greeting).toMatch(/^220 /)
    other.client.close()
  })

  it.each([
    ['one process', () => lookups],
    ['workers: 2', () => lookupsWorkers],
  ])('reverse lookups that never answer: 40 connections from one address take 5 slots; the rest get 421 4.7.0 at once and another client gets its 220 (%s)', async (_, relay) => {
    const lookups = relay()
    const state = flood(lookups.port, 40)
    // All 35 refusals read before they are counted (with workers, nothing orders another worker's refusals before the 220 below).
    await eventually(() => state.text.filter((t) => t.startsWith('421 ')).length >= 35, 5000, '421 replies to the 35 connections over the limit')
    const { client, greeting } = await open(lookups.port, '127.0.0.1')
    expect(greeting).toMatch(/^220 /)
    client.close()
    const refused = state.text.filter((t) => /^421 4\.7\.0 \S+ Too many connections from 127\.0\.0\.50, try again later\r\n$/.test(t))
    expect(refused.length).toBe(35)
  })
})
