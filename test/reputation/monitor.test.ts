// The reputation plugin's monitor on a real (SQLite) queue: delivery results recorded through the queue,
// then the check logs one warning per offending sending domain and rate, at most once an hour,
// and its timers run the check by themselves.
import path from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseConfig } from '../../core/config/load.js'
import { openQueue } from '../../core/queue/open.js'
import { Spool } from '../../core/queue/spool.js'
import { newQueueId } from '../../core/queue/id.js'
import type { Queue, RecipientResult } from '../../core/queue/types.js'
import { DEFAULT_THRESHOLDS } from '../../core/index.js'
import { ReputationMonitor } from '../../plugins/reputation/monitor.js'
import { eventually, tempDir } from '../harness/relay.js'

const dir = tempDir('relay-monitor-')
const config = parseConfig({ hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, 'data') }, dir)
const thresholds = { ...DEFAULT_THRESHOLDS, minVolume: 4 }
let queue: Queue

/** A pino logger whose JSON lines land in `lines`. */
function capture() {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>)
      cb()
    },
  })
  return { log: pino({ level: 'info' }, stream), lines }
}

/** Sends one message per outcome through the queue: enqueue, claim, complete. */
async function sendThrough(sender: string, outcomes: ('delivered' | 'bounced')[]) {
  const now = Date.now()
  for (const outcome of outcomes) {
    const id = newQueueId()
    await queue.enqueue({
      id,
      sender,
      recipients: [{ address: `rcpt-${id}@dest.test`, domain: 'dest.test' }],
      headers: Buffer.from(`Subject: ${id}\r\n`),
      body: { inline: Buffer.from('\r\nHello.\r\n') },
      size: 40,
      receivedAt: now,
      expiresAt: now + 86_400_000,
      meta: {},
    })
    const { jobs } = await queue.claim({ limit: 10, perDomain: 10, inFlight: {}, leaseMs: 60_000, now: Date.now() })
    const job = jobs.find((j) => j.message.id === id)
    if (!job) throw new Error(`message ${id} was not claimed`)
    const results: RecipientResult[] = job.recipients.map((r) =>
      outcome === 'delivered' ? { rowId: r.rowId, state: 'delivered', response: '250 2.0.0 Ok' } : { rowId: r.rowId, state: 'bounced', response: '550 5.1.1 User unknown', category: 'bad-mailbox' },
    )
    await queue.complete(id, results)
  }
}

beforeAll(async () => {
  queue = await openQueue(config, { spool: new Spool(config.dataDir) })
  await sendThrough('news@bad.test', ['delivered', 'delivered', 'bounced', 'bounced'])
  await sendThrough('news@good.test', ['delivered', 'delivered', 'delivered', 'delivered'])
  await sendThrough('news@small.test', ['bounced', 'bounced']) // a high rate below minVolume
})

afterAll(async () => {
  await queue?.close()
})

describe('ReputationMonitor', () => {
  it('logs a warning per offending domain, then stays quiet for an hour', async () => {
    const { log, lines } = capture()
    const monitor = new ReputationMonitor(queue, () => thresholds, log)
    const now = Date.now()
    const first = await monitor.check(now)
    expect(first.map((w) => [w.senderDomain, w.kind])).toEqual([['bad.test', 'bounce-rate']])
    expect(lines.filter((l) => l.event === 'reputation-warning')).toEqual([
      expect.objectContaining({ level: 40, event: 'reputation-warning', senderDomain: 'bad.test', bounceRate: 0.5, threshold: 0.05, volume: 4, msg: 'bad.test: bounce rate 50% over the last day is above 5%' }),
    ])
    expect(await monitor.check(now + 30 * 60_000)).toEqual([])
    expect(lines.filter((l) => l.event === 'reputation-warning')).toHaveLength(1)
    // An hour later it says it again (the counters are still within the day).
    expect((await monitor.check(now + 61 * 60_000)).map((w) => w.senderDomain)).toEqual(['bad.test'])
    expect(lines.filter((l) => l.event === 'reputation-warning')).toHaveLength(2)
  })

  it('remembers only the warnings of the last hour: sending domains that stopped warning are forgotten', async () => {
    // Sending domains are what senders write: each one that ever warned stayed in memory for good.
    for (let i = 0; i < 20; i++) await sendThrough(`news@many${i}.test`, ['bounced', 'bounced', 'bounced', 'bounced'])
    const { log } = capture()
    const monitor = new ReputationMonitor(queue, () => thresholds, log)
    const now = Date.now()
    expect((await monitor.check(now)).length).toBeGreaterThanOrEqual(20)
    expect(monitor.remembered).toBeGreaterThanOrEqual(20)
    // A day and more later the figures are quiet, and so is its memory.
    expect(await monitor.check(now + 25 * 3_600_000)).toEqual([])
    expect(monitor.remembered).toBe(0)
  })

  it('runs by itself shortly after start and on its interval; stop ends it', async () => {
    const { log, lines } = capture()
    const monitor = new ReputationMonitor(queue, () => thresholds, log, { every: 50, firstAfter: 20 })
    monitor.start()
    await eventually(() => lines.some((l) => l.event === 'reputation-warning'), 5000, 'the first check')
    await monitor.stop()
    const count = lines.length
    await new Promise((r) => setTimeout(r, 200))
    expect(lines.length).toBe(count)
  })

  it('a failing queue is an error line, not an exception', async () => {
    const { log, lines } = capture()
    const closed = await openQueue(parseConfig({ hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, 'closed') }, dir), { spool: new Spool(path.join(dir, 'closed')) })
    await closed.close()
    expect(await new ReputationMonitor(closed, () => thresholds, log).check()).toEqual([])
    expect(lines).toEqual([expect.objectContaining({ level: 50, msg: 'reputation check failed' })])
  })
})
