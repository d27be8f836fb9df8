// The delivery scheduler and the leases of the work it has in flight (core/delivery/leases.ts):
// while an attempt runs, its recipients' leases are renewed every lease/3 (one batched queue call
// per tick; a failed renewal is logged, not fatal); a claim that hands back recipients an attempt
// of this process still holds (their lease ran out under it) starts no second attempt for them,
// and they are not reported as taken over. A stub queue and a deliver hook that holds each
// attempt until the test lets it finish stand in for the rest of the relay.
import { afterEach, describe, expect, it } from 'vitest'
import os from 'node:os'
import path from 'node:path'
import type { Resolver } from 'node:dns/promises'
import { pino } from 'pino'
import { parseConfig } from '../../core/config/load.js'
import { DeliveryScheduler } from '../../core/delivery/scheduler.js'
import type { HookBus } from '../../core/hooks/bus.js'
import type { ClaimOptions, ClaimResult, Job, Queue, RecipientResult } from '../../core/queue/types.js'

const LEASE_MS = 300

function jobOf(id: string, domain: string, rowIds: number[]): Job {
  const now = Date.now()
  return {
    domain,
    message: {
      id, sender: 'alice@sender.test', headers: Buffer.from(`Subject: ${id}\r\n\r\n`), body: { inline: Buffer.from('Body.\r\n') },
      size: 30, receivedAt: now, expiresAt: now + 86_400_000, meta: {},
    },
    recipients: rowIds.map((rowId) => ({ rowId, address: `r${rowId}@${domain}`, attempts: 0 })),
  }
}

/** What the scheduler did through the queue and the deliver hook. */
interface Scene {
  scheduler: DeliveryScheduler
  /** Attempts started (deliver hook runs), by queue id and domain. */
  attempts: string[]
  renewals: { rowIds: number[]; until: number; at: number }[]
  completes: { queueId: string; results: RecipientResult[] }[]
  logs: { level: number; msg: string; recipients?: number }[]
  /** Lets every attempt started so far finish (deferred by the deliver hook). */
  finishAll: () => void
  takeovers: number[]
}

const stops: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop()
})

/** `claims`: what each claim returns, in turn (the last one again and again). */
function scene(claims: ClaimResult[], o: { renewFails?: number } = {}): Scene {
  const attempts: string[] = []
  const renewals: Scene['renewals'] = []
  const completes: Scene['completes'] = []
  const logs: Scene['logs'] = []
  const waiting: (() => void)[] = []
  let claimsMade = 0
  let renewFails = o.renewFails ?? 0
  const queue = new Proxy({} as Queue, {
    get: (_, method) => {
      if (method === 'then') return undefined
      if (method === 'claim') {
        return async (_o: ClaimOptions): Promise<ClaimResult> => {
          const r = claims[Math.min(claimsMade++, claims.length - 1)]!
          return { ...r, jobs: r.jobs.map((j) => ({ ...j, recipients: j.recipients.map((x) => ({ ...x })) })), nextDueAt: Date.now() + 20 }
        }
      }
      if (method === 'renewLeases') {
        return async (rowIds: number[], until: number) => {
          renewals.push({ rowIds: [...rowIds].sort((a, b) => a - b), until, at: Date.now() })
          if (renewFails-- > 0) throw new Error('connection lost')
        }
      }
      if (method === 'complete') {
        return async (queueId: string, results: RecipientResult[]) => {
          completes.push({ queueId, results })
          return { finished: true }
        }
      }
      if (method === 'delayCandidates' || method === 'owedDsnMessages') return async () => []
      return async () => undefined
    },
  })
  const hooks = {
    has: () => false,
    emit: async () => undefined,
    run: (_name: string, ctx: { message: { id: string }; domain: string }) => {
      attempts.push(`${ctx.message.id}/${ctx.domain}`)
      return new Promise((resolve) => waiting.push(() => resolve({ plugin: 'test', verdict: { action: 'tempfail', message: 'not now' } })))
    },
  } as unknown as HookBus
  const log = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) })
  const config = parseConfig({ hostname: 'relay.test', dataDir: path.join(os.tmpdir(), 'relay-leases-test'), delivery: { lease: `${LEASE_MS}ms` } }, process.cwd())
  const scheduler = new DeliveryScheduler(config, log, queue, {} as Resolver, hooks)
  const takeovers: number[] = []
  scheduler.onTakeover = (n) => takeovers.push(n)
  stops.push(async () => {
    for (const finish of waiting.splice(0)) finish()
    await scheduler.stop(1000)
  })
  return { scheduler, attempts, renewals, completes, logs, takeovers, finishAll: () => waiting.splice(0).forEach((f) => f()) }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('the leases of deliveries in flight', () => {
  it('are renewed every lease/3 while the attempt runs, all rows in one call; no more once it ended', async () => {
    const s = scene([{ jobs: [jobOf('Q1', 'slow.test', [1, 2]), jobOf('Q2', 'other.test', [3])], takenOver: 0 }, { jobs: [], takenOver: 0 }])
    s.scheduler.start()
    await sleep(LEASE_MS * 2 + 50)
    expect(s.attempts.sort()).toEqual(['Q1/slow.test', 'Q2/other.test'])
    // Two ticks (at 100 ms and 200 ms, ...): each one call for every row in flight, to now + lease.
    expect(s.renewals.length).toBeGreaterThanOrEqual(4)
    expect(s.renewals.length).toBeLessThanOrEqual(7)
    for (const r of s.renewals) {
      expect(r.rowIds).toEqual([1, 2, 3])
      expect(r.until).toBeGreaterThanOrEqual(r.at + LEASE_MS - 5)
      expect(r.until).toBeLessThanOrEqual(r.at + LEASE_MS + 5)
    }
    s.finishAll()
    await sleep(20)
    expect(s.completes.map((c) => c.queueId).sort()).toEqual(['Q1', 'Q2'])
    const after = s.renewals.length
    await sleep(LEASE_MS)
    expect(s.renewals.length).toBe(after)
  })

  it('the fast path (mail leased at intake, delivered from memory) is renewed too', async () => {
    const s = scene([{ jobs: [], takenOver: 0 }])
    s.scheduler.start()
    await sleep(20)
    const message = jobOf('Q3', 'fast.test', []).message
    expect(s.scheduler.claim(['fast.test', 'fast.test'])).toBeGreaterThan(Date.now())
    s.scheduler.queued({ ...message, recipients: [{ address: 'a@fast.test', domain: 'fast.test' }, { address: 'b@fast.test', domain: 'fast.test' }] }, [7, 8])
    await sleep(LEASE_MS)
    expect(s.attempts).toEqual(['Q3/fast.test'])
    expect(s.renewals.length).toBeGreaterThanOrEqual(2)
    expect(s.renewals.every((r) => r.rowIds.join() === '7,8')).toBe(true)
  })

  it('a failed renewal is logged and tried again at the next tick', async () => {
    const s = scene([{ jobs: [jobOf('Q4', 'slow.test', [4])], takenOver: 0 }, { jobs: [], takenOver: 0 }], { renewFails: 1 })
    s.scheduler.start()
    await sleep(LEASE_MS + 50)
    expect(s.renewals.length).toBeGreaterThanOrEqual(2)
    const failed = s.logs.filter((l) => l.msg.startsWith('renewing the leases of deliveries in flight failed'))
    expect(failed).toHaveLength(1)
    expect(failed[0]).toMatchObject({ level: 40, recipients: 1 })
    expect(s.attempts).toEqual(['Q4/slow.test'])
  })

  it('a claim that hands back rows an attempt here still holds starts no second attempt for them, nor counts them as taken over', async () => {
    // The first claim leases rows 1 and 2; every later one finds their lease expired and hands them
    // back (counted as taken over), with row 5 of the same message and domain, and another job.
    const claims: ClaimResult[] = [
      { jobs: [jobOf('Q1', 'slow.test', [1, 2])], takenOver: 0 },
      // Row 5's earlier lease was a dead holder's: of the 3 counted, 1 is a takeover.
      { jobs: [jobOf('Q1', 'slow.test', [1, 2, 5]), jobOf('Q6', 'other.test', [6])], takenOver: 3 },
      { jobs: [jobOf('Q1', 'slow.test', [1, 2, 5])], takenOver: 3 },
    ]
    const s = scene(claims)
    s.scheduler.start()
    await sleep(200)
    // Q1's rows 1 and 2 once; row 5 (not in flight here) and Q6 in attempts of their own.
    expect(s.attempts.sort()).toEqual(['Q1/slow.test', 'Q1/slow.test', 'Q6/other.test'])
    // Row 5 was taken over once (its earlier lease was not ours); rows 1 and 2 never.
    expect(s.takeovers).toEqual([1])
    expect(s.logs.filter((l) => l.msg.startsWith('took over')).map((l) => l.recipients)).toEqual([1])
    claims.splice(0, claims.length, { jobs: [], takenOver: 0 })
    s.finishAll()
    await sleep(50)
    // Each row's result once.
    const reported = s.completes.flatMap((c) => c.results.map((r) => r.rowId)).sort((a, b) => a - b)
    expect(reported).toEqual([1, 2, 5, 6])
  })

  it("a row id a newer message got while an attempt here still holds it (SQLite reuses a deleted row's id) is the newer message's: its attempt starts", async () => {
    // Q1's attempt holds row 1; Q1 left the queue and Q9's recipient was given id 1 before Q1's attempt let go of it.
    const claims: ClaimResult[] = [
      { jobs: [jobOf('Q1', 'slow.test', [1])], takenOver: 0 },
      { jobs: [jobOf('Q9', 'new.test', [1])], takenOver: 0 },
      { jobs: [], takenOver: 0 },
    ]
    const s = scene(claims)
    s.scheduler.start()
    await sleep(200)
    // Before, Q9's row was taken for Q1's (held here) and never started: it sat leased until the lease ran out.
    expect(s.attempts.sort()).toEqual(['Q1/slow.test', 'Q9/new.test'])
    s.finishAll()
    await sleep(50)
    expect(s.completes.map((c) => c.queueId).sort()).toEqual(['Q1', 'Q9'])
  })
})
