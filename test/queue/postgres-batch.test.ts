// Group commit in the PostgreSQL queue against a real PostgreSQL (a schema of its own per run,
// dropped afterwards): calls made together share one transaction, and an error in one of them
// reaches its own caller only.
import { afterAll, describe, expect, it } from 'vitest'
import crypto from 'node:crypto'
import type pg from 'pg'
import { PgQueue } from '../../core/queue/postgres/queue.js'
import { PG_URL, connectPostgres, skipFor } from '../harness/services.js'
import type { NewMessage } from '../../core/queue/types.js'

const RUN = `${process.pid}_${crypto.randomBytes(4).toString('hex')}`
const admin: pg.Client | undefined = await connectPostgres().then((c) => (c.client ? c.client : (skipFor(c.problem), undefined)))

const schemas: string[] = []
const queues: PgQueue[] = []

afterAll(async () => {
  await Promise.all(queues.splice(0).map((q) => q.close().catch(() => undefined)))
  if (!admin) return
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => undefined)
  await admin.end().catch(() => undefined)
})

async function newQueue(tag: string): Promise<{ q: PgQueue; schema: string }> {
  const schema = `relay_pgqb_${tag}_${RUN}`
  schemas.push(schema)
  const q = new PgQueue({ url: PG_URL, poolSize: 4, schema, nodeId: 'node-a' })
  queues.push(q)
  await q.ready
  return { q, schema }
}

let seq = 0
function message(o: { id?: string; recipients?: string[]; sender?: string } = {}): NewMessage {
  const now = Date.now()
  const id = o.id ?? `B${RUN}${String(++seq).padStart(6, '0')}`
  const headers = Buffer.from(`Subject: ${id}\r\nMessage-ID: <${id}@test>\r\n\r\n`)
  const body = Buffer.from(`Body of ${id}\r\n`)
  return {
    id,
    sender: o.sender ?? 'sender@example.com',
    recipients: (o.recipients ?? ['rcpt@dest.test']).map((address) => ({ address, domain: address.split('@')[1]! })),
    headers,
    body: { inline: body },
    size: headers.length + body.length,
    messageId: `${id}@test`,
    receivedAt: now,
    expiresAt: now + 86_400_000,
    meta: { clientAddress: '127.0.0.1' },
  }
}

/** How many transactions wrote the rows (rows written by one transaction share its xmin). */
async function writers(table: string, where: string, values: unknown[]): Promise<number> {
  const { rows } = await admin!.query(`SELECT count(DISTINCT xmin::text)::int AS n FROM ${table} WHERE ${where}`, values)
  return rows[0].n
}

describe('PostgreSQL queue: group commit', () => {
  it('enqueues made together share a transaction; a duplicate id fails its own caller only', async () => {
    if (!admin) return
    const { q, schema } = await newQueue('enqueue')
    const first = message()
    await q.enqueue(first)
    const ms = Array.from({ length: 30 }, (_, i) => message({ recipients: [`a${i}@one.test`, `b${i}@two.test`] }))
    const together = await Promise.all(ms.map((m) => q.enqueue(m)))
    expect(together.every((ids) => ids.length === 2 && ids[0]! < ids[1]!)).toBe(true)
    // Fewer transactions than messages: they were written in batches.
    expect(await writers(`${schema}.messages`, 'id = ANY($1)', [ms.map((m) => m.id)])).toBeLessThan(ms.length)

    // The same again with one message whose id is taken: the batch fails, then each goes alone.
    const more = Array.from({ length: 10 }, () => message())
    const dup = message({ id: first.id })
    const settled = await Promise.allSettled([...more.slice(0, 5), dup, ...more.slice(5)].map((m) => q.enqueue(m)))
    expect(settled.map((s) => s.status)).toEqual([...Array(5).fill('fulfilled'), 'rejected', ...Array(5).fill('fulfilled')])
    expect(String((settled[5] as PromiseRejectedResult).reason)).toMatch(/duplicate key/)
    const stored = await admin.query(`SELECT id FROM ${schema}.messages WHERE id = ANY($1)`, [more.map((m) => m.id)])
    expect(stored.rowCount).toBe(10)
    // The row ids each caller got are its own message's recipients.
    for (const [i, s] of settled.entries()) {
      if (s.status !== 'fulfilled') continue
      const m = [...more.slice(0, 5), dup, ...more.slice(5)][i]!
      const { rows } = await admin.query(`SELECT id FROM ${schema}.recipients WHERE message_id = $1 ORDER BY id`, [m.id])
      expect(rows.map((r) => Number(r.id))).toEqual(s.value)
    }
  })

  it('completes made together share a transaction; one that fails leaves the others applied', async () => {
    if (!admin) return
    const { q, schema } = await newQueue('complete')
    const taken = message()
    await q.enqueue(taken)
    const ms = Array.from({ length: 20 }, (_, i) => message({ recipients: [`r${i}@dest.test`] }))
    const rowIds = await Promise.all(ms.map((m) => q.enqueue(m, Date.now() + 60_000)))
    // All deferred together: the recipients' new versions come from fewer transactions than completes.
    const later = Date.now() + 3_600_000
    await Promise.all(ms.map((m, i) => q.complete(m.id, [{ rowId: rowIds[i]![0]!, state: 'deferred', response: '451 later', nextAttemptAt: later }])))
    expect(await writers(`${schema}.recipients`, 'message_id = ANY($1)', [ms.map((m) => m.id)])).toBeLessThan(ms.length)

    // Now delivered, one of them with a bounce whose id is already queued: that complete fails.
    const bad = 7
    const settled = await Promise.allSettled(
      ms.map((m, i) =>
        q.complete(m.id, [{ rowId: rowIds[i]![0]!, state: 'delivered', response: '250 ok' }], i === bad ? message({ id: taken.id, sender: '' }) : undefined),
      ),
    )
    expect(settled.map((s) => s.status)).toEqual(ms.map((_, i) => (i === bad ? 'rejected' : 'fulfilled')))
    expect(String((settled[bad] as PromiseRejectedResult).reason)).toMatch(/duplicate key/)
    for (const [i, s] of settled.entries()) if (i !== bad) expect(s).toEqual({ status: 'fulfilled', value: { finished: true } })
    const left = await admin.query(`SELECT id FROM ${schema}.messages WHERE id = ANY($1)`, [ms.map((m) => m.id)])
    expect(left.rows.map((r) => r.id)).toEqual([ms[bad]!.id])
    // Its result was not applied: still deferred, one attempt.
    const shown = await q.show(ms[bad]!.id)
    expect(shown!.recipients.map((r) => [r.state, r.attempts])).toEqual([['deferred', 1]])
    const delivered = (await q.stats(0)).filter((r) => r.outcome === 'delivered').reduce((n, r) => n + r.count, 0)
    expect(delivered).toBe(ms.length - 1)
  })

  it('two completes of one message in one batch: both applied, exactly one finishes it', async () => {
    if (!admin) return
    const { q } = await newQueue('same')
    const m = message({ recipients: ['x@one.test', 'y@two.test'] })
    const [x, y] = await q.enqueue(m, Date.now() + 60_000)
    const results = await Promise.all([
      q.complete(m.id, [{ rowId: x!, state: 'delivered', response: '250 ok' }]),
      q.complete(m.id, [{ rowId: y!, state: 'bounced', response: '550 no', category: 'bad-mailbox' }]),
    ])
    expect(results.map((r) => r.finished).sort()).toEqual([false, true])
    expect(await q.show(m.id)).toBeUndefined()
  })

  it('suppression look-ups made together each get their own answer', async () => {
    if (!admin) return
    const { q } = await newQueue('lookup')
    const now = Date.now()
    await q.suppress([
      { address: 'gone@dest.test', reason: 'hard bounce', createdAt: now },
      { address: 'old@dest.test', reason: 'expired', createdAt: now - 10_000, expiresAt: now - 1 },
    ])
    const asked = Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? 'Gone@Dest.test' : i % 3 === 1 ? 'old@dest.test' : `ok${i}@dest.test`))
    const answers = await Promise.all(asked.map((a) => q.isSuppressed(a)))
    expect(answers.map((a) => a?.address)).toEqual(asked.map((_, i) => (i % 3 === 0 ? 'gone@dest.test' : undefined)))
  })

  it('close writes what was handed in before it', async () => {
    if (!admin) return
    const { q, schema } = await newQueue('close')
    const ms = Array.from({ length: 25 }, () => message())
    const writes = ms.map((m) => q.enqueue(m))
    await q.close()
    expect((await Promise.allSettled(writes)).every((s) => s.status === 'fulfilled')).toBe(true)
    expect((await admin.query(`SELECT count(*)::int AS n FROM ${schema}.messages`)).rows[0].n).toBe(25)
    await expect(q.enqueue(message())).rejects.toThrow(/closed/)
  })
})
