// The SQLite queue against the Queue contract, plus what only SQLite has: spool files, the
// read-only CLI store on a database an older relay wrote, migration of such a database, pruning.
import { afterEach, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import { tempDir } from '../harness/relay.js'
import { Spool } from '../../core/queue/spool.js'
import { newQueueId } from '../../core/queue/id.js'
import { SqliteQueue } from '../../core/queue/sqlite/queue.js'
import { SqliteStore } from '../../core/queue/sqlite/store.js'
import { MIGRATIONS } from '../../core/queue/sqlite/schema.js'
import type { NewMessage } from '../../core/queue/types.js'
import { describeQueueContract } from './contract.js'

const dirs: string[] = []
const queues: SqliteQueue[] = []

function freshDir(): string {
  const dir = tempDir('relay-queue-')
  dirs.push(dir)
  return dir
}

function open(dir: string, options?: { retentionMs?: number }): SqliteQueue {
  const q = new SqliteQueue(path.join(dir, 'queue.sqlite'), new Spool(dir), options)
  queues.push(q)
  return q
}

afterEach(async () => {
  await Promise.all(queues.splice(0).map((q) => q.close()))
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
})

describeQueueContract('sqlite', async () => {
  const dir = tempDir('relay-queue-')
  const spool = new Spool(dir)
  const queue = new SqliteQueue(path.join(dir, 'queue.sqlite'), spool)
  return {
    queue,
    spool,
    cleanup: async () => {
      await queue.close()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
})

function message(o: Partial<NewMessage> & { recipients: NewMessage['recipients'] }): NewMessage {
  const id = o.id ?? newQueueId()
  const headers = Buffer.from(`Subject: ${id}\r\n\r\n`)
  const receivedAt = o.receivedAt ?? Date.now()
  return {
    id,
    sender: 'alice@sender.test',
    headers,
    body: { inline: Buffer.from('hello\r\n') },
    size: headers.length + 7,
    receivedAt,
    expiresAt: receivedAt + 86_400_000,
    meta: {},
    ...o,
  }
}

describe('SQLite queue specifics', () => {
  it('lists the spool files of queued messages, and refuses a stored body with a clear error', async () => {
    const dir = freshDir()
    const q = open(dir)
    const spool = new Spool(dir)
    const f = await spool.create(newQueueId())
    await f.write(Buffer.from('x'.repeat(1000)))
    await f.commit()
    const m = message({ recipients: [{ address: 'b@dest.test', domain: 'dest.test' }], body: { file: f.path } })
    await q.enqueue(m)
    expect(await q.bodyFiles()).toEqual([f.path])
    expect(() => q.openBody({ ...m, body: { stored: 10 } })).toThrow(/stored.*PostgreSQL/)
    await expect(q.enqueue(message({ recipients: [{ address: 'b@dest.test', domain: 'dest.test' }], body: { stored: 10 } }))).rejects.toThrow(/stored/)
  })

  it('drops counters and sent-log entries older than the retention when it opens', async () => {
    const dir = freshDir()
    const day = 86_400_000
    const now = Date.now()
    const first = open(dir)
    const old = message({ sender: 'old@brand.test', recipients: [{ address: 'u@isp.test', domain: 'isp.test' }], receivedAt: now - 40 * day })
    const recent = message({ sender: 'new@brand.test', recipients: [{ address: 'u@isp.test', domain: 'isp.test' }], receivedAt: now - 2 * day })
    await first.enqueue(old)
    await first.enqueue(recent)
    await first.recordComplaint({ queueIds: ['NOSUCHID'], originalMailFrom: 'x@old.test', feedbackType: 'abuse', receivedAt: now - 40 * day })
    await first.recordComplaint({ queueIds: ['NOSUCHID'], originalMailFrom: 'x@recent.test', feedbackType: 'abuse', receivedAt: now - 2 * day })
    expect((await first.stats(0)).map((r) => r.senderDomain).sort()).toEqual(['old.test', 'recent.test'])
    await first.close()

    // A new process: its first write prunes (10 days kept).
    const second = open(dir, { retentionMs: 10 * day })
    await second.suppress([])
    expect((await second.stats(0)).map((r) => r.senderDomain)).toEqual(['recent.test'])
    expect((await second.recordComplaint({ queueIds: [old.id], feedbackType: 'abuse', receivedAt: now })).matched).toBe(false)
    expect(await second.recordComplaint({ queueIds: [recent.id], feedbackType: 'abuse', receivedAt: now })).toEqual({
      matched: true,
      queueId: recent.id,
      sender: 'new@brand.test',
      senderDomain: 'brand.test',
    })
    // Pruning touches only reputation data: both messages are still queued.
    expect((await second.list()).map((e) => e.id).sort()).toEqual([old.id, recent.id].sort())
  })

  describe('a database written by an older relay (schema version 2)', () => {
    function oldDatabase(): { file: string; id: string } {
      const dir = freshDir()
      const file = path.join(dir, 'queue.sqlite')
      const db = new Database(file)
      db.pragma('journal_mode = WAL')
      for (const sql of MIGRATIONS.slice(0, 2)) db.exec(sql)
      db.pragma('user_version = 2')
      const id = newQueueId()
      const now = Date.now()
      db.prepare(
        `INSERT INTO messages (id, sender, message_id, size, headers, body, received_at, expires_at, meta) VALUES (?, 'old@sender.test', '<m@x>', 10, ?, ?, ?, ?, '{}')`,
      ).run(id, Buffer.from('Subject: old\r\n\r\n'), Buffer.from('body'), now, now + 86_400_000)
      db.prepare(
        `INSERT INTO recipients (message_id, address, domain, state, attempts, next_attempt, last_response, updated_at, category) VALUES (?, 'r@dest.test', 'dest.test', 'deferred', 1, ?, '451 later', ?, 'other')`,
      ).run(id, now + 60_000, now)
      db.close()
      return { file, id }
    }

    it('can be read by the read-only CLI store without migrating it', () => {
      const { file, id } = oldDatabase()
      const store = new SqliteStore(file, { readonly: true })
      try {
        const [entry] = store.list()
        expect(entry).toEqual(expect.objectContaining({ id, sender: 'old@sender.test', heldAt: undefined }))
        expect(entry!.recipients).toEqual([expect.objectContaining({ address: 'r@dest.test', state: 'deferred', lastResponse: '451 later', category: 'other' })])
        expect(store.list({ state: 'held' })).toEqual([])
        expect(store.list({ state: 'deferred', domain: 'dest.test' }).map((e) => e.id)).toEqual([id])
        expect(store.show(id, Date.now())?.recipients[0]?.history).toEqual([])
        expect(store.summary(Date.now()).recipients).toEqual({ queued: 0, deferred: 1, held: 0 })
        expect(store.stats(0)).toEqual([])
      } finally {
        store.close()
      }
      const db = new Database(file, { readonly: true })
      expect(db.pragma('user_version', { simple: true })).toBe(2)
      db.close()
    })

    it('is migrated by the queue, keeping its messages', async () => {
      const { file, id } = oldDatabase()
      const q = new SqliteQueue(file, new Spool(path.dirname(file)))
      queues.push(q)
      expect((await q.list()).map((e) => e.id)).toEqual([id])
      expect(await q.hold(id)).toBe(true)
      expect((await q.show(id))?.heldAt).toBeTypeOf('number')
      const db = new Database(file, { readonly: true })
      expect(db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length)
      db.close()
    })
  })
})
