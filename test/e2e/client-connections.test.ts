// Connection slots (issue 12, point 6): one client address may hold at most
// smtp.maxConnectionsPerClient sessions (default 50, all listeners together, the PROXY protocol's
// client address counting), trusted networks exempt; a connection that never sends a command is
// closed after smtp.firstCommandTimeout instead of the 5-minute socket timeout.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import net from 'node:net'
import { connectRaw, type RawSmtp } from '../harness/smtp-client.js'
import { startRelay, type RelayProcess } from '../harness/relay.js'

let capped: RelayProcess // defaults: 50 per client; an mx and a submission listener; 127.0.0.70 trusted
let proxied: RelayProcess // behind a PROXY protocol balancer (127.0.0.1), 2 per client
let quick: RelayProcess // firstCommandTimeout 1s
let cappedWorkers: RelayProcess // as capped, with its sessions in 2 worker processes (config workers)
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
  ;[capped, proxied, quick, cappedWorkers] = await Promise.all([
    startRelay({
      config: {
        listen: [
          { host: '127.0.0.1', port: 0, role: 'mx' },
          { host: '127.0.0.1', port: 0, role: 'submission', tls: 'none' },
        ],
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
          { host: '127.0.0.1', port: 0, role: 'submission', tls: 'none' },
        ],
        smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.70/32'] },
      },
    }),
  ])
})

afterEach(closeAll)

afterAll(async () => {
  await Promise.all([capped, proxied, quick, cappedWorkers].map((r) => r?.stop()))
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
    /** A connection from the balancer (127.0.0.1) for `client`: resolves with the first reply line. */
    const proxiedSession = (client: string) =>
      new Promise<string>((resolve, reject) => {
        const s = net.connect({ port: proxied.port, host: '127.0.0.1' }, () => s.write(`PROXY TCP4 ${client} 192.0.2.25 40123 25\r\n`))
        sockets.add(s)
        let buf = ''
        s.on('data', (d) => {
          buf += d.toString('latin1')
          if (buf.includes('\r\n')) resolve(buf.slice(0, buf.indexOf('\r\n')))
        })
        s.on('error', reject)
      })
    expect(await proxiedSession('203.0.113.9')).toMatch(/^220 /)
    expect(await proxiedSession('203.0.113.9')).toMatch(/^220 /)
    expect(await proxiedSession('203.0.113.9')).toMatch(/^421 4\.7\.0 \S+ Too many connections from 203\.0\.113\.9/)
    expect(await proxiedSession('203.0.113.10')).toMatch(/^220 /)
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
