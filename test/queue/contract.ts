// The Queue contract: one suite that every queue implementation (sqlite/, postgres/) must pass, so
// they cannot drift apart. It talks to the queue through the public Queue interface only.
//
// One queue serves the whole suite (starting one per test is slow for PostgreSQL); every test uses
// its own queue ids, addresses and domains, and afterEach removes whatever messages are left, so a
// claim in one test never sees another test's work.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Spool } from '../../core/queue/spool.js'
import { newQueueId } from '../../core/queue/id.js'
import type { ClaimOptions, Job, NewMessage, Queue, QueuedMessage, StoredBody, Suppression } from '../../core/queue/types.js'

export interface QueueUnderTest {
  queue: Queue
  spool: Spool
  cleanup: () => Promise<void>
  /**
   * Opens another node on the same queue, with its own identity (queues several nodes share:
   * PostgreSQL). Absent for a queue one process owns (SQLite). Closed by `cleanup`.
   */
  node?: (nodeId: string) => Promise<Queue>
}

const HOUR = 3_600_000
const hourOf = (t: number) => Math.floor(t / HOUR) * HOUR

/** Reads a body stream to the end. */
async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array))
  return Buffer.concat(chunks)
}

/** openBody may throw at once or fail the stream; either way this rejects. */
const readBody = (queue: Queue, m: QueuedMessage) => (async () => readAll(queue.openBody(m)))()

/** `shared`: several nodes share the queue (PostgreSQL); setup then gives `node`. */
export function describeQueueContract(name: string, setup: () => Promise<QueueUnderTest>, { shared = false } = {}): void {
  describe(`Queue contract: ${name}`, () => {
    let q: Queue
    let spool: Spool
    let cleanup: (() => Promise<void>) | undefined
    let node: QueueUnderTest['node']
    // Unique per run and per test: ids, domains and addresses never collide with other runs' rows.
    const run = randomBytes(3).toString('hex')
    let seq = 0
    const unique = (what: string) => `${what}${run}${++seq}`
    const domain = (what = 'd') => `${unique(what)}.test`

    beforeAll(async () => {
      const ctx = await setup()
      q = ctx.queue
      spool = ctx.spool
      cleanup = ctx.cleanup
      node = ctx.node
    })

    afterAll(async () => {
      await cleanup?.()
    })

    afterEach(async () => {
      for (const m of await q.list()) await q.remove(m.id)
    })

    interface MessageOptions {
      sender?: string
      recipients: string[]
      body?: StoredBody
      bodyBytes?: number
      receivedAt?: number
      expiresAt?: number
      messageId?: string
      senderArgs?: NewMessage['senderArgs']
      args?: NewMessage['recipients'][number]['args']
      headers?: string
      meta?: NewMessage['meta']
    }

    /** A message with a fresh queue id; recipients' domains come from their addresses. */
    function message(o: MessageOptions): NewMessage {
      const id = newQueueId()
      const headers = Buffer.from(o.headers ?? `From: a@sender.test\r\nSubject: contract ${id}\r\nMessage-ID: <${id}@sender.test>\r\n\r\n`, 'latin1')
      const body = o.body ?? { inline: Buffer.from(`Body of ${id}.\r\n`) }
      const bodySize = o.bodyBytes ?? ('inline' in body ? body.inline.length : 0)
      const receivedAt = o.receivedAt ?? Date.now()
      return {
        id,
        sender: o.sender ?? `sender@${domain('s')}`,
        senderArgs: o.senderArgs,
        recipients: o.recipients.map((address) => ({ address, domain: address.slice(address.lastIndexOf('@') + 1).toLowerCase(), args: o.args })),
        headers,
        body,
        size: headers.length + bodySize,
        messageId: o.messageId ?? `<${id}@sender.test>`,
        receivedAt,
        expiresAt: o.expiresAt ?? receivedAt + 5 * 86_400_000,
        meta: o.meta ?? { clientAddress: '127.0.0.1', helo: 'client.test', listener: '127.0.0.1:25' },
      }
    }

    const claimAt = (now: number, o: Partial<ClaimOptions> = {}) => q.claim({ limit: 100, perDomain: 100, inFlight: {}, leaseMs: 60_000, now, ...o })
    const jobsFor = (jobs: Job[], id: string) => jobs.filter((j) => j.message.id === id)

    /** Writes `data` as a spool file, as the SMTP side does for large bodies. */
    async function spoolFile(data: Buffer): Promise<string> {
      const file = await spool.create(newQueueId())
      for (let i = 0; i < data.length; i += 64 * 1024) await file.write(data.subarray(i, i + 64 * 1024))
      await file.commit()
      return file.path
    }

    describe('enqueue and claim', () => {
      it('claims a queued message with its whole envelope and inline body', async () => {
        const now = Date.now()
        const d = domain()
        const m = message({
          recipients: [`one@${d}`, `two@${d}`],
          senderArgs: { BODY: '8BITMIME', ENVID: 'env-1' },
          args: { NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;one@example.test' },
          // Every byte value, so no text decoding can pass unnoticed.
          body: { inline: Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256)) },
          meta: { clientAddress: '127.0.0.9', clientHostname: 'c.test', helo: 'helo.test', listener: '127.0.0.1:2525', user: 'alice' },
          receivedAt: now,
        })
        const rowIds = await q.enqueue(m)
        expect(rowIds).toHaveLength(2)
        expect(new Set(rowIds).size).toBe(2)

        const { jobs } = await claimAt(now + 1)
        const mine = jobsFor(jobs, m.id)
        expect(mine).toHaveLength(1)
        const job = mine[0]!
        expect(job.domain).toBe(d)
        expect(job.recipients.map((r) => r.rowId)).toEqual(rowIds)
        expect(job.recipients.map((r) => r.address)).toEqual([`one@${d}`, `two@${d}`])
        expect(job.recipients.every((r) => r.attempts === 0)).toBe(true)
        expect(job.recipients[0]!.args).toEqual({ NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;one@example.test' })
        const got = job.message
        expect(got.sender).toBe(m.sender)
        expect(got.senderArgs).toEqual(m.senderArgs)
        expect(got.messageId).toBe(m.messageId)
        expect(got.size).toBe(m.size)
        expect(got.receivedAt).toBe(m.receivedAt)
        expect(got.expiresAt).toBe(m.expiresAt)
        expect(got.meta).toEqual(m.meta)
        expect(Buffer.isBuffer(got.headers)).toBe(true)
        expect(got.headers.equals(m.headers)).toBe(true)
        expect((await readBody(q, got)).equals((m.body as { inline: Buffer }).inline)).toBe(true)
      })

      it('keeps a multi-MB body given as a spool file byte for byte', async () => {
        const now = Date.now()
        const data = randomBytes(3 * 1024 * 1024 + 17)
        const file = await spoolFile(data)
        const m = message({ recipients: [`big@${domain()}`], body: { file }, bodyBytes: data.length, receivedAt: now })
        await q.enqueue(m)
        const [job] = jobsFor((await claimAt(now + 1)).jobs, m.id)
        expect(job).toBeDefined()
        expect(job!.message.size).toBe(m.size)
        const body = await readBody(q, job!.message)
        expect(body.length).toBe(data.length)
        expect(body.equals(data)).toBe(true)
      })

      it('writes recipients already leased with leaseUntil; the caller can read the body it gave', async () => {
        const now = Date.now()
        const d = domain()
        const data = randomBytes(300 * 1024)
        const file = await spoolFile(data)
        const m = message({ recipients: [`a@${d}`, `b@${domain()}`], body: { file }, bodyBytes: data.length, receivedAt: now })
        const leaseUntil = now + 60_000
        const rowIds = await q.enqueue(m, leaseUntil)
        expect(rowIds).toHaveLength(2)
        // The reserved fast path delivers the message as it was enqueued, from memory.
        const { recipients: _r, ...asQueued } = m
        expect((await readBody(q, asQueued)).equals(data)).toBe(true)

        expect(jobsFor((await claimAt(now + 1000)).jobs, m.id)).toHaveLength(0)
        const detail = await q.show(m.id)
        expect(detail?.recipients.map((r) => r.leased)).toEqual([true, true])
        // The lease expired (the process that held it died): the work is due again.
        const expired = await claimAt(leaseUntil + 1)
        expect(expired.takenOver).toBe(2)
        const again = jobsFor(expired.jobs, m.id)
        expect(again.flatMap((j) => j.recipients.map((r) => r.rowId)).sort()).toEqual([...rowIds].sort())
        expect((await readBody(q, again[0]!.message)).equals(data)).toBe(true)
      })
    })

    describe('claim', () => {
      it('groups due recipients into one job per message and domain, within limit', async () => {
        const now = Date.now()
        const [d1, d2] = [domain(), domain()]
        const m = message({ recipients: [`a@${d1}`, `b@${d2}`, `c@${d1}`], receivedAt: now })
        await q.enqueue(m)
        const first = await claimAt(now + 1, { limit: 1 })
        expect(first.jobs).toHaveLength(1)
        const second = await claimAt(now + 1, { limit: 5 })
        expect(second.jobs).toHaveLength(1)
        const jobs = [...first.jobs, ...second.jobs]
        const byDomain = new Map(jobs.map((j) => [j.domain, j.recipients.map((r) => r.address).sort()]))
        expect(byDomain.get(d1)).toEqual([`a@${d1}`, `c@${d1}`])
        expect(byDomain.get(d2)).toEqual([`b@${d2}`])
        expect((await claimAt(now + 1)).jobs).toHaveLength(0)
      })

      it('takes only due work and tells when the next is due', async () => {
        const now = Date.now()
        const m = message({ recipients: [`later@${domain()}`], receivedAt: now })
        const [rowId] = await q.enqueue(m)
        const [job] = (await claimAt(now + 1)).jobs
        expect(job?.message.id).toBe(m.id)
        const nextAttemptAt = now + 50_000
        await q.complete(m.id, [{ rowId: rowId!, state: 'deferred', response: '451 4.3.0 try later', nextAttemptAt, category: 'other' }])
        const early = await claimAt(nextAttemptAt - 1)
        expect(early.jobs).toHaveLength(0)
        expect(early.nextDueAt).toBe(nextAttemptAt)
        const due = await claimAt(nextAttemptAt)
        expect(due.jobs).toHaveLength(1)
        expect(due.jobs[0]!.recipients[0]!.attempts).toBe(1)
        // Now leased: the next due time is the lease's expiry.
        const after = await claimAt(nextAttemptAt + 1)
        expect(after.jobs).toHaveLength(0)
        expect(after.nextDueAt).toBe(nextAttemptAt + 60_000)
      })

      it('a result with counted: false (a wait at our own route cap) keeps the attempt count and the reputation counters', async () => {
        const now = Date.now()
        const sd = domain('capsender')
        const m = message({ sender: `s@${sd}`, recipients: [`capped@${domain()}`], receivedAt: now })
        const [rowId] = await q.enqueue(m)
        await claimAt(now + 1)
        const nextAttemptAt = now + 2000
        await q.complete(m.id, [{ rowId: rowId!, state: 'deferred', response: '4.4.5 Route ses is at its sending cap', nextAttemptAt, category: 'throttled', counted: false }])
        const due = await claimAt(nextAttemptAt)
        expect(due.jobs.map((j) => j.message.id)).toEqual([m.id])
        expect(due.jobs[0]!.recipients[0]!.attempts).toBe(0)
        expect((await q.stats(hourOf(now))).filter((r) => r.senderDomain === sd)).toEqual([])
        // A real attempt afterwards counts as the first.
        await q.complete(m.id, [{ rowId: rowId!, state: 'deferred', response: '451 4.3.0 later', nextAttemptAt: nextAttemptAt + 10, category: 'other' }])
        const again = await claimAt(nextAttemptAt + 10)
        expect(again.jobs[0]!.recipients[0]!.attempts).toBe(1)
        expect((await q.stats(hourOf(now))).filter((r) => r.senderDomain === sd).map((r) => [r.outcome, r.count])).toEqual([['deferred', 1]])
      })

      it('claims nothing and reports no due time for an empty queue', async () => {
        const r = await claimAt(Date.now())
        expect(r.jobs).toEqual([])
        expect(r.nextDueAt).toBeUndefined()
      })

      it('keeps to perDomain, counting what is in flight', async () => {
        const now = Date.now()
        const [busy, free] = [domain('busy'), domain('free')]
        const ms = [0, 1, 2].map(() => message({ recipients: [`x@${busy}`], receivedAt: now }))
        const other = message({ recipients: [`y@${free}`], receivedAt: now })
        for (const m of [...ms, other]) await q.enqueue(m)

        const full = await claimAt(now + 1, { perDomain: 2, inFlight: { [busy]: 2 } })
        expect(full.jobs.map((j) => j.domain)).toEqual([free])
        const some = await claimAt(now + 1, { perDomain: 2, inFlight: { [busy]: 1 } })
        expect(some.jobs.map((j) => j.domain)).toEqual([busy])
        const rest = await claimAt(now + 1, { perDomain: 2, inFlight: {} })
        expect(rest.jobs.map((j) => j.domain)).toEqual([busy, busy])
        expect(new Set([...some.jobs, ...rest.jobs].map((j) => j.message.id))).toEqual(new Set(ms.map((m) => m.id)))
      })

      it('hides leased work until the lease expires, then hands it out again (takeover)', async () => {
        const now = Date.now()
        const m = message({ recipients: [`lease@${domain()}`], receivedAt: now })
        const [rowId] = await q.enqueue(m)
        const first = await claimAt(now + 1, { leaseMs: 10_000 })
        expect(first.jobs.map((j) => j.recipients[0]!.rowId)).toEqual([rowId])
        expect(first.takenOver).toBe(0)
        expect((await claimAt(now + 5_000)).jobs).toHaveLength(0)
        expect((await claimAt(now + 10_000)).jobs).toHaveLength(0)
        const taken = await claimAt(now + 10_002, { leaseMs: 10_000 })
        expect(taken.jobs.map((j) => j.recipients[0]!.rowId)).toEqual([rowId])
        expect(taken.jobs[0]!.recipients[0]!.attempts).toBe(0)
        // Counted as taken over (relay_queue_lease_takeovers_total): its holder never reported.
        expect(taken.takenOver).toBe(1)
      })

      it('never gives the same recipient to two concurrent claims', async () => {
        const now = Date.now()
        const d = domain()
        const all: number[] = []
        for (let i = 0; i < 20; i++) all.push(...(await q.enqueue(message({ recipients: [`r${i}@${d}`, `s${i}@${domain()}`], receivedAt: now }))))
        const claims = await Promise.all([0, 1, 2].map(() => claimAt(now + 1, { limit: 30 })))
        const rows = claims.flatMap((c) => c.jobs.flatMap((j) => j.recipients.map((r) => r.rowId)))
        expect(new Set(rows).size).toBe(rows.length)
        expect(rows.length).toBeGreaterThan(0)
        expect(rows.every((r) => all.includes(r))).toBe(true)
        // Whatever was left unclaimed is still there for the next claim; nothing is lost.
        const rest = await claimAt(now + 1, { limit: 100 })
        const restRows = rest.jobs.flatMap((j) => j.recipients.map((r) => r.rowId))
        expect([...rows, ...restRows].sort()).toEqual([...all].sort())
      })
    })

    describe('renewLeases', () => {
      const nextAttempts = async (id: string) => (await q.show(id))!.recipients.map((r) => [r.state, r.nextAttemptAt ?? null, r.leased])
      const rowsOf = (jobs: Job[], id: string) => jobsFor(jobs, id).flatMap((j) => j.recipients.map((r) => r.rowId)).sort((x, y) => x - y)

      it('extends the leases of work still leased and unfinished, and touches nothing else', async () => {
        const now = Date.now()
        const d = domain()
        const m = message({ recipients: [`done@${d}`, `later@${d}`, `running@${d}`], receivedAt: now })
        const [done, later, running] = await q.enqueue(m)
        // Not leased, not due yet: a renewal must not make it leased, nor move it.
        const idle = message({ recipients: [`idle@${domain()}`], receivedAt: now + 50_000 })
        const [idleRow] = await q.enqueue(idle)
        expect(rowsOf((await claimAt(now + 1, { leaseMs: 10_000 })).jobs, m.id)).toEqual([done, later, running])
        await q.complete(m.id, [
          { rowId: done!, state: 'delivered', response: '250 ok' },
          { rowId: later!, state: 'deferred', response: '451 later', nextAttemptAt: now + 15_000 },
        ])

        await q.renewLeases([done!, later!, running!, idleRow!], now + 100_000)
        expect(await nextAttempts(m.id)).toEqual([['delivered', null, false], ['deferred', now + 15_000, false], ['queued', now + 100_000, true]])
        expect(await nextAttempts(idle.id)).toEqual([['queued', now + 50_000, false]])
        await q.renewLeases([], now + 200_000) // nothing in flight: nothing to do

        // Past the first lease, only the deferred recipient is due: the running one's lease holds.
        const mid = await claimAt(now + 20_000, { leaseMs: 10_000 })
        expect(rowsOf(mid.jobs, m.id)).toEqual([later])
        expect(mid.takenOver).toBe(0)
        // A renewed lease still expires: its holder died, and the work is taken over.
        const after = await claimAt(now + 100_001)
        expect(rowsOf(after.jobs, m.id)).toEqual([later, running])
        expect(rowsOf(after.jobs, idle.id)).toEqual([idleRow])
        expect(after.takenOver).toBe(2)
      })

      it('leaves alone what recover freed (a restart) and what is gone (a removed message)', async () => {
        const now = Date.now()
        const m = message({ recipients: [`a@${domain()}`], receivedAt: now })
        const [row] = await q.enqueue(m, now + 10_000)
        const gone = message({ recipients: [`b@${domain()}`], receivedAt: now })
        const [goneRow] = await q.enqueue(gone, now + 10_000)
        expect(await q.remove(gone.id)).toBe(true)
        await q.recover(now + 5)
        await q.renewLeases([row!, goneRow!], now + 100_000)
        expect(await nextAttempts(m.id)).toEqual([['queued', now + 5, false]])
        expect(await q.show(gone.id)).toBeUndefined()
      })

      // Only where several nodes share the queue; SQLite belongs to one process.
      if (!shared) return

      it("extends only this node's leases: not another node's, nor work another node took over", async () => {
        const [a, b] = await Promise.all([node!(unique('node-a-')), node!(unique('node-b-'))])
        const claimOn = (queue: Queue, now: number) => queue.claim({ limit: 100, perDomain: 100, inFlight: {}, leaseMs: 10_000, now })
        const now = Date.now()
        const m = message({ recipients: [`held@${domain()}`], receivedAt: now })
        const [row] = await a.enqueue(m)
        expect(rowsOf((await claimOn(a, now + 1)).jobs, m.id)).toEqual([row])
        // B does not hold it: its renewal changes nothing.
        await b.renewLeases([row!], now + 100_000)
        expect(await nextAttempts(m.id)).toEqual([['queued', now + 10_001, true]])
        // A does.
        await a.renewLeases([row!], now + 20_000)
        expect(await nextAttempts(m.id)).toEqual([['queued', now + 20_000, true]])
        expect(rowsOf((await claimOn(b, now + 19_999)).jobs, m.id)).toEqual([])
        // A stops renewing (dead or cut off): past its lease B takes the work over, and a late
        // renewal of A's leaves B's lease as it is.
        const taken = await claimOn(b, now + 20_001)
        expect(rowsOf(taken.jobs, m.id)).toEqual([row])
        expect(taken.takenOver).toBe(1)
        await a.renewLeases([row!], now + 500_000)
        expect(await nextAttempts(m.id)).toEqual([['queued', now + 30_001, true]])
        // B's result is recorded; a renewal after it changes nothing.
        await b.complete(m.id, [{ rowId: row!, state: 'deferred', response: '451 later', nextAttemptAt: now + 40_000 }])
        await b.renewLeases([row!], now + 500_000)
        expect(await nextAttempts(m.id)).toEqual([['deferred', now + 40_000, false]])
      })
    })

    describe('complete', () => {
      it('finishes a message when every recipient is final; its body goes', async () => {
        const now = Date.now()
        const d = domain()
        const data = randomBytes(200 * 1024)
        const file = await spoolFile(data)
        const m = message({ recipients: [`ok@${d}`, `no@${d}`], body: { file }, bodyBytes: data.length, receivedAt: now })
        const [ok, no] = await q.enqueue(m)
        const [job] = (await claimAt(now + 1)).jobs
        expect(job?.recipients).toHaveLength(2)
        const r = await q.complete(m.id, [
          { rowId: ok!, state: 'delivered', response: '250 2.0.0 ok', remoteHost: 'mx.test' },
          { rowId: no!, state: 'bounced', response: '550 5.1.1 no such user', remoteHost: 'mx.test', category: 'bad-mailbox' },
        ])
        expect(r).toEqual({ finished: true })
        expect(await q.show(m.id)).toBeUndefined()
        expect((await q.list()).map((e) => e.id)).not.toContain(m.id)
        expect(fs.existsSync(file)).toBe(false)
        expect(await q.bodyFiles()).not.toContain(file)
        expect((await claimAt(now + 1_000_000)).jobs).toHaveLength(0)
      })

      it('keeps a partly delivered message; the deferred recipient is due at nextAttemptAt', async () => {
        const now = Date.now()
        const d = domain()
        const m = message({ recipients: [`ok@${d}`, `later@${d}`], receivedAt: now })
        const [ok, later] = await q.enqueue(m)
        await claimAt(now + 1)
        const nextAttemptAt = now + 30_000
        const r = await q.complete(m.id, [
          { rowId: ok!, state: 'delivered', response: '250 ok' },
          { rowId: later!, state: 'deferred', response: '452 4.2.2 mailbox full', nextAttemptAt, category: 'mailbox-full', remoteHost: 'mx1.test' },
        ])
        expect(r).toEqual({ finished: false })
        const [entry] = (await q.list()).filter((e) => e.id === m.id)
        expect(entry?.recipients).toEqual([
          expect.objectContaining({ address: `ok@${d}`, state: 'delivered', attempts: 1, lastResponse: '250 ok' }),
          expect.objectContaining({ address: `later@${d}`, state: 'deferred', attempts: 1, nextAttemptAt, lastResponse: '452 4.2.2 mailbox full', category: 'mailbox-full' }),
        ])
        expect(entry!.recipients[0]!.nextAttemptAt).toBeUndefined()
        expect((await claimAt(nextAttemptAt - 1)).jobs).toHaveLength(0)
        const [job] = (await claimAt(nextAttemptAt)).jobs
        expect(job?.recipients.map((x) => x.rowId)).toEqual([later])
        expect(await q.complete(m.id, [{ rowId: later!, state: 'delivered', response: '250 finally' }])).toEqual({ finished: true })
      })

      it('queues the bounce and adds suppressions in the same call', async () => {
        const now = Date.now()
        const d = domain()
        const m = message({ recipients: [`gone@${d}`], receivedAt: now })
        const [rowId] = await q.enqueue(m)
        await claimAt(now + 1)
        const bounce = message({ sender: '', recipients: [m.sender], meta: { dsnFor: m.id }, receivedAt: now + 2 })
        const entry: Suppression = { address: `Gone@${d}`, reason: '550 5.1.1 no such user', source: m.id, createdAt: now, expiresAt: now + 86_400_000 }
        const r = await q.complete(m.id, [{ rowId: rowId!, state: 'bounced', response: '550 5.1.1 no such user', category: 'bad-mailbox' }], bounce, [entry])
        expect(r.finished).toBe(true)
        const list = await q.list()
        expect(list.map((e) => e.id)).toEqual([bounce.id])
        expect(list[0]!.sender).toBe('')
        expect(await q.isSuppressed(`gone@${d}`)).toEqual({ ...entry, address: `gone@${d}` })
        const [job] = (await claimAt(now + 10)).jobs
        expect(job?.message.id).toBe(bounce.id)
        expect(job?.message.meta.dsnFor).toBe(m.id)
        expect(job?.message.sender).toBe('')
      })
    })

    describe('owed DSNs (one per message)', () => {
      const failed = { action: 'failed' as const, remote: true }

      it('the sweep takes the oldest owed DSNs first: under a backlog larger than its batch none starves', async () => {
        const now = Date.now()
        // Newest first into the queue: an unordered scan would hand the sweep these first, every time.
        const ms = [1, 2, 3, 4, 5].map((age) => message({ recipients: [`old${age}@${domain()}`], receivedAt: now - age * 60_000 }))
        for (const m of ms) {
          const [row] = await q.enqueue(m)
          expect(jobsFor((await claimAt(now + 1)).jobs, m.id)).toHaveLength(1)
          await q.complete(m.id, [{ rowId: row!, state: 'bounced', response: '550 5.1.1 no', category: 'bad-mailbox', dsn: { ...failed, status: '5.1.1' } }])
        }
        const mine = new Set(ms.map((m) => m.id))
        const oldestFirst = [...ms].reverse().map((m) => m.id)
        expect((await q.owedDsnMessages(Date.now(), 100)).filter((id) => mine.has(id))).toEqual(oldestFirst)
        expect(await q.owedDsnMessages(Date.now(), 2)).toEqual(oldestFirst.slice(0, 2))
      })

      it("a job's owed DSN waits while another job of the message is in flight; the last complete is told, and it is queued once", async () => {
        const now = Date.now()
        const [d1, d2, d3] = [domain(), domain(), domain()]
        const m = message({ recipients: [`x@${d1}`, `y@${d2}`, `z@${d3}`], receivedAt: now })
        const [x, y, z] = await q.enqueue(m)
        expect(jobsFor((await claimAt(now + 1)).jobs, m.id)).toHaveLength(3)
        const bounced = (rowId: number, status: string) => ({ rowId, state: 'bounced' as const, response: `550 ${status} no`, remoteHost: `mx${rowId}.test[127.0.0.9]:25`, category: 'bad-mailbox' as const, dsn: { ...failed, status } })
        expect(await q.complete(m.id, [bounced(x!, '5.1.1')])).toEqual({ finished: false })
        expect(await q.owedDsn(m.id, Date.now())).toBeUndefined()
        expect(await q.owedDsnMessages(Date.now(), 100)).not.toContain(m.id)
        // Deferred to later: holds nothing back.
        expect(await q.complete(m.id, [{ rowId: y!, state: 'deferred', response: '450 busy', nextAttemptAt: now + 3_600_000 }])).toEqual({ finished: false })
        expect(await q.complete(m.id, [bounced(z!, '5.7.1')])).toEqual({ finished: false, dsnDue: true })
        const owed = await q.owedDsn(m.id, Date.now())
        expect(owed?.message.id).toBe(m.id)
        expect(owed?.message.headers.toString('latin1')).toBe(m.headers.toString('latin1'))
        expect(owed?.recipients).toEqual([
          { rowId: x, address: `x@${d1}`, response: '550 5.1.1 no', remoteHost: `mx${x}.test[127.0.0.9]:25`, dsn: { ...failed, status: '5.1.1' } },
          { rowId: z, address: `z@${d3}`, response: '550 5.7.1 no', remoteHost: `mx${z}.test[127.0.0.9]:25`, dsn: { ...failed, status: '5.7.1' } },
        ])
        // What a crash between complete and sendOwedDsn leaves is found again.
        expect(await q.owedDsnMessages(Date.now(), 100)).toContain(m.id)
        const dsn = message({ sender: '', recipients: [m.sender], meta: { dsnFor: m.id } })
        expect(await q.sendOwedDsn(m.id, [x!, z!], dsn)).toBe(true)
        expect(await q.sendOwedDsn(m.id, [x!, z!], message({ sender: '', recipients: [m.sender], meta: { dsnFor: m.id } }))).toBe(false)
        expect(await q.owedDsn(m.id, Date.now())).toBeUndefined()
        expect(await q.owedDsnMessages(Date.now(), 100)).not.toContain(m.id)
        const ids = (await q.list()).map((e) => e.id)
        expect(ids.filter((id) => id !== m.id)).toEqual([dsn.id])
        expect(ids).toContain(m.id) // y is still deferred
      })

      it('a message whose recipients are all final stays queued until its owed DSN is sent, then leaves with its body', async () => {
        const now = Date.now()
        const data = randomBytes(100 * 1024)
        const file = await spoolFile(data)
        const m = message({ recipients: [`gone@${domain()}`, `ok@${domain()}`], body: { file }, bodyBytes: data.length, receivedAt: now })
        const [gone, ok] = await q.enqueue(m)
        await claimAt(now + 1)
        expect(await q.complete(m.id, [{ rowId: ok!, state: 'delivered', response: '250 ok', dsn: { action: 'relayed', remote: true } }])).toEqual({ finished: false })
        expect(await q.complete(m.id, [{ rowId: gone!, state: 'bounced', response: '550 5.1.1 no', dsn: failed }])).toEqual({ finished: false, dsnDue: true })
        expect(await q.show(m.id)).toBeDefined()
        const owed = await q.owedDsn(m.id, Date.now())
        expect(owed?.recipients.map((r) => r.dsn.action)).toEqual(['failed', 'relayed'])
        expect(await readBody(q, owed!.message)).toEqual(data)
        // Dropped (the untrusted-sender limit): the marks go all the same.
        expect(await q.sendOwedDsn(m.id, [gone!, ok!])).toBe(true)
        expect(await q.show(m.id)).toBeUndefined()
        expect(fs.existsSync(file)).toBe(false)
      })

      it("an operator's bounce (bounceNow) takes only what is pending and not in flight at its write, marks the owed ones, and the in-flight complete sends the one DSN", async () => {
        const now = Date.now()
        const [d1, d2, d3] = [domain(), domain(), domain()]
        const m = message({ recipients: [`busy@${d1}`, `idle@${d2}`, `mute@${d3}`], receivedAt: now })
        const [busy, idle, mute] = await q.enqueue(m)
        const admin = { action: 'failed' as const, status: '5.0.0', remote: false }
        // A delivery holds busy@; idle@ and mute@ wait for a later attempt.
        expect(jobsFor((await claimAt(now + 1)).jobs, m.id)).toHaveLength(3)
        const later = (rowId: number) => ({ rowId, state: 'deferred' as const, response: '450 busy', nextAttemptAt: now + 3_600_000 })
        expect(await q.complete(m.id, [later(idle!), later(mute!)])).toEqual({ finished: false })
        expect((await q.show(m.id))?.recipients.map((r) => r.leased)).toEqual([true, false, false])
        const r = await q.bounceNow(m.id, '5.0.0 Bounced by the administrator', admin, [busy!, idle!], Date.now())
        expect(r).toMatchObject({ finished: false, bounced: [{ rowId: idle, address: `idle@${d2}` }, { rowId: mute, address: `mute@${d3}` }], inFlight: [`busy@${d1}`] })
        expect(r?.dsnDue).toBeFalsy()
        expect((await q.show(m.id))?.recipients.map((x) => [x.state, x.dsnOwed])).toEqual([['queued', undefined], ['bounced', true], ['bounced', undefined]])
        expect(await q.owedDsn(m.id, Date.now())).toBeUndefined()
        // Nothing left to bounce: nothing written.
        expect(await q.bounceNow(m.id, 'x', admin, [], Date.now())).toMatchObject({ bounced: [], inFlight: [`busy@${d1}`] })
        expect(await q.complete(m.id, [{ rowId: busy!, state: 'bounced', response: '550 5.1.1 no', dsn: { ...failed, status: '5.1.1' } }])).toEqual({ finished: false, dsnDue: true })
        expect((await q.owedDsn(m.id, Date.now()))?.recipients.map((x) => [x.address, x.dsn.status])).toEqual([[`busy@${d1}`, '5.1.1'], [`idle@${d2}`, '5.0.0']])
        expect(await q.bounceNow('0000000000000000', 'x', admin, [], Date.now())).toBeUndefined()
      })

      it('a held message keeps its owed DSN until it is released (an operator looking at suspect mail), unless nothing of it is left pending', async () => {
        const now = Date.now()
        const [d1, d2] = [domain(), domain()]
        const m = message({ recipients: [`x@${d1}`, `y@${d2}`], receivedAt: now })
        const [x, y] = await q.enqueue(m)
        expect(jobsFor((await claimAt(now + 1)).jobs, m.id)).toHaveLength(2)
        expect(await q.complete(m.id, [{ rowId: x!, state: 'bounced', response: '550 5.1.1 no', dsn: { ...failed, status: '5.1.1' } }])).toEqual({ finished: false })
        expect(await q.hold(m.id)).toBe(true)
        // y's attempt ends deferred and due again at once: the message is held, so nothing is sent.
        expect(await q.complete(m.id, [{ rowId: y!, state: 'deferred', response: '450 busy', nextAttemptAt: now }])).toEqual({ finished: false })
        expect(await q.owedDsn(m.id, Date.now())).toBeUndefined()
        expect(await q.owedDsnMessages(Date.now(), 100)).not.toContain(m.id)
        // The operator bounces what is left: nothing is pending any more, so the one DSN goes.
        const admin = { action: 'failed' as const, status: '5.0.0', remote: false }
        const r = await q.bounceNow(m.id, '5.0.0 Bounced by the administrator', admin, [y!], Date.now())
        expect(r).toMatchObject({ dsnDue: true })
        expect((await q.owedDsn(m.id, Date.now()))?.recipients.map((o) => [o.address, o.dsn.status])).toEqual([[`x@${d1}`, '5.1.1'], [`y@${d2}`, '5.0.0']])
      })

      if (!shared) return

      it('two nodes completing the last two jobs of one message at once: exactly one is told to send its DSN, and it goes once', async () => {
        const [a, b] = await Promise.all([node!(unique('node-a-')), node!(unique('node-b-'))])
        for (let round = 0; round < 5; round++) {
          const now = Date.now()
          const m = message({ recipients: [`one@${domain()}`, `two@${domain()}`], receivedAt: now })
          const rows = await q.enqueue(m)
          const claimOne = (n: Queue) => n.claim({ limit: 1, perDomain: 100, inFlight: {}, leaseMs: 60_000, now: now + 1 })
          const [jobA] = jobsFor((await claimOne(a)).jobs, m.id)
          const [jobB] = jobsFor((await claimOne(b)).jobs, m.id)
          expect([jobA, jobB].map((j) => j?.recipients.length)).toEqual([1, 1])
          const fail = (j: Job) => j.recipients.map((r) => ({ rowId: r.rowId, state: 'bounced' as const, response: '550 5.1.1 no', dsn: failed }))
          const done = await Promise.all([a.complete(m.id, fail(jobA!)), b.complete(m.id, fail(jobB!))])
          expect(done.filter((r) => r.dsnDue)).toHaveLength(1)
          const dsns = [a, b].map(() => message({ sender: '', recipients: [m.sender], meta: { dsnFor: m.id } }))
          const sent = await Promise.all([a.sendOwedDsn(m.id, rows, dsns[0]), b.sendOwedDsn(m.id, rows, dsns[1])])
          expect(sent.filter(Boolean)).toHaveLength(1)
          expect(await q.show(m.id)).toBeUndefined()
          expect((await q.list()).filter((e) => e.sender === '' && dsns.some((d) => d.id === e.id))).toHaveLength(1)
          for (const e of await q.list()) await q.remove(e.id)
        }
      })
    })

    describe('heartbeat (cluster liveness)', () => {
      /** Short, so a test can outwait it; the relay's default is 30 s (queue.heartbeat.deadAfter). */
      const DEAD_AFTER = 300
      const LEASE = 15 * 60_000 // delivery.lease's default: takeover must not wait for it
      const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
      const claimOn = (queue: Queue, now: number) => queue.claim({ limit: 100, perDomain: 100, inFlight: {}, leaseMs: LEASE, now })
      const rowsOf = (jobs: Job[]) => jobs.flatMap((j) => j.recipients.map((r) => r.rowId)).sort((x, y) => x - y)

      it("a node's own beat never frees the work it holds, even with deadAfter 0", async () => {
        const now = Date.now()
        const m = message({ recipients: [`own@${domain()}`], receivedAt: now })
        await q.enqueue(m)
        expect(jobsFor((await claimAt(now + 1, { leaseMs: LEASE })).jobs, m.id)).toHaveLength(1)
        await q.heartbeat(Date.now(), 0)
        await sleep(20)
        await q.heartbeat(Date.now(), 0)
        const again = await claimAt(Date.now())
        expect(jobsFor(again.jobs, m.id)).toHaveLength(0)
        expect((await q.show(m.id))!.recipients.map((r) => r.leased)).toEqual([true])
      })

      // Only where several nodes share the queue; SQLite belongs to one process.
      if (!shared) return

      it("a lease held by a node whose heartbeat is stale is claimable at once; the late node's results are not recorded", async () => {
        const aId = unique('node-a-')
        const [a, b, c] = await Promise.all([node!(aId), node!(unique('node-b-')), node!(unique('node-c-'))])
        expect((await a.heartbeat(Date.now(), DEAD_AFTER)).wasMissing).toBe(true) // its first beat
        const d = domain()
        const now = Date.now()
        const m = message({ recipients: [`one@${d}`, `two@${d}`], receivedAt: now })
        const rowIds = await a.enqueue(m)
        expect(rowsOf(jobsFor((await claimOn(a, now + 1)).jobs, m.id))).toEqual([...rowIds].sort((x, y) => x - y))
        // Node A stops beating (killed). Its 15-minute lease is nowhere near expiry, yet once
        // deadAfter has passed, one beat of another node makes the work due.
        expect(jobsFor((await claimOn(b, Date.now())).jobs, m.id)).toHaveLength(0)
        await sleep(DEAD_AFTER + 150)
        const [byB, byC] = await Promise.all([b.heartbeat(Date.now(), DEAD_AFTER), c.heartbeat(Date.now(), DEAD_AFTER)])
        const found = [...byB.dead, ...byC.dead].filter((x) => x.nodeId === aId)
        // Exactly one node took A over, with A's two recipients.
        expect(found).toHaveLength(1)
        expect(found[0]!.recipients).toBe(2)
        expect(found[0]!.silentMs).toBeGreaterThanOrEqual(DEAD_AFTER)
        expect(found[0]!.silentMs).toBeLessThan(60_000)
        const taken = await claimOn(b, Date.now())
        expect(rowsOf(jobsFor(taken.jobs, m.id))).toEqual([...rowIds].sort((x, y) => x - y))
        // Counted per recipient (relay_queue_lease_takeovers_total).
        expect(taken.takenOver).toBe(2)

        // A was only silent, not dead: its next beat tells it so, and the result of the attempt it
        // had in flight (a deferral with a bounce) must not overwrite what B now holds.
        expect((await a.heartbeat(Date.now(), DEAD_AFTER)).wasMissing).toBe(true)
        const bounce = message({ sender: '', recipients: [m.sender], meta: { dsnFor: m.id } })
        const late = await a.complete(m.id, rowIds.map((rowId) => ({ rowId, state: 'bounced' as const, response: '550 5.1.1 late', category: 'bad-mailbox' as const })), bounce)
        expect(late.finished).toBe(false)
        const shown = await b.show(m.id)
        expect(shown!.recipients.map((r) => [r.state, r.attempts, r.leased])).toEqual([['queued', 0, true], ['queued', 0, true]])
        expect((await q.list()).map((e) => e.id)).not.toContain(bounce.id)
        // B's own result is recorded, and a late one after it changes nothing.
        expect(await b.complete(m.id, rowIds.map((rowId) => ({ rowId, state: 'delivered' as const, response: '250 ok' })))).toEqual({ finished: true })
        expect(await q.show(m.id)).toBeUndefined()
        // A result of A's arriving after B finished the message: no DSN for mail that was delivered.
        const later = message({ sender: '', recipients: [m.sender], meta: { dsnFor: m.id } })
        await a.complete(m.id, rowIds.map((rowId) => ({ rowId, state: 'bounced' as const, response: '550 5.1.1 later', category: 'bad-mailbox' as const })), later)
        expect((await q.list()).map((e) => e.id)).not.toContain(later.id)
      })

      it("a live node's lease is not taken over, however long it is", async () => {
        const aId = unique('node-a-')
        const [a, b] = await Promise.all([node!(aId), node!(unique('node-b-'))])
        await a.heartbeat(Date.now(), DEAD_AFTER)
        const now = Date.now()
        const m = message({ recipients: [`live@${domain()}`], receivedAt: now })
        const [rowId] = await a.enqueue(m)
        expect(rowsOf(jobsFor((await claimOn(a, now + 1)).jobs, m.id))).toEqual([rowId])
        // A beats every 60 ms; B watches for 4 × deadAfter with beats of its own.
        let beating = true
        const missing: boolean[] = []
        const beats = (async () => {
          while (beating) {
            missing.push((await a.heartbeat(Date.now(), DEAD_AFTER)).wasMissing)
            await sleep(60)
          }
        })()
        const seenDead: string[] = []
        try {
          for (let i = 0; i < 12; i++) {
            await sleep(100)
            seenDead.push(...(await b.heartbeat(Date.now(), DEAD_AFTER)).dead.map((x) => x.nodeId).filter((id) => id === aId))
            expect(jobsFor((await claimOn(b, Date.now())).jobs, m.id)).toHaveLength(0)
          }
        } finally {
          beating = false
          await beats
        }
        expect(seenDead).toEqual([])
        // Every later beat found A on record: only a first beat, or one after a takeover, is "missing".
        expect(missing.length).toBeGreaterThan(5)
        expect(missing.filter(Boolean)).toEqual([])
        expect((await b.show(m.id))!.recipients.map((r) => r.leased)).toEqual([true])
        // A's result is recorded as usual.
        expect(await a.complete(m.id, [{ rowId: rowId!, state: 'delivered', response: '250 ok' }])).toEqual({ finished: true })
      })
    })

    it('recover makes work a dead process left leased due at once', async () => {
      const now = Date.now()
      const m = message({ recipients: [`a@${domain()}`, `b@${domain()}`], receivedAt: now })
      const rows = await q.enqueue(m, now + 600_000)
      const idle = message({ recipients: [`idle@${domain()}`], receivedAt: now })
      await q.enqueue(idle)
      expect(await q.recover(now + 5)).toBe(2)
      const claimed = await claimAt(now + 5)
      const jobs = claimed.jobs
      // Released by recover (the same process, restarted): not a takeover.
      expect(claimed.takenOver).toBe(0)
      expect(jobs.flatMap((j) => j.recipients.map((r) => r.rowId)).filter((r) => rows.includes(r)).sort()).toEqual([...rows].sort())
      expect(jobsFor(jobs, idle.id)).toHaveLength(1)
      expect(await q.recover(now + 6)).toBe(3)
    })

    it('recover with queue ids frees only those messages (an SMTP worker that died), not the rest in flight', async () => {
      const now = Date.now()
      const gone = message({ recipients: [`a@${domain()}`, `b@${domain()}`], receivedAt: now })
      const alive = message({ recipients: [`c@${domain()}`], receivedAt: now })
      await q.enqueue(gone, now + 600_000)
      await q.enqueue(alive, now + 600_000)
      expect(await q.recover(now + 5, [gone.id, 'NOSUCHMESSAGE0000'])).toBe(2)
      const claimed = await claimAt(now + 5)
      expect(claimed.jobs.map((j) => j.message.id).filter((id) => id === gone.id || id === alive.id)).toEqual([gone.id, gone.id])
      expect(await q.recover(now + 6, [])).toBe(0)
    })

    describe('list, show', () => {
      it('lists oldest first and filters by state, domain, sender and limit', async () => {
        const now = Date.now()
        const [d1, d2] = [domain(), domain()]
        const sender = `Mixed.Case@${domain('s')}`
        const a = message({ recipients: [`a@${d1}`], sender, receivedAt: now - 3000 })
        const b = message({ recipients: [`b@${d2}`, `b2@${d1}`], receivedAt: now - 2000 })
        const c = message({ recipients: [`c@${d2}`], receivedAt: now - 1000 })
        const bounce = message({ recipients: [`d@${d2}`], sender: '', receivedAt: now })
        for (const m of [c, bounce, a, b]) await q.enqueue(m)
        // b's recipient at d2 is deferred, the one at d1 still queued; c is held.
        const [job] = jobsFor((await claimAt(now + 1, { inFlight: { [d1]: 100 } })).jobs, b.id)
        await q.complete(b.id, job!.recipients.map((r) => ({ rowId: r.rowId, state: 'deferred' as const, response: '421 busy', nextAttemptAt: now + 60_000, category: 'throttled' as const })))
        expect(await q.hold(c.id)).toBe(true)

        const ids = async (filter?: Parameters<Queue['list']>[0]) => (await q.list(filter)).map((e) => e.id)
        expect(await ids()).toEqual([a.id, b.id, c.id, bounce.id])
        expect(await ids({ limit: 2 })).toEqual([a.id, b.id])
        expect(await ids({ domain: d1 })).toEqual([a.id, b.id])
        expect(await ids({ domain: d2 })).toEqual([b.id, c.id, bounce.id])
        expect(await ids({ sender: sender.toLowerCase() })).toEqual([a.id])
        expect(await ids({ sender: '' })).toEqual([bounce.id])
        expect(await ids({ state: 'held' })).toEqual([c.id])
        expect(await ids({ state: 'deferred' })).toEqual([b.id])
        // Held messages are listed as held only.
        expect(await ids({ state: 'queued' })).toEqual([a.id, b.id, bounce.id])
        // State and domain together: a recipient in that state at that domain.
        expect(await ids({ state: 'queued', domain: d2 })).toEqual([bounce.id])
        expect(await ids({ state: 'queued', domain: d2, limit: 1 })).toEqual([bounce.id])
        // Paging: the messages after one (receivedAt, then id), with the other filters.
        expect(await ids({ after: { receivedAt: a.receivedAt, id: a.id } })).toEqual([b.id, c.id, bounce.id])
        expect(await ids({ domain: d2, after: { receivedAt: b.receivedAt, id: b.id }, limit: 1 })).toEqual([c.id])
        expect(await ids({ after: { receivedAt: c.receivedAt, id: '' } })).toEqual([c.id, bounce.id])

        const entries = await q.list()
        const held = entries.find((e) => e.id === c.id)!
        expect(held.heldAt).toBeTypeOf('number')
        expect(entries.find((e) => e.id === a.id)!.heldAt).toBeUndefined()
        expect(entries.find((e) => e.id === a.id)).toEqual(
          expect.objectContaining({ id: a.id, messageId: a.messageId, sender, size: a.size, receivedAt: a.receivedAt }),
        )
      })

      it('shows one message in full, with each recipient attempt history oldest first', async () => {
        const now = Date.now()
        const d = domain()
        const m = message({
          recipients: [`slow@${d}`, `fast@${d}`],
          senderArgs: { RET: 'HDRS' },
          args: { NOTIFY: 'FAILURE' },
          headers: `From: a@sender.test\r\nSubject: show me\r\n\r\n`,
          receivedAt: now,
        })
        const [slow, fast] = await q.enqueue(m)
        await claimAt(now + 1)
        await q.complete(m.id, [
          { rowId: slow!, state: 'deferred', response: '451 first', remoteHost: 'mx1.test', nextAttemptAt: now + 10, category: 'other' },
          { rowId: fast!, state: 'delivered', response: '250 done', remoteHost: 'mx2.test' },
        ])
        await claimAt(now + 10)
        await q.complete(m.id, [{ rowId: slow!, state: 'deferred', response: '452 second', remoteHost: 'mx3.test', nextAttemptAt: now + 20, category: 'mailbox-full' }])
        // Leased again: a delivery holds it right now.
        await claimAt(now + 20, { leaseMs: 600_000 })

        const detail = await q.show(m.id)
        expect(detail).toBeDefined()
        expect(detail).toEqual(
          expect.objectContaining({
            id: m.id,
            messageId: m.messageId,
            sender: m.sender,
            senderArgs: { RET: 'HDRS' },
            size: m.size,
            receivedAt: now,
            expiresAt: m.expiresAt,
            meta: m.meta,
            headers: 'From: a@sender.test\r\nSubject: show me\r\n\r\n',
          }),
        )
        expect(detail!.heldAt).toBeUndefined()
        const [rs, rf] = detail!.recipients
        expect(rs).toEqual(
          expect.objectContaining({
            rowId: slow,
            address: `slow@${d}`,
            domain: d,
            args: { NOTIFY: 'FAILURE' },
            state: 'deferred',
            attempts: 2,
            lastResponse: '452 second',
            remoteHost: 'mx3.test',
            category: 'mailbox-full',
            leased: true,
          }),
        )
        expect(rs!.history.map((h) => [h.state, h.response, h.remoteHost, h.category])).toEqual([
          ['deferred', '451 first', 'mx1.test', 'other'],
          ['deferred', '452 second', 'mx3.test', 'mailbox-full'],
        ])
        expect(rs!.history[0]!.at).toBeLessThanOrEqual(rs!.history[1]!.at)
        expect(rs!.history[0]!.at).toBeGreaterThanOrEqual(now - 1000)
        expect(rf).toEqual(expect.objectContaining({ rowId: fast, state: 'delivered', attempts: 1, leased: false, remoteHost: 'mx2.test' }))
        expect(rf!.history).toEqual([expect.objectContaining({ state: 'delivered', response: '250 done', remoteHost: 'mx2.test' })])
        expect(rf!.history[0]!.category).toBeUndefined()

        expect(await q.show(newQueueId())).toBeUndefined()
      })
    })

    describe('recent attempts', () => {
      it('lists attempts newest first with their envelope, pages with before, and keeps them once the message left the queue', async () => {
        const now = Date.now()
        const d = domain()
        const m = message({ recipients: [`slow@${d}`, `fast@${d}`], receivedAt: now })
        const [slow, fast] = await q.enqueue(m)
        await claimAt(now + 1)
        await q.complete(m.id, [
          { rowId: slow!, state: 'deferred', response: '451 first', remoteHost: 'mx1.test', nextAttemptAt: now + 10, category: 'other' },
          { rowId: fast!, state: 'delivered', response: '250 done', remoteHost: 'mx2.test' },
        ])
        await new Promise((r) => setTimeout(r, 5))
        await claimAt(now + 10)
        // The last attempt: the message leaves the queue; its attempts stay in the log.
        expect((await q.complete(m.id, [{ rowId: slow!, state: 'bounced', response: '550 no such user', remoteHost: 'mx3.test', category: 'bad-mailbox' }])).finished).toBe(true)
        expect(await q.show(m.id)).toBeUndefined()

        const mine = (list: Awaited<ReturnType<Queue['recentAttempts']>>) => list.filter((a) => a.queueId === m.id)
        const all = mine(await q.recentAttempts({ limit: 1000 }))
        expect(all.map((a) => [a.recipient, a.state, a.response, a.remoteHost, a.category])).toEqual([
          [`slow@${d}`, 'bounced', '550 no such user', 'mx3.test', 'bad-mailbox'],
          ...(all[1]!.recipient === `fast@${d}`
            ? [[`fast@${d}`, 'delivered', '250 done', 'mx2.test', undefined], [`slow@${d}`, 'deferred', '451 first', 'mx1.test', 'other']]
            : [[`slow@${d}`, 'deferred', '451 first', 'mx1.test', 'other'], [`fast@${d}`, 'delivered', '250 done', 'mx2.test', undefined]]),
        ])
        for (const a of all) expect(a).toEqual(expect.objectContaining({ queueId: m.id, sender: m.sender, at: expect.any(Number) }))
        expect(all[0]!.at).toBeGreaterThan(all[2]!.at)
        // Newest first everywhere, and `before` gives the older ones.
        const newest = await q.recentAttempts({ limit: 1 })
        expect(newest).toHaveLength(1)
        const older = mine(await q.recentAttempts({ limit: 1000, before: all[0]!.at }))
        expect(older.map((a) => a.response).sort()).toEqual(['250 done', '451 first'])
        expect(mine(await q.recentAttempts({ limit: 1000, before: all[2]!.at }))).toEqual([])
        // Removing a message by hand does not erase what was tried either.
        const r = message({ recipients: [`gone@${d}`] })
        const [row] = await q.enqueue(r)
        await claimAt(Date.now() + 1)
        await q.complete(r.id, [{ rowId: row!, state: 'deferred', response: '421 later', nextAttemptAt: Date.now() + 60_000, category: 'throttled' }])
        expect(await q.remove(r.id)).toBe(true)
        expect((await q.recentAttempts({ limit: 1000 })).filter((a) => a.queueId === r.id).map((a) => a.response)).toEqual(['421 later'])
      })
    })

    describe('operator actions', () => {
      it('hold stops delivery until release makes the message due at once', async () => {
        const now = Date.now()
        const m = message({ recipients: [`h@${domain()}`], receivedAt: now })
        const [rowId] = await q.enqueue(m)
        await claimAt(now + 1)
        await q.complete(m.id, [{ rowId: rowId!, state: 'deferred', response: '451 later', nextAttemptAt: now + 100_000 }])

        expect(await q.hold(m.id)).toBe(true)
        expect(await q.hold(newQueueId())).toBe(false)
        expect((await q.show(m.id))!.heldAt).toBeTypeOf('number')
        const skipped = await claimAt(now + 200_000)
        expect(skipped.jobs).toHaveLength(0)
        // Nothing else is queued: a held message is not work that becomes due.
        expect(skipped.nextDueAt).toBeUndefined()
        expect(await q.flush({ queueId: m.id }, now + 5)).toBe(0)

        expect(await q.release(newQueueId(), now + 10)).toBe(false)
        expect(await q.release(m.id, now + 10)).toBe(true)
        expect(await q.release(m.id, now + 10)).toBe(false)
        expect((await q.show(m.id))!.heldAt).toBeUndefined()
        const [job] = (await claimAt(now + 10)).jobs
        expect(job?.recipients.map((r) => r.rowId)).toEqual([rowId])
        expect(job?.recipients[0]!.attempts).toBe(1)
      })

      it('remove drops a message and its body without a bounce', async () => {
        const now = Date.now()
        const data = randomBytes(150 * 1024)
        const file = await spoolFile(data)
        const m = message({ recipients: [`r@${domain()}`], body: { file }, bodyBytes: data.length, receivedAt: now })
        await q.enqueue(m)
        const [job] = (await claimAt(now + 1)).jobs
        expect(job?.message.id).toBe(m.id)
        expect(await q.remove(m.id)).toBe(true)
        expect(await q.remove(m.id)).toBe(false)
        expect(await q.show(m.id)).toBeUndefined()
        expect(await q.list()).toEqual([])
        expect(fs.existsSync(file)).toBe(false)
        expect(await q.bodyFiles()).not.toContain(file)
        await expect(readBody(q, job!.message)).rejects.toThrow()
        expect((await claimAt(now + 1_000_000)).jobs).toHaveLength(0)
      })

      it('flush makes pending work due now, by queue id or domain, but not held messages', async () => {
        const now = Date.now()
        const [d1, d2] = [domain(), domain()]
        const a = message({ recipients: [`a1@${d1}`, `a2@${d2}`], receivedAt: now })
        const b = message({ recipients: [`b1@${d1}`], receivedAt: now })
        const held = message({ recipients: [`h1@${d1}`], receivedAt: now })
        for (const m of [a, b, held]) await q.enqueue(m)
        const later = now + 3_600_000
        for (const job of (await claimAt(now + 1)).jobs) {
          await q.complete(job.message.id, job.recipients.map((r) => ({ rowId: r.rowId, state: 'deferred' as const, response: '451 later', nextAttemptAt: later })))
        }
        await q.hold(held.id)
        expect((await claimAt(now + 100)).jobs).toHaveLength(0)

        expect(await q.flush({ queueId: a.id }, now + 100)).toBe(2)
        const first = (await claimAt(now + 100)).jobs
        expect(first.map((j) => j.message.id)).toEqual([a.id, a.id])
        // a1 is leased (a delivery holds it): flush leaves work in flight alone.
        expect(await q.flush({ domain: d1 }, now + 200)).toBe(1)
        const second = (await claimAt(now + 200)).jobs
        expect(second.map((j) => j.message.id)).toEqual([b.id])
        expect(await q.flush({ queueId: newQueueId() }, now + 300)).toBe(0)
        expect((await q.show(held.id))!.recipients[0]!.nextAttemptAt).toBe(later)
      })
    })

    it('summary counts messages and recipients by state, held apart, with the busiest domains', async () => {
      const now = Date.now()
      const [d1, d2] = [domain(), domain()]
      const a = message({ recipients: [`a1@${d1}`, `a2@${d1}`, `a3@${d2}`], receivedAt: now - 5000 })
      const b = message({ recipients: [`b1@${d1}`, `b2@${d1}`], receivedAt: now - 1000 })
      const h = message({ recipients: [`h1@${d2}`], receivedAt: now - 9000 })
      for (const m of [a, b, h]) await q.enqueue(m)
      const [job] = jobsFor((await claimAt(now + 1, { inFlight: { [d1]: 100 } })).jobs, a.id)
      await q.complete(a.id, job!.recipients.map((r) => ({ rowId: r.rowId, state: 'deferred' as const, response: '451', nextAttemptAt: now + 60_000 })))
      await q.hold(h.id)
      const delivered = message({ recipients: [`x@${d1}`, `y@${d2}`], receivedAt: now })
      const [x] = await q.enqueue(delivered, now + 60_000)
      await q.complete(delivered.id, [{ rowId: x!, state: 'delivered', response: '250' }])

      const s = await q.summary(now + 2)
      expect(s.messages).toBe(4)
      // Leased recipients still count as queued; delivered ones not at all.
      expect(s.recipients).toEqual({ queued: 5, deferred: 1, held: 1 })
      expect(s.oldestReceivedAt).toBe(now - 9000)
      expect(s.domains).toEqual([
        { domain: d1, queued: 4, deferred: 0, held: 0 },
        { domain: d2, queued: 1, deferred: 1, held: 1 },
      ])
      for (const m of [a, b, h, delivered]) await q.remove(m.id)
      expect(await q.summary(now + 3)).toEqual({ messages: 0, recipients: { queued: 0, deferred: 0, held: 0 }, domains: [] })
    })

    it('suppression list: add, look up (case-insensitive), expire, list, remove', async () => {
      const now = Date.now()
      const d = domain()
      const entries: Suppression[] = [
        { address: `First@${d}`, reason: 'hard bounce', source: 'QUEUEID', createdAt: now - 2000 },
        { address: `second@${d}`, reason: 'by hand', source: 'cli', createdAt: now - 1000, expiresAt: now + 3_600_000 },
        { address: `expired@${d}`, reason: 'old', createdAt: now - 3000, expiresAt: now - 1 },
      ]
      await q.suppress(entries)
      expect(await q.isSuppressed(`FIRST@${d}`)).toEqual({ address: `first@${d}`, reason: 'hard bounce', source: 'QUEUEID', createdAt: now - 2000 })
      expect(await q.isSuppressed(`second@${d}`)).toEqual(entries[1])
      expect(await q.isSuppressed(`expired@${d}`)).toBeUndefined()
      expect(await q.isSuppressed(`nobody@${d}`)).toBeUndefined()
      const mine = (await q.listSuppressed()).filter((s) => s.address.endsWith(`@${d}`))
      expect(mine.map((s) => s.address)).toEqual([`first@${d}`, `second@${d}`])

      // Adding again replaces the entry.
      await q.suppress([{ address: `first@${d}`, reason: 'again', createdAt: now, expiresAt: now + 1000 }])
      expect((await q.isSuppressed(`first@${d}`))?.reason).toBe('again')
      expect(await q.unsuppress(`First@${d}`)).toBe(true)
      expect(await q.unsuppress(`first@${d}`)).toBe(false)
      expect(await q.isSuppressed(`first@${d}`)).toBeUndefined()
      expect(await q.unsuppress(`second@${d}`)).toBe(true)
    })

    it('delay warnings: candidates once, marked with the warning queued in the same write', async () => {
      const now = Date.now()
      const d = domain()
      const old = message({ recipients: [`slow@${d}`, `ok@${d}`], receivedAt: now - 60_000, args: { NOTIFY: 'DELAY' } })
      const young = message({ recipients: [`young@${d}`], receivedAt: now - 1000 })
      const bounce = message({ recipients: [`b@${d}`], sender: '', receivedAt: now - 60_000 })
      const fresh = message({ recipients: [`fresh@${d}`], receivedAt: now - 60_000 })
      for (const m of [old, young, bounce, fresh]) await q.enqueue(m)
      for (const job of (await claimAt(now)).jobs) {
        if (job.message.id === fresh.id) continue
        await q.complete(
          job.message.id,
          job.recipients.map((r) =>
            r.address === `ok@${d}`
              ? { rowId: r.rowId, state: 'delivered' as const, response: '250' }
              : { rowId: r.rowId, state: 'deferred' as const, response: '451 4.4.1 busy', remoteHost: 'mx.test', nextAttemptAt: now + 600_000, category: 'other' as const },
          ),
        )
      }
      const candidates = await q.delayCandidates(now - 30_000, 10)
      expect(candidates.map((c) => c.message.id)).toEqual([old.id])
      const [c] = candidates
      expect(c!.message).toEqual(expect.objectContaining({ id: old.id, sender: old.sender, receivedAt: old.receivedAt, expiresAt: old.expiresAt, messageId: old.messageId }))
      expect(c!.message.headers.equals(old.headers)).toBe(true)
      expect(c!.recipients).toEqual([
        expect.objectContaining({ address: `slow@${d}`, args: { NOTIFY: 'DELAY' }, lastResponse: '451 4.4.1 busy', remoteHost: 'mx.test', category: 'other' }),
      ])
      expect((await q.delayCandidates(now - 30_000, 0)).length).toBe(0)

      const warning = message({ sender: '', recipients: [old.sender], meta: { dsnFor: old.id }, receivedAt: now })
      expect(await q.markDelayNotified(old.id, warning)).toBe(true)
      expect((await q.list()).map((e) => e.id)).toContain(warning.id)
      expect(await q.markDelayNotified(old.id, message({ sender: '', recipients: [old.sender] }))).toBe(false)
      expect(await q.markDelayNotified(newQueueId())).toBe(false)
      expect((await q.delayCandidates(now, 10)).map((x) => x.message.id)).toEqual([young.id])
    })

    it('a delay warning is not queued for recipients no longer deferred when it is written (delivered or bounced meanwhile); the next check decides again', async () => {
      const now = Date.now()
      const d = domain()
      const m = message({ recipients: [`late@${d}`, `later@${d}`], receivedAt: now - 60_000 })
      const [late, later] = await q.enqueue(m)
      const deferred = (rowId: number) => ({ rowId, state: 'deferred' as const, response: '451 busy', nextAttemptAt: now - 1 })
      expect(jobsFor((await claimAt(now)).jobs, m.id)).toHaveLength(1)
      await q.complete(m.id, [deferred(late!), deferred(later!)])
      const [c] = (await q.delayCandidates(now - 30_000, 100)).filter((x) => x.message.id === m.id)
      expect(c?.recipients.map((r) => r.rowId)).toEqual([late, later])
      // While the warning is being built, a retry delivers late@ (an operator's bounce would do the same).
      const [job] = jobsFor((await claimAt(now)).jobs, m.id)
      expect(job?.recipients.map((r) => r.rowId)).toEqual([late, later])
      await q.complete(m.id, [{ rowId: late!, state: 'delivered', response: '250 ok' }, { ...deferred(later!), nextAttemptAt: now + 600_000 }])
      const stale = message({ sender: '', recipients: [m.sender], meta: { dsnFor: m.id }, receivedAt: now })
      expect(await q.markDelayNotified(m.id, stale, c!.recipients.map((r) => r.rowId))).toBe(false)
      expect((await q.list()).map((e) => e.id)).not.toContain(stale.id)
      // The next check sees later@ alone, and warns of it.
      const [again] = (await q.delayCandidates(now - 30_000, 100)).filter((x) => x.message.id === m.id)
      expect(again?.recipients.map((r) => r.rowId)).toEqual([later])
      const warning = message({ sender: '', recipients: [m.sender], meta: { dsnFor: m.id }, receivedAt: now })
      expect(await q.markDelayNotified(m.id, warning, [later!])).toBe(true)
      expect((await q.list()).map((e) => e.id)).toContain(warning.id)
    })

    describe('reputation', () => {
      it('complete counts each result per hour, sender domain, destination domain, outcome and category', async () => {
        const before = Date.now()
        const sd = domain('sender')
        const [d1, d2] = [domain(), domain()]
        const m = message({ sender: `News@${sd.toUpperCase()}`, recipients: [`a@${d1}`, `b@${d1}`, `c@${d2}`, `e@${d2}`], receivedAt: before })
        const [a, b, c, e] = await q.enqueue(m)
        await claimAt(before + 1)
        await q.complete(m.id, [
          { rowId: a!, state: 'delivered', response: '250' },
          { rowId: b!, state: 'delivered', response: '250' },
          { rowId: c!, state: 'deferred', response: '421 slow down', nextAttemptAt: before + 10, category: 'throttled' },
          { rowId: e!, state: 'bounced', response: '550 5.1.1 unknown', category: 'bad-mailbox' },
        ])
        await claimAt(before + 10)
        await q.complete(m.id, [{ rowId: c!, state: 'bounced', response: '550 5.7.1 policy', category: 'policy' }])
        // A bounce from the null sender is no sender domain's reputation.
        const dsn = message({ sender: '', recipients: [`back@${d1}`], receivedAt: before })
        const [dsnRow] = await q.enqueue(dsn)
        await claimAt(before + 20)
        await q.complete(dsn.id, [{ rowId: dsnRow!, state: 'bounced', response: '550 gone', category: 'bad-mailbox' }])
        const after = Date.now()

        const rows = (await q.stats(hourOf(before))).filter((r) => r.senderDomain === sd || r.destDomain === d1 || r.destDomain === d2)
        for (const r of rows) {
          expect(r.hour % HOUR).toBe(0)
          expect(r.hour).toBeGreaterThanOrEqual(hourOf(before))
          expect(r.hour).toBeLessThanOrEqual(hourOf(after))
        }
        // Sum over hours: the test may straddle an hour boundary.
        const sums = new Map<string, number>()
        for (const r of rows) {
          const key = `${r.senderDomain}|${r.destDomain}|${r.outcome}|${r.category}`
          sums.set(key, (sums.get(key) ?? 0) + r.count)
        }
        expect(Object.fromEntries(sums)).toEqual({
          [`${sd}|${d1}|delivered|`]: 2,
          [`${sd}|${d2}|deferred|throttled`]: 1,
          [`${sd}|${d2}|bounced|bad-mailbox`]: 1,
          [`${sd}|${d2}|bounced|policy`]: 1,
        })
        expect((await q.stats(hourOf(after) + HOUR)).filter((r) => r.senderDomain === sd)).toEqual([])
      })

      it('recordComplaint matches by queue id, then Message-ID, else counts against Original-Mail-From', async () => {
        const now = Date.now()
        const sd = domain('brand')
        const rd = domain('isp')
        const byId = message({ sender: `promo@${sd}`, recipients: [`u1@${rd}`], receivedAt: now })
        const byMid = message({ sender: `Info@${sd.toUpperCase()}`, recipients: [`u2@${rd}`], messageId: `<mid-${unique('m')}@${sd}>`, receivedAt: now })
        const dsn = message({ sender: '', recipients: [`u3@${rd}`], receivedAt: now })
        for (const m of [byId, byMid, dsn]) await q.enqueue(m)
        // Delivered and gone from the queue: the sent log still knows them.
        for (const job of (await claimAt(now + 1)).jobs) {
          expect(await q.complete(job.message.id, job.recipients.map((r) => ({ rowId: r.rowId, state: 'delivered' as const, response: '250' })))).toEqual({ finished: true })
        }

        const at = Date.now()
        const r1 = await q.recordComplaint({ queueIds: [newQueueId(), byId.id], messageId: byMid.messageId!.slice(1, -1), originalMailFrom: 'other@elsewhere.test', originalRcptTo: `U1@${rd.toUpperCase()}`, feedbackType: 'abuse', receivedAt: at })
        expect(r1).toEqual({ matched: true, queueId: byId.id, sender: byId.sender, senderDomain: sd })
        const r2 = await q.recordComplaint({ queueIds: [newQueueId()], messageId: byMid.messageId!.slice(1, -1), originalRcptTo: `u2@${rd}`, feedbackType: 'abuse', receivedAt: at })
        expect(r2).toEqual({ matched: true, queueId: byMid.id, sender: byMid.sender, senderDomain: sd })
        const other = domain('spoofed')
        const r3 = await q.recordComplaint({ queueIds: [dsn.id], messageId: `nope-${unique('x')}@x.test`, originalMailFrom: `Someone@${other.toUpperCase()}`, feedbackType: 'abuse', receivedAt: at })
        expect(r3).toEqual({ matched: false, senderDomain: other })
        const r4 = await q.recordComplaint({ feedbackType: 'abuse', receivedAt: at })
        expect(r4.matched).toBe(false)
        expect(r4.senderDomain).toBe('')

        const rows = (await q.stats(hourOf(at))).filter((r) => r.senderDomain === sd || r.senderDomain === other)
        expect(rows.filter((r) => r.outcome === 'complaint').map(({ hour, senderDomain, destDomain, category, count }) => ({ hour, senderDomain, destDomain, category, count })).sort((x, y) => x.senderDomain.localeCompare(y.senderDomain))).toEqual(
          [
            { hour: hourOf(at), senderDomain: sd, destDomain: rd, category: '', count: 2 },
            { hour: hourOf(at), senderDomain: other, destDomain: '', category: '', count: 1 },
          ].sort((x, y) => x.senderDomain.localeCompare(y.senderDomain)),
        )
      })
    })
  })
}
