// Config `workers: 2` and delivery: each SMTP worker delivers the new mail it received itself; the
// primary retries what was deferred, takes over what a dead worker was delivering at once (not after
// the 15-min lease), and holds route caps and domain throttles for the whole relay.
// The delivery log lines are written by the primary (events are forwarded), so they cannot tell
// which process delivered: the receiver finds it by the outbound socket itself (its source port in
// /proc/net/tcp, then which relay process holds that socket in /proc/<pid>/fd).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import { SMTPServer, type SMTPServerSession } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'
import { childNodes } from '../harness/processes.js'

const HOST = '127.0.0.2'
/** Between the relay's admission and the MAIL FROM at the receiver (as route-caps.test.ts). */
const SLACK_MS = 250

let dns: TestDns
const relays: RelayProcess[] = []
const receivers: Rx[] = []

beforeAll(async () => {
  const cap = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`d${i}.cap.test`, { A: [HOST] }]))
  dns = await startDns({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { A: [HOST] }, ...cap })
})

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
  await Promise.all(receivers.splice(0).map((r) => r.close()))
})

afterAll(async () => {
  await dns?.close()
})

// ---- which process holds a TCP connection ---------------------------------------------------------


/** The inode of the socket from local port `from` to remote port `to` (the relay's end of a connection). */
function socketInode(from: number, to: number): string | undefined {
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const rows = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').slice(1) : []
    for (const row of rows) {
      const f = row.trim().split(/\s+/)
      if (f.length < 10) continue
      const port = (a: string) => parseInt(a.slice(a.lastIndexOf(':') + 1), 16)
      if (port(f[1]!) === from && port(f[2]!) === to) return f[9]
    }
  }
  return undefined
}

/** Which of `pids` holds socket `inode`. */
function holder(inode: string, pids: number[]): number | undefined {
  for (const pid of pids) {
    let fds: string[] = []
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`)
    } catch {
      continue
    }
    for (const fd of fds) {
      try {
        if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`) return pid
      } catch {
        // closed meanwhile
      }
    }
  }
  return undefined
}

// ---- a receiver that knows which relay process delivers -------------------------------------------

type Verdict = 'accept' | 'stall' | { code: number; message: string }

interface Attempt {
  messageId: string
  /** The relay process that holds the connection (undefined: not found). */
  pid?: number
  outcome: 'accepted' | 'stalled' | 'refused'
  at: number
}

interface Rx {
  port: number
  /** The relay's primary: it and its children are the candidates for each connection. */
  relayPid: number
  /** Decides each message once DATA is complete (`n`: how many times this Message-ID came). */
  verdict: (messageId: string, n: number) => Verdict
  /** How long the 250 to DATA is held. */
  holdMs: number
  attempts: Attempt[]
  /** Transaction starts (MAIL FROM). */
  starts: number[]
  maxTransactions: number
  maxConnections: number
  close(): Promise<void>
}

const messageIdOf = (raw: string) => /^Message-ID: (.*)$/im.exec(raw)?.[1]?.trim() ?? '(none)'

async function startRx(): Promise<Rx> {
  const pids = new Map<string, number | undefined>()
  let transactions = 0
  let connections = 0
  const rx: Rx = {
    port: 0, relayPid: 0, verdict: () => 'accept', holdMs: 0, attempts: [], starts: [], maxTransactions: 0, maxConnections: 0,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
  const endTransaction = (s: SMTPServerSession & { open?: boolean }) => {
    if (s.open) transactions--
    s.open = false
  }
  const server = new SMTPServer({
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    hideSTARTTLS: true,
    closeTimeout: 100,
    onConnect(session, cb) {
      rx.maxConnections = Math.max(rx.maxConnections, ++connections)
      // The relay's socket is open while it waits for the greeting: find its process now.
      const inode = socketInode(session.remotePort, rx.port)
      pids.set(session.id, inode && rx.relayPid ? holder(inode, [rx.relayPid, ...childNodes(rx.relayPid)]) : undefined)
      cb()
    },
    onClose(session) {
      connections--
      endTransaction(session)
    },
    onMailFrom(_address, session: SMTPServerSession & { open?: boolean }, cb) {
      rx.starts.push(Date.now())
      session.open = true
      rx.maxTransactions = Math.max(rx.maxTransactions, ++transactions)
      cb()
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.once('end', () => {
        const messageId = messageIdOf(Buffer.concat(chunks).toString('latin1'))
        const n = rx.attempts.filter((a) => a.messageId === messageId).length + 1
        const v = rx.verdict(messageId, n)
        const attempt: Attempt = { messageId, pid: pids.get(session.id), outcome: v === 'accept' ? 'accepted' : v === 'stall' ? 'stalled' : 'refused', at: Date.now() }
        if (v === 'stall') return void rx.attempts.push(attempt)
        setTimeout(() => {
          rx.attempts.push(attempt)
          endTransaction(session)
          if (v === 'accept') cb(null, 'OK: message queued')
          else cb(Object.assign(new Error(v.message), { responseCode: v.code }))
        }, v === 'accept' ? rx.holdMs : 0)
      })
    },
  })
  server.on('error', () => undefined)
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject)
    server.listen(0, HOST, () => resolve())
  })
  rx.port = (server.server.address() as { port: number }).port
  receivers.push(rx)
  return rx
}

/** Message-ID → how many times it was accepted. */
function arrivals(rx: Rx): Map<string, number> {
  const counts = new Map<string, number>()
  for (const a of rx.attempts) if (a.outcome === 'accepted') counts.set(a.messageId, (counts.get(a.messageId) ?? 0) + 1)
  return counts
}

// ---- the relay --------------------------------------------------------------------------------------

async function setup(delivery: Record<string, unknown> = {}, plugins: unknown[] = []) {
  const rx = await startRx()
  const relay = await startRelay({
    config: {
      workers: 2,
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s', mtaSts: { enabled: false }, delayWarning: false, ...delivery },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }], ...plugins],
    },
  })
  relays.push(relay)
  rx.relayPid = relay.child.pid!
  const workers = childNodes(rx.relayPid)
  expect(workers).toHaveLength(2)
  return { rx, relay, primary: rx.relayPid, workers }
}

let counter = 0
function message(subject: string, from = 'alice@sender.test', to = 'bob@dest.test'): { messageId: string; data: string; from: string; to: string } {
  const messageId = `<workers-delivery-${process.pid}-${++counter}@sender.test>`
  return { messageId, from, to, data: `From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: ${messageId}\r\n\r\nBody of ${subject}.\r\n` }
}

/** One session per message; each must be answered 250. */
async function send(relay: RelayProcess, ms: { data: string; from: string; to: string }[]): Promise<void> {
  const replies = await Promise.all(ms.map((m) => sendMail(relay.port, { from: m.from, to: [m.to], data: m.data })))
  for (const r of replies) expect(r.lastReply).toMatch(/^250 /)
}

/** The pid that wrote the 'accepted' line of each Message-ID (the worker that served the session). */
function acceptedBy(relay: RelayProcess): Map<string, number> {
  return new Map(relay.logs.filter((l) => l.msg === 'accepted').map((l) => [String(l.messageId), l.pid as number]))
}

/** Both workers received some of `sent` (their 'accepted' lines). */
const bothWorkers = (relay: RelayProcess, sent: { messageId: string }[]) =>
  eventually(() => {
    const a = acceptedBy(relay)
    return sent.every((m) => a.has(m.messageId)) && new Set(sent.map((m) => a.get(m.messageId))).size === 2
  }, 5000, 'sessions on both workers')

describe('workers: 2, delivery', () => {
  it('new mail is delivered by the worker that received it, each message once', async () => {
    const { rx, relay, primary, workers } = await setup()
    const sent: ReturnType<typeof message>[] = []
    // Pairs of sessions until both workers received some (round-robin: 4 sessions are enough, 12 at most).
    for (let s = 0; s < 12 && (s < 4 || new Set(sent.map((m) => acceptedBy(relay).get(m.messageId))).size < 2); s += 2) {
      const batch = [message(`fresh ${s}`), message(`fresh ${s + 1}`)]
      sent.push(...batch)
      await send(relay, batch)
    }
    await eventually(() => sent.every((m) => arrivals(rx).has(m.messageId)), 15_000, `${sent.length} messages at the receiver`)
    await eventually(async () => (await relay.listQueue()).length === 0, 10_000, 'an empty queue')
    const accepted = await eventually(() => {
      const a = acceptedBy(relay)
      return sent.every((m) => a.has(m.messageId)) && a
    }, 5000, "the 'accepted' lines")
    expect(new Set(sent.map((m) => accepted.get(m.messageId)))).toEqual(new Set(workers))

    expect([...arrivals(rx).values()].every((n) => n === 1)).toBe(true)
    expect(arrivals(rx).size).toBe(sent.length)
    for (const a of rx.attempts) {
      expect(a.pid, a.messageId).not.toBe(primary)
      // delivered from memory by the very process that answered 250
      expect(a.pid, a.messageId).toBe(accepted.get(a.messageId))
    }
    // the events raised in the workers reach the primary's event log
    await eventually(() => relay.logs.filter((l) => l.event === 'delivered' && l.msg === 'delivered').length === sent.length, 5000, `${sent.length} 'delivered' lines`)
  })

  it('a message deferred with 451 on its first try is retried by the primary and delivered once', async () => {
    const { rx, relay, primary, workers } = await setup()
    rx.verdict = (_id, n) => (n === 1 ? { code: 451, message: '4.3.0 try again later' } : 'accept')
    const m = message('deferred once')
    await send(relay, [m])
    await eventually(() => arrivals(rx).get(m.messageId), 10_000, 'the message at the receiver')
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.messageId === m.messageId, 1000)
    expect(deferred.response).toMatch(/^451 4\.3\.0 try again later/)
    await relay.waitForLog((l) => l.event === 'delivered' && l.messageId === m.messageId, 5000)
    await eventually(async () => (await relay.listQueue()).length === 0, 10_000, 'an empty queue')
    expect(rx.attempts.map((a) => a.outcome)).toEqual(['refused', 'accepted'])
    expect(workers).toContain(rx.attempts[0]!.pid)
    expect(rx.attempts[1]!.pid).toBe(primary)
    expect(arrivals(rx).get(m.messageId)).toBe(1)
  })

  it('kill -9 of the worker delivering a message (stalled at DATA): delivered within seconds, not after the lease', async () => {
    const { rx, relay, primary, workers } = await setup()
    rx.verdict = () => 'stall'
    const m = message('stalled in a worker')
    await send(relay, [m])
    const stalled = await eventually(() => rx.attempts.find((a) => a.outcome === 'stalled'), 10_000, 'the delivery stalled at DATA')
    expect(workers).toContain(stalled.pid)
    // leased to the worker, in flight: not due before the lease (15 min) ends
    const listed = (await relay.listQueue())[0]!.recipients[0]!
    expect(listed.delivering).toBe(true)
    expect(listed.nextAttemptAt).toBeUndefined()

    rx.verdict = () => 'accept'
    const killed = Date.now()
    process.kill(stalled.pid!, 'SIGKILL')
    const line = await relay.waitForLog((l) => l.msg === 'an SMTP worker died while delivering: its recipients are due again', 5000)
    expect(line.recipients).toBe(1)
    await eventually(() => arrivals(rx).get(m.messageId), 10_000, 'the message at the receiver')
    expect(Date.now() - killed).toBeLessThan(5000)
    console.log(`workers-delivery: kill -9 of the delivering worker: delivered ${Date.now() - killed} ms later`)
    await eventually(async () => (await relay.listQueue()).length === 0, 10_000, 'an empty queue')
    // the stalled copy got no reply: one accepted delivery, by the primary
    expect(arrivals(rx).get(m.messageId)).toBe(1)
    expect(rx.attempts.find((a) => a.outcome === 'accepted')?.pid).toBe(primary)
    expect(relay.exited()).toBe(false)
  })

  it('a route cap (perSecond 2) holds for the whole relay: 8 sessions over both workers, no faster than 2 per second, none bounce', async () => {
    const routes = [{ name: 'capped', match: { sender: 'persecond@app.test' }, kind: 'mx', limits: { perSecond: 2 } }]
    const { rx, relay, workers } = await setup({ throttle: { hostWait: '10s' } }, [['routing', { routes }]])
    // Warm-up (DNS, first connections) without the cap.
    const warm = message('warm-up')
    await send(relay, [warm])
    await eventually(() => arrivals(rx).has(warm.messageId), 10_000, 'the warm-up message')
    rx.starts.length = 0

    const sent = Array.from({ length: 8 }, (_, i) => message(`capped ${i}`, 'persecond@app.test', `user@d${i}.cap.test`))
    await send(relay, sent)
    await eventually(() => sent.every((m) => arrivals(rx).has(m.messageId)), 15_000, '8 messages through route capped')
    await bothWorkers(relay, sent)
    const starts = [...rx.starts].sort((a, b) => a - b)
    const byPid = rx.attempts.filter((a) => sent.some((m) => m.messageId === a.messageId)).map((a) => a.pid)
    console.log(`workers-delivery: route cap perSecond 2, 8 messages: starts at +${starts.map((t) => t - starts[0]!).join(', +')} ms, delivered by ${byPid.join(', ')}`)
    expect(starts).toHaveLength(8)
    // both workers delivered (the cap counted in the primary for both), none was left to the primary
    expect(new Set(byPid)).toEqual(new Set(workers))
    // the k-th start not before floor(k / 2) s; never 3 within a second
    expect(starts.map((t) => t - starts[0]!).filter((dt, k) => dt < Math.floor(k / 2) * 1000 - SLACK_MS)).toEqual([])
    for (let k = 2; k < starts.length; k++) expect(starts[k]! - starts[k - 2]!).toBeGreaterThanOrEqual(1000 - SLACK_MS)
    expect(starts[7]! - starts[0]!).toBeGreaterThanOrEqual(3000 - SLACK_MS)
    const to = sent.map((m) => m.to)
    expect(relay.logs.filter((l) => l.event === 'bounced' && to.includes(String(l.recipient)))).toEqual([])
    expect([...arrivals(rx).values()].every((n) => n === 1)).toBe(true)
  })

  it('delivery.concurrency.perDomain 1 (and global): one delivery at a time to the domain for the whole relay, workers and primary together; every message once', async () => {
    const { rx, relay } = await setup({ concurrency: { global: 100, perDomain: 1 } })
    rx.holdMs = 400
    const sent = Array.from({ length: 8 }, (_, i) => message(`one at a time ${i}`))
    await send(relay, sent)
    await bothWorkers(relay, sent)
    await eventually(() => sent.every((m) => arrivals(rx).has(m.messageId)), 20_000, '8 messages at the receiver')
    await eventually(async () => (await relay.listQueue()).length === 0, 10_000, 'an empty queue')
    expect([...arrivals(rx).values()]).toEqual(Array(8).fill(1))
    expect(rx.maxTransactions).toBe(1)
  })

  it('delivery.throttle.domains concurrency 1: one connection and one transaction at a time for the whole relay', async () => {
    const { rx, relay, primary } = await setup({ throttle: { domains: { 'dest.test': { concurrency: 1 } } } })
    rx.holdMs = 300
    const sent = Array.from({ length: 6 }, (_, i) => message(`throttled ${i}`))
    await send(relay, sent)
    await bothWorkers(relay, sent)
    await eventually(() => sent.every((m) => arrivals(rx).has(m.messageId)), 15_000, '6 messages at the receiver')
    await eventually(async () => (await relay.listQueue()).length === 0, 10_000, 'an empty queue')
    expect([...arrivals(rx).values()]).toEqual(Array(6).fill(1))
    expect(rx.maxTransactions).toBe(1)
    expect(rx.maxConnections).toBe(1)
    // one set of limits: the primary delivers everything to a throttled destination
    expect(new Set(rx.attempts.map((a) => a.pid))).toEqual(new Set([primary]))
  })
})
