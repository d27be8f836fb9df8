// Durability: what a relay has answered 250 for survives SIGTERM, kill -9 and restarts, and is
// delivered. Real relay processes, real DNS on loopback, real receiving SMTP servers.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, sendMail } from '../harness/smtp-client.js'
import { eventually, runCli, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
const relays: RelayProcess[] = []
const receivers: TestReceiver[] = []

beforeAll(async () => {
  dns = await startDns({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.2'] },
    // A destination whose first MX never greets: an attempt waits there connectTimeout, then the second takes the mail.
    'slow.test': { MX: [{ exchange: 'stall.slow.test', priority: 10 }, { exchange: 'up.slow.test', priority: 20 }] },
    'stall.slow.test': { A: ['127.0.0.4'] },
    'up.slow.test': { A: ['127.0.0.5'] },
  })
})

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
  await Promise.all(receivers.splice(0).map((r) => r.close()))
})

afterAll(async () => {
  await dns?.close()
})

/** The MX of dest.test (127.0.0.2, own port) and a relay that delivers to it. */
async function setup(config: Record<string, unknown> = {}, behaviour: Parameters<TestReceiver['setBehaviour']>[0] = {}) {
  const mx = await startReceiver({ host: '127.0.0.2', behaviour })
  receivers.push(mx)
  const { delivery, ...rest } = config
  const relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s', ...(delivery as object) },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      ...rest,
    },
  })
  relays.push(relay)
  return { mx, relay }
}

let counter = 0
function message(subject: string): { data: string; messageId: string } {
  const messageId = `<durability-${process.pid}-${++counter}@sender.test>`
  return {
    messageId,
    data: `From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: ${subject}\r\nMessage-ID: ${messageId}\r\n\r\nBody of ${subject}.\r\n`,
  }
}

const messageIdOf = (m: ReceivedMessage) => /^Message-ID: (.*)$/im.exec(m.raw.toString('latin1'))?.[1]?.trim()

/** How many times each Message-ID arrived. */
function arrivals(r: TestReceiver): Map<string, number> {
  const counts = new Map<string, number>()
  for (const m of r.messages) {
    const id = messageIdOf(m) ?? '(none)'
    counts.set(id, (counts.get(id) ?? 0) + 1)
  }
  return counts
}

/**
 * One submission on a raw connection; resolves with the reply to the final dot as soon as it is
 * read (the QUIT is sent without waiting), so a test can act right after the 250.
 */
async function submit(port: number, from: string, to: string[], data: string): Promise<string> {
  const { client, greeting } = await connectRaw(port)
  try {
    expect(greeting).toMatch(/^220 /)
    for (const line of ['EHLO client.test', `MAIL FROM:<${from}>`, ...to.map((t) => `RCPT TO:<${t}>`)]) {
      const reply = await client.command(line)
      if (!reply.startsWith('250')) return reply
    }
    const go = await client.command('DATA')
    if (!go.startsWith('354')) return go
    const reply = client.read(10_000)
    client.send(dotStuff(data))
    return await reply
  } finally {
    client.send('QUIT\r\n')
    setTimeout(() => client.close(), 200).unref()
  }
}

/**
 * `relay queue list` once every one of these messages has its 'delivered' line (logged after the
 * queue recorded it): one CLI run, not one per poll. What a user sees: an empty queue.
 */
async function queueAfterDelivery(relay: RelayProcess, messageIds: string[], timeoutMs = 15_000) {
  await Promise.all(messageIds.map((id) => relay.waitForLog((l) => l.event === 'delivered' && l.messageId === id, timeoutMs)))
  return relay.listQueue()
}

/** Resolves with 'refused' when nothing listens on the port, 'accepted' when a connection opens. */
function tryConnect(port: number): Promise<'refused' | 'accepted'> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port })
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error('connect attempt timed out'))
    }, 2000)
    s.once('connect', () => {
      clearTimeout(timer)
      s.destroy()
      resolve('accepted')
    })
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      if (err.code === 'ECONNREFUSED') resolve('refused')
      else reject(err)
    })
  })
}

describe('durability across stops and crashes', () => {
  it('keeps the queue to itself: data directory and spool 0750, queue files 0600 whatever the umask', async () => {
    const { relay } = await setup()
    const m = message('private files')
    expect((await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: m.data })).lastReply).toMatch(/^250 /)
    const mode = (p: string) => fs.statSync(path.join(relay.dataDir, p)).mode & 0o777
    expect(process.umask() & 0o005).toBe(0) // a umask that lets others read (022, 002): what the relay must not rely on
    expect(mode('.') & 0o007).toBe(0)
    expect(mode('spool') & 0o007).toBe(0)
    for (const f of fs.readdirSync(relay.dataDir).filter((f) => f.startsWith('queue.sqlite') || f === 'relay.lock')) expect(mode(f) & 0o077, f).toBe(0)
  })

  it('a second relay on the same data directory refuses to start (exit 1) and changes nothing: no recovery of mail in flight, the pid file kept', async () => {
    // The MX takes the message and never answers: the first relay holds the delivery leased.
    const { mx, relay } = await setup({}, { stall: 'data' })
    const m = message('in flight while a second relay starts')
    expect((await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: m.data })).lastReply).toMatch(/^250 /)
    await eventually(() => mx.refused.some((r) => r.outcome === 'stall'), 10_000, 'the delivery stalled at DATA')
    const second = await runCliAsync(['start', '--config', relay.configFile])
    expect(second.code).toBe(1)
    expect(second.stderr).toMatch(new RegExp(`another relay is running on the data directory .* \\(pid ${relay.child.pid}\\)`))
    // Nothing of the running relay was touched: its work is still leased, its pid file names it.
    const [entry] = await relay.listQueue()
    expect(entry!.recipients[0]!.delivering).toBe(true)
    expect(entry!.recipients[0]!.nextAttemptAt).toBeUndefined()
    expect(fs.readFileSync(path.join(relay.dataDir, 'relay.pid'), 'utf8').trim()).toBe(String(relay.child.pid))
    expect(runCli(['reload', '--config', relay.configFile]).code).toBe(0)
    expect(relay.exited()).toBe(false)
    // The claim dies with the process: after kill -9 the same directory starts, and recovers.
    await relay.kill9()
    mx.setBehaviour({})
    await relay.restart()
    await eventually(() => arrivals(mx).get(m.messageId) === 1, 10_000, 'the message at the MX once')
  })

  it('SIGTERM with deferred mail in the queue: exit 0, and after a restart each message is delivered exactly once', async () => {
    const { mx, relay } = await setup({}, { reply: { mail: () => ({ code: 451, message: '4.3.2 not now' }) } })
    const sent = [message('restart 1'), message('restart 2'), message('restart 3')]
    for (const m of sent) {
      const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: m.data })
      expect(r.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as \w+$/)
    }
    // every message has been tried and deferred at least once
    await eventually(() => new Set(relay.logs.filter((l) => l.event === 'deferred').map((l) => l.messageId)).size === 3, 10_000, '3 deferred messages')
    expect(mx.messages).toHaveLength(0)

    expect(await relay.stop('SIGTERM')).toBe(0)
    const queued = await relay.listQueue()
    expect(queued.map((e) => e.messageId).sort()).toEqual(sent.map((m) => m.messageId).sort())
    for (const e of queued) {
      expect(e.recipients).toHaveLength(1)
      expect(e.recipients[0]!.state).not.toBe('delivered')
      expect(e.recipients[0]!.attempts).toBeGreaterThanOrEqual(1)
      expect(e.recipients[0]!.lastResponse).toMatch(/^451 4\.3\.2 not now/)
    }

    mx.setBehaviour({})
    await relay.restart()
    await mx.waitForMessages(3, 10_000)
    // an empty queue means nothing is left that could be sent again
    expect(await queueAfterDelivery(relay, sent.map((m) => m.messageId))).toEqual([])
    const counts = arrivals(mx)
    expect([...counts.keys()].sort()).toEqual(sent.map((m) => m.messageId).sort())
    expect([...counts.values()]).toEqual([1, 1, 1])
  })
})

// The same crashes with the SMTP sessions in worker processes (config `workers`): kill -9 of the primary.
describe.each([1, 2])('durability across kill -9 (workers: %i)', (workers) => {
  it('kill -9 right after the last 250: every acknowledged message is delivered after a restart', async () => {
    const N = 20
    // The MX defers every message after receiving it, so attempts run while mail comes in.
    const { mx, relay } = await setup({ workers }, { reply: { data: () => ({ code: 451, message: '4.3.0 try again later' }) } })
    const sent = Array.from({ length: N }, (_, i) => message(`crash ${i}`))
    const acknowledged: string[] = []
    const queue = [...sent]
    // four clients in parallel, like a busy submission service
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let m = queue.shift(); m; m = queue.shift()) {
          const reply = await submit(relay.port, 'alice@sender.test', ['bob@dest.test'], m.data)
          if (reply.startsWith('250 ')) acknowledged.push(m.messageId)
        }
      }),
    )
    await relay.kill9()
    expect(acknowledged).toHaveLength(N)
    expect(mx.messages).toHaveLength(0)

    mx.setBehaviour({})
    await relay.restart()
    await eventually(() => acknowledged.every((id) => arrivals(mx).has(id)), 15_000, `all ${N} acknowledged messages at the MX`).catch((err: Error) => {
      const missing = acknowledged.filter((id) => !arrivals(mx).has(id))
      throw new Error(`${err.message}; ${missing.length} acknowledged with 250 but never delivered: ${missing.join(' ')}`)
    })
    expect(await queueAfterDelivery(relay, acknowledged)).toEqual([])
    const counts = arrivals(mx)
    const duplicates = [...counts].filter(([, n]) => n > 1)
    // at-least-once is allowed; report duplicates so they are seen
    if (duplicates.length) console.warn(`kill -9 test: ${duplicates.length} message(s) delivered more than once:`, duplicates)
    for (const id of acknowledged) expect(counts.get(id), id).toBeGreaterThanOrEqual(1)
    expect([...counts.keys()].every((id) => acknowledged.includes(id))).toBe(true)
  })

  it('kill -9 with deliveries in flight: after a restart the leased work is due at once, not after the lease', async () => {
    // The MX takes the whole message and then never answers: the relay holds the work leased.
    const { mx, relay } = await setup({ workers }, { stall: 'data' })
    const sent = [message('in flight 1'), message('in flight 2'), message('in flight 3')]
    for (const m of sent) {
      const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: m.data })
      expect(r.lastReply).toMatch(/^250 /)
    }
    await eventually(() => mx.refused.filter((m) => m.outcome === 'stall').length >= 3, 10_000, '3 deliveries stalled at DATA')
    // the queue shows the work leased, in flight (not due again before the lease, 15 min by default, ends)
    const leased = await relay.listQueue()
    expect(leased).toHaveLength(3)
    for (const e of leased) {
      expect(e.recipients[0]).toMatchObject({ state: 'queued', attempts: 0, delivering: true })
      expect(e.recipients[0]!.nextAttemptAt).toBeUndefined()
    }

    await relay.kill9()
    mx.setBehaviour({})
    const restarted = Date.now()
    await relay.restart()
    await eventually(() => sent.every((m) => arrivals(mx).has(m.messageId)), 10_000, 'the 3 messages at the MX')
    expect(Date.now() - restarted).toBeLessThan(10_000)
    const recovered = await relay.waitForLog((l) => l.msg === 'recovered deliveries the last run left unfinished (a crash, or a stop with deliveries in flight): due again', 1000)
    expect(recovered.recovered).toBe(3)
    expect(await queueAfterDelivery(relay, sent.map((m) => m.messageId))).toEqual([])
    expect([...arrivals(mx).values()]).toEqual([1, 1, 1])
  })
})

describe('an attempt that outlasts delivery.lease', () => {
  it('keeps its lease while it runs: the message is delivered exactly once, nothing is taken over', async () => {
    // The first MX accepts the connection and never greets: the attempt waits there 6 s (the
    // greeting timeout is connectTimeout), then the second MX takes the message. The lease is 3 s.
    const stalled = await startReceiver({ host: '127.0.0.4', behaviour: { stall: 'connect' } })
    receivers.push(stalled)
    const mx = await startReceiver({ host: '127.0.0.5', port: stalled.port })
    receivers.push(mx)
    const other = await startReceiver({ host: '127.0.0.2', port: stalled.port }) // dest.test's MX
    receivers.push(other)
    const relay = await startRelay({
      config: {
        dns: { servers: [dns.server], timeout: '1s' },
        delivery: { port: stalled.port, lease: '3s', connectTimeout: '6s', retry: { base: '1s', factor: 1, max: '1s' } },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
    relays.push(relay)
    const m = message('outlasts its lease')
    const sent = Date.now()
    const reply = (await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@slow.test'], data: m.data })).lastReply
    const queueId = /^250 .* queued as (\w+)$/.exec(reply)?.[1]
    expect(queueId, reply).toBeTruthy()
    await eventually(() => stalled.connections === 1, 5000, 'the attempt waiting at the first MX')
    // Past the lease, other mail comes and goes: each delivery that ends makes the relay scan its queue.
    await new Promise((r) => setTimeout(r, 4000))
    const next = message('meanwhile')
    expect((await sendMail(relay.port, { from: 'alice@sender.test', to: ['carol@dest.test'], data: next.data })).lastReply).toMatch(/^250 /)
    await eventually(() => arrivals(other).get(next.messageId) === 1, 5000, 'the other message delivered')
    await eventually(() => arrivals(mx).has(m.messageId), 20_000, 'the message at the second MX')
    expect(Date.now() - sent).toBeGreaterThan(6000) // the attempt did outlast its lease, twice over
    expect(await queueAfterDelivery(relay, [m.messageId, next.messageId])).toEqual([])
    // A second attempt (started by a scan after the lease expired, 4 s in) would have reached the
    // stalled MX too, and the second one 6 s later: time for it to show.
    await new Promise((r) => setTimeout(r, 3500))
    expect(arrivals(mx).get(m.messageId)).toBe(1)
    expect(stalled.connections).toBe(1)
    expect(relay.logs.filter((l) => l.event === 'delivered' && l.queueId === queueId)).toHaveLength(1)
    expect(relay.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('took over'))).toEqual([])
  })
})

describe('durability across stops', () => {
  it('SIGTERM during an open SMTP transaction: no new connections, the session finishes with 250, exit 0, mail delivered', async () => {
    const { mx, relay } = await setup({ shutdownTimeout: '5s' })
    const m = message('mid transaction')
    const { client, greeting } = await connectRaw(relay.port)
    expect(greeting).toMatch(/^220 /)
    expect(await client.command('EHLO client.test')).toMatch(/^250/)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<bob@dest.test>')).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const bytes = dotStuff(m.data)
    const half = m.data.indexOf('Subject:')
    client.send(bytes.subarray(0, half))

    const signalled = Date.now()
    const exit = relay.stop('SIGTERM', 15_000)
    await relay.waitForLog((l) => l.msg === 'shutting down', 5000)
    expect(await eventually(async () => (await tryConnect(relay.port)) === 'refused', 2000, 'the listener to close')).toBe(true)
    expect(relay.exited()).toBe(false)

    const reply = client.read(5000)
    client.send(bytes.subarray(half))
    expect(await reply).toMatch(/^250 2\.0\.0 Ok: queued as \w+$/)
    // the session may end (smtp-server answers any command after the shutdown began with 421 and closes)
    expect(await client.command('QUIT')).toMatch(/^(221|421) /)
    await client.closed
    expect(await exit).toBe(0)
    expect(Date.now() - signalled).toBeLessThan(5000 + 1000)

    // delivered before the exit or after a restart, once either way
    await relay.restart()
    await eventually(() => arrivals(mx).has(m.messageId), 10_000, 'the message at the MX')
    expect(await queueAfterDelivery(relay, [m.messageId])).toEqual([])
    expect(arrivals(mx).get(m.messageId)).toBe(1)
  })

  it('SIGTERM with a client that never finishes: cut with 421 after shutdownTimeout, exit 0', async () => {
    const { relay } = await setup({ shutdownTimeout: '1s' })
    const { client } = await connectRaw(relay.port)
    expect(await client.command('EHLO client.test')).toMatch(/^250/)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    const signalled = Date.now()
    const exit = relay.stop('SIGTERM', 15_000)
    expect(await client.read(5000)).toMatch(/^421 /)
    await client.closed
    expect(await exit).toBe(0)
    const took = Date.now() - signalled
    expect(took).toBeGreaterThanOrEqual(900)
    expect(took).toBeLessThan(1000 + 2000)
  })

  it('the same signal again (2 s or more later) while draining: exit 1 at once, logged once, the drain not started over', async () => {
    const { relay } = await setup({ shutdownTimeout: '20s' })
    const { client } = await connectRaw(relay.port)
    expect(await client.command('EHLO client.test')).toMatch(/^250/)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    const exit = relay.stop('SIGTERM', 30_000)
    await relay.waitForLog((l) => l.msg === 'shutting down')
    await new Promise((r) => setTimeout(r, 2500))
    relay.child.kill('SIGTERM')
    expect(await exit).toBe(1)
    expect(relay.logs.filter((l) => l.msg === 'shutting down')).toHaveLength(1)
    expect(relay.logs.filter((l) => l.msg === 'SIGTERM again: exiting now')).toHaveLength(1)
    client.close()
  })

  it('relay queue list shows each deferred recipient with the queue id from the 250 reply', async () => {
    const { relay } = await setup(
      { delivery: { retry: { base: '1h', factor: 1, max: '1h' } } },
      { reply: { rcpt: () => ({ code: 451, message: '4.3.2 mailbox busy, try later' }) } },
    )
    const m = message('queue list')
    const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test', 'carol@dest.test'], data: m.data })
    const id = /^250 2\.0\.0 Ok: queued as (\w+)$/.exec(r.lastReply)?.[1]
    expect(id, r.lastReply).toBeTruthy()
    await eventually(() => relay.logs.filter((l) => l.event === 'deferred' && l.queueId === id).length === 2, 10_000, '2 deferrals')
    const deferredAt = Date.now()

    const list = await relay.listQueue()
    expect(list).toHaveLength(1)
    const entry = list[0]!
    expect(entry).toMatchObject({ id, messageId: m.messageId, sender: 'alice@sender.test' })
    expect(entry.recipients.map((x) => x.address)).toEqual(['bob@dest.test', 'carol@dest.test'])
    for (const rcpt of entry.recipients) {
      expect(rcpt).toMatchObject({ state: 'deferred', attempts: 1 })
      expect(rcpt.lastResponse).toMatch(/^451 4\.3\.2 mailbox busy, try later/)
      // next attempt: one retry interval (1 h) after the attempt
      expect(rcpt.nextAttemptAt).toBeGreaterThan(deferredAt + 55 * 60_000)
      expect(rcpt.nextAttemptAt).toBeLessThanOrEqual(deferredAt + 60 * 60_000)
    }

    const plain = runCli(['queue', 'list', '--config', relay.configFile])
    expect(plain.code, plain.stderr).toBe(0)
    const lines = plain.stdout.split('\n')
    expect(lines[0]).toMatch(new RegExp(`^${id}  \\S+  \\d+ bytes  from <alice@sender\\.test>  ${m.messageId}$`))
    const next = new Date(entry.recipients[0]!.nextAttemptAt!).toISOString().slice(0, 19) // to the second
    expect(lines[1]).toMatch(/^ {4}deferred {2}<bob@dest\.test> {2}attempts 1 {2}next \S+ {2}last: 451 4\.3\.2 mailbox busy, try later/)
    expect(lines[1]).toContain(`next ${next}`)
    expect(lines[2]).toMatch(/^ {4}deferred {2}<carol@dest\.test> {2}attempts 1 /)
    expect(plain.stdout).toContain('1 message in queue\n')
  })
})
