// Slow clients (core/smtp/deadlines.ts): a command must arrive whole within the idle limit of the
// relay's last reply, message data at smtp.minDataRate at least; a listener holding 80 % of
// smtp.maxClients is under stress, and clients neither trusted nor authenticated then get
// smtp.stressTimeout. Before, every byte restarted the idle timer: a client dripping one byte
// every few seconds held its session until smtp.sessionTimeout (30 minutes).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, type RawSmtp } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'

let relay: RelayProcess // socketTimeout 2s, stressTimeout 600ms, maxClients 10 (stress from 8 sessions)
let workers: RelayProcess // the same, sessions in 2 SMTP workers (each under stress from 4 of its own)
let dns: TestDns
let mx: TestReceiver
const clients = new Set<RawSmtp>()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const TRUSTED = '127.0.0.70'

async function open(port: number, from = '127.0.0.1'): Promise<RawSmtp> {
  const { client, greeting } = await connectRaw(port, '127.0.0.1', 5000, undefined, from)
  clients.add(client)
  expect(greeting).toMatch(/^220 /)
  expect(await client.command('EHLO client.test')).toMatch(/^250/)
  return client
}

/** Sends `text` one byte every `everyMs` until done or the session closes: the bytes sent. */
async function drip(client: RawSmtp, text: string, everyMs: number): Promise<number> {
  for (let i = 0; i < text.length; i++) {
    if (client.isClosed()) return i
    client.send(text[i]!)
    await sleep(everyMs)
  }
  return text.length
}

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.0.3' })
  dns = await startDns({ 'local.test': { MX: [{ exchange: 'mx.local.test', priority: 10 }] }, 'mx.local.test': { A: ['127.0.0.3'] } })
  const config = {
    localDomains: ['local.test'],
    dns: { servers: [dns.server], timeout: '500ms' },
    delivery: { port: mx.port, connectTimeout: '2s' },
    smtp: { reverseLookup: false, socketTimeout: '2s', stressTimeout: '600ms', maxClients: 10, trustedNetworks: [`${TRUSTED}/32`] },
  }
  ;[relay, workers] = await Promise.all([startRelay({ config }), startRelay({ config: { ...config, workers: 2 } })])
}, 60_000)

afterEach(async () => {
  for (const c of clients) c.close()
  clients.clear()
  // Every session gone and the listener out of stress before the next test.
  await sleep(300)
})

afterAll(async () => {
  await Promise.all([relay?.stop(), workers?.stop()])
  await Promise.all([dns?.close(), mx?.close()])
})

describe('a command must arrive whole within the idle limit (socketTimeout 2s here)', () => {
  it('a command dripped one byte every 400 ms is cut off with 421 4.4.2 about 2 s after the last reply, not answered', async () => {
    const client = await open(relay.port)
    const started = Date.now()
    const reply = client.read(10_000)
    const sent = await drip(client, 'NOOP and more text that takes its time\r\n', 400)
    expect(await reply).toMatch(/^421 4\.4\.2 \S+ Timeout exceeded: input too slow, closing connection$/)
    await client.closed
    expect(sent).toBeLessThan(12)
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900)
    expect(Date.now() - started).toBeLessThan(4500)
    await relay.waitForLog((l) => l.msg === 'command too slow after EHLO: closing')
  })

  it('a client idle for most of the limit, then sending a whole command, is answered (the limit is not shorter than socketTimeout)', async () => {
    const client = await open(relay.port)
    await sleep(1500)
    expect(await client.command('NOOP')).toMatch(/^250 /)
    await sleep(1500)
    expect(await client.command('MAIL FROM:<a@client.test>')).toMatch(/^250 /)
    expect(await client.command('QUIT')).toMatch(/^221 /)
  })

  it('message data dripped one byte every 300 ms is cut off (421 4.4.2) and nothing is queued', async () => {
    const client = await open(relay.port)
    expect(await client.command('MAIL FROM:<drip@client.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<someone@local.test>')).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const reply = client.read(10_000)
    const started = Date.now()
    await drip(client, 'Subject: dripped\r\n\r\n' + 'x'.repeat(40) + '\r\n.\r\n', 300)
    expect(await reply).toMatch(/^421 4\.4\.2 .*input too slow/)
    expect(Date.now() - started).toBeLessThan(4500)
    await relay.waitForLog((l) => l.msg === 'message data too slow: closing')
    expect((await relay.listQueue()).length).toBe(0)
    expect(mx.messages.some((m) => m.raw.toString('latin1').includes('Subject: dripped'))).toBe(false)
    // A message cut off is the client's doing: nothing is logged as an error.
    expect(relay.logs.filter((l) => l.level >= 50)).toEqual([])
  })

  it('a message sent slowly but steadily (1,000 bytes every 400 ms, 3.6 s in all) is taken: data earns time at minDataRate', async () => {
    const client = await open(relay.port)
    expect(await client.command('MAIL FROM:<steady@client.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<someone@local.test>')).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    client.send('Subject: steady\r\n\r\n')
    for (let i = 0; i < 9; i++) {
      await sleep(400)
      client.send(`${String(i).repeat(998)}\r\n`)
    }
    expect(await client.command('.')).toMatch(/^250 /)
    await eventually(() => mx.messages.find((m) => m.raw.toString('latin1').includes('Subject: steady')), 20_000, 'delivery of the steady message')
  })
})

describe('stress: 80 % of maxClients (10 here) open', () => {
  // One process: under stress from 8 sessions, out of it below 6. Two workers: each from 4, below 3.
  for (const [name, get, least] of [['one process', () => relay, 4], ['workers: 2', () => workers, 3]] as const) {
    it(`${name}: idle clients get stressTimeout (600 ms) until the listener is out of stress; a trusted client keeps socketTimeout`, async () => {
      const r = get()
      const trusted = await open(r.port, TRUSTED)
      // One client per address (maxConnectionsPerClient is not what this is about).
      const idle: RawSmtp[] = []
      for (let i = 0; i < 8; i++) idle.push(await open(r.port, `127.0.1.${i + 1}`))
      await r.waitForLog((l) => l.msg === 'listener under stress: clients neither trusted nor authenticated get smtp.stressTimeout', 5000)
      // Well before socketTimeout (2 s): only the stress can close them.
      const replies = await Promise.all(idle.map((c) => c.read(1500).catch(() => 'still open')))
      const cut = replies.filter((t) => /^421 4\.4\.2 .*Timeout exceeded, closing connection$/.test(t))
      expect(cut.length, replies.join(' | ')).toBeGreaterThanOrEqual(least)
      // Those left once the stress is over have socketTimeout again.
      expect(replies.filter((t) => t === 'still open').length, replies.join(' | ')).toBeGreaterThanOrEqual(1)
      expect(trusted.isClosed()).toBe(false)
      expect(await trusted.command('NOOP')).toMatch(/^250 /)
      await r.waitForLog((l) => l.msg === 'listener no longer under stress', 5000)
      // Out of stress, a new idle client has socketTimeout again.
      const later = await open(r.port, '127.0.2.1')
      await sleep(1200)
      expect(later.isClosed()).toBe(false)
      expect(await later.command('NOOP')).toMatch(/^250 /)
    })
  }
})

describe('stress mode off (stressTimeout not shorter than socketTimeout)', () => {
  it('8 of 10 sessions open: no "listener under stress" line, and idle clients keep socketTimeout', async () => {
    const r = await startRelay({ config: { smtp: { reverseLookup: false, socketTimeout: '2s', stressTimeout: '2s', maxClients: 10 } } })
    try {
      const idle: RawSmtp[] = []
      for (let i = 0; i < 8; i++) idle.push(await open(r.port, `127.0.3.${i + 1}`))
      await sleep(1000)
      expect(idle.every((c) => !c.isClosed())).toBe(true)
      expect(r.logs.filter((l) => /under stress/.test(String(l.msg)))).toEqual([])
    } finally {
      await r.stop()
    }
  })
})
