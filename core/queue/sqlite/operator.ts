// The operator's verbs on the SQLite queue: list, show, hold, release, remove, bounce, flush, summary.
import type { AttemptRecord, MessageDetail, OperatorBounce, OwedDsn, QueuedMessage, QueueEntry, QueueFilter, QueueSummary } from '../types.js'
import type { BounceCategory } from '../../hooks/types.js'
import { complete, deleteMessage } from './delivery.js'
import { summaryFromCounts } from './counts.js'
import { NOT_HELD, NOT_IN_FLIGHT, parse, PENDING, toMessage, type MessageRow, type RecipientRow, type Sqlite } from './sql.js'

export function list(q: Sqlite, filter: QueueFilter = {}): QueueEntry[] {
  const held = q.version >= 3 ? 'held_at' : 'NULL'
  const where: string[] = []
  const params: unknown[] = []
  if (filter.state === 'held') where.push(`${held} IS NOT NULL`)
  if (filter.state === 'queued' || filter.state === 'deferred') {
    // Held messages are listed as held only; with a domain: a recipient in that state there.
    where.push(`${held} IS NULL AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = ?${filter.domain !== undefined ? ' AND r.domain = ?' : ''})`)
    params.push(filter.state)
    if (filter.domain !== undefined) params.push(filter.domain)
  } else if (filter.domain !== undefined) {
    where.push(`EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.domain = ?)`)
    params.push(filter.domain)
  }
  if (filter.sender !== undefined) {
    where.push(`lower(sender) = ?`)
    params.push(filter.sender.toLowerCase())
  }
  if (filter.after !== undefined) {
    where.push(`(received_at > ? OR (received_at = ? AND id > ?))`)
    params.push(filter.after.receivedAt, filter.after.receivedAt, filter.after.id)
  }
  const limit = filter.limit !== undefined ? ` LIMIT ${Math.max(0, Math.floor(filter.limit))}` : ''
  const messages = q.db
    .prepare(
      `SELECT id, message_id, sender, size, received_at, ${held} AS held_at FROM messages m ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY received_at, id${limit}`,
    )
    .all(...params) as Pick<MessageRow, 'id' | 'message_id' | 'sender' | 'size' | 'received_at' | 'held_at'>[]
  const columns = `message_id, address, state, attempts, next_attempt, leased, last_response${q.version >= 2 ? ', category' : ''}${q.version >= 6 ? ', dsn IS NOT NULL AS dsn_owed' : ''}`
  const byMessage = new Map<string, (RecipientRow & { dsn_owed?: number })[]>()
  if (where.length || limit) {
    // A narrowed list: each message's recipients by index, not every recipient in the queue.
    const one = q.stmt(`SELECT ${columns} FROM recipients WHERE message_id = ? ORDER BY id`)
    for (const m of messages) byMessage.set(m.id, one.all(m.id) as RecipientRow[])
  } else {
    for (const r of q.db.prepare(`SELECT ${columns} FROM recipients ORDER BY id`).all() as RecipientRow[]) {
      const list = byMessage.get(r.message_id)
      if (list) list.push(r)
      else byMessage.set(r.message_id, [r])
    }
  }
  const now = Date.now()
  return messages.map((m) => ({
    id: m.id,
    messageId: m.message_id ?? undefined,
    sender: m.sender,
    size: m.size,
    receivedAt: m.received_at,
    heldAt: m.held_at ?? undefined,
    recipients: (byMessage.get(m.id) ?? []).map((r) => {
      const pending = r.state === 'queued' || r.state === 'deferred'
      // A lease sets next_attempt to its expiry: in flight, not a next attempt (show() says `leased`).
      const delivering = pending && r.leased === 1 && r.next_attempt > now
      return {
        address: r.address,
        state: r.state,
        attempts: r.attempts,
        nextAttemptAt: pending && !delivering ? r.next_attempt : undefined,
        lastResponse: r.last_response ?? undefined,
        category: r.category ?? undefined,
        ...(r.dsn_owed ? { dsnOwed: true as const } : {}),
        ...(delivering ? { delivering: true as const } : {}),
      }
    }),
  }))
}

/** The message as queued (for `relay queue cat`). */
export function message(q: Sqlite, queueId: string): QueuedMessage | undefined {
  const m = q.stmt(`SELECT * FROM messages WHERE id = ?`).get(queueId) as MessageRow | undefined
  return m ? toMessage(m) : undefined
}

export function show(q: Sqlite, queueId: string, now: number): MessageDetail | undefined {
  const m = q.stmt(`SELECT * FROM messages WHERE id = ?`).get(queueId) as MessageRow | undefined
  if (!m) return undefined
  const recipients = q.stmt(`SELECT * FROM recipients WHERE message_id = ? ORDER BY id`).all(queueId) as (RecipientRow & { dsn?: string | null })[]
  const history = new Map<number, AttemptRecord[]>()
  if (q.version >= 3) {
    const rows = q.stmt(`SELECT recipient_id, at, state, response, remote_host, category FROM attempts WHERE message_id = ? ORDER BY at, id`).all(queueId) as {
      recipient_id: number
      at: number
      state: AttemptRecord['state']
      response: string
      remote_host: string | null
      category: BounceCategory | null
    }[]
    for (const a of rows) {
      const list = history.get(a.recipient_id) ?? []
      list.push({ at: a.at, state: a.state, response: a.response, remoteHost: a.remote_host ?? undefined, category: a.category ?? undefined })
      history.set(a.recipient_id, list)
    }
  }
  const pending = (r: RecipientRow) => r.state === 'queued' || r.state === 'deferred'
  return {
    id: m.id,
    messageId: m.message_id ?? undefined,
    sender: m.sender,
    senderArgs: parse(m.sender_args),
    size: m.size,
    receivedAt: m.received_at,
    expiresAt: m.expires_at,
    heldAt: m.held_at ?? undefined,
    meta: JSON.parse(m.meta),
    headers: Buffer.from(m.headers).toString('utf8'),
    recipients: recipients.map((r) => ({
      rowId: r.id,
      address: r.address,
      domain: r.domain,
      args: parse(r.args),
      state: r.state,
      attempts: r.attempts,
      nextAttemptAt: pending(r) ? r.next_attempt : undefined,
      lastResponse: r.last_response ?? undefined,
      category: r.category ?? undefined,
      remoteHost: r.remote_host ?? undefined,
      ...(r.dsn ? { dsnOwed: true as const } : {}),
      leased: pending(r) && r.leased === 1 && r.next_attempt > now,
      history: history.get(r.id) ?? [],
    })),
  }
}

export function hold(q: Sqlite, queueId: string, now: number): boolean {
  if (q.stmt(`UPDATE messages SET held_at = ? WHERE id = ? AND held_at IS NULL`).run(now, queueId).changes > 0) return true
  return q.stmt(`SELECT 1 FROM messages WHERE id = ?`).get(queueId) !== undefined
}

export function release(q: Sqlite, queueId: string, now: number): boolean {
  if (q.stmt(`UPDATE messages SET held_at = NULL WHERE id = ? AND held_at IS NOT NULL`).run(queueId).changes === 0) return false
  q.stmt(`UPDATE recipients SET next_attempt = ?, leased = 0 WHERE message_id = ? AND ${PENDING} AND ${NOT_IN_FLIGHT}`).run(now, queueId, now)
  return true
}

/** Returns the body file to remove, if the message was there. */
export function remove(q: Sqlite, queueId: string, unlessInFlightAt?: number): { removed: boolean; inFlight?: true; bodyFile?: string } {
  const m = q.stmt(`SELECT body_file FROM messages WHERE id = ?`).get(queueId) as { body_file: string | null } | undefined
  if (!m) return { removed: false }
  // Not while an attempt runs: it would deliver what the operator was told is deleted (bounce leaves those recipients too).
  if (unlessInFlightAt !== undefined && q.stmt(`SELECT 1 FROM recipients WHERE message_id = ? AND ${PENDING} AND NOT ${NOT_IN_FLIGHT}`).get(queueId, unlessInFlightAt)) return { removed: false, inFlight: true }
  deleteMessage(q, queueId)
  return { removed: true, bodyFile: m.body_file ?? undefined }
}

/**
 * Bounces the recipients pending and not in flight now (one transaction: a claim cannot come
 * between the look and the write); the body file to remove if the message left the queue.
 */
export function bounceNow(q: Sqlite, queueId: string, response: string, mark: OwedDsn, owed: number[], now: number): (OperatorBounce & { bodyFile?: string }) | undefined {
  if (!q.stmt(`SELECT 1 FROM messages WHERE id = ?`).get(queueId)) return undefined
  const rows = q.stmt(`SELECT id, address, domain, attempts, leased, next_attempt FROM recipients WHERE message_id = ? AND ${PENDING} ORDER BY id`).all(queueId) as RecipientRow[]
  const inFlight = (r: RecipientRow) => r.leased === 1 && r.next_attempt > now
  const free = rows.filter((r) => !inFlight(r))
  const owes = new Set(owed)
  const results = free.map((r) => ({ rowId: r.id, state: 'bounced' as const, response, category: 'other' as const, ...(owes.has(r.id) ? { dsn: mark } : {}) }))
  const done = complete(q, queueId, results, undefined, now)
  return { ...done, bounced: free.map((r) => ({ rowId: r.id, address: r.address, domain: r.domain, attempts: r.attempts })), inFlight: rows.filter(inFlight).map((r) => r.address) }
}

export function flush(q: Sqlite, filter: { queueId?: string; domain?: string }, now: number): number {
  const where = [PENDING, NOT_IN_FLIGHT, NOT_HELD]
  const params: unknown[] = [now, now]
  if (filter.queueId !== undefined) {
    where.push('message_id = ?')
    params.push(filter.queueId)
  }
  if (filter.domain !== undefined) {
    where.push('domain = ?')
    params.push(filter.domain)
  }
  return q.db.prepare(`UPDATE recipients SET next_attempt = ?, leased = 0 WHERE ${where.join(' AND ')}`).run(...params).changes
}

export function applyLifetime(q: Sqlite, lifetimeMs: number): number {
  return q.db.transaction(() => {
    const changed = q.db.prepare('UPDATE messages SET expires_at = received_at + ? WHERE expires_at <> received_at + ?').run(lifetimeMs, lifetimeMs).changes
    // The last try happens at expiry (a shortened lifetime must not wait for a retry hours later).
    const expiry = '(SELECT m.expires_at FROM messages m WHERE m.id = recipients.message_id)'
    if (changed) q.db.prepare(`UPDATE recipients SET next_attempt = ${expiry} WHERE ${PENDING} AND leased = 0 AND ${NOT_HELD} AND next_attempt > ${expiry}`).run()
    return changed
  })()
}

export function summary(q: Sqlite, now: number): QueueSummary {
  const s = pendingSummary(q, now)
  // Through the partial index of owed rows: as many as owe one, not the queue.
  const owing = q.version >= 6 ? (q.stmt(`SELECT COUNT(DISTINCT message_id) AS n FROM recipients WHERE dsn IS NOT NULL`).get() as { n: number }).n : 0
  return owing ? { ...s, owingDsn: owing } : s
}

function pendingSummary(q: Sqlite, _now: number): QueueSummary {
  if (q.version >= 5) return summaryFromCounts(q)
  // A database an older relay wrote, opened read-only: counted from the rows.
  const totals = q.stmt(`SELECT COUNT(*) AS n, MIN(received_at) AS oldest FROM messages`).get() as { n: number; oldest: number | null }
  const held = q.version >= 3 ? 'm.held_at IS NOT NULL' : '0'
  const rows = q.stmt(
    `SELECT r.domain AS domain, r.state AS state, ${held} AS held, COUNT(*) AS n FROM recipients r JOIN messages m ON m.id = r.message_id
     WHERE r.${PENDING} GROUP BY 1, 2, 3`,
  ).all() as { domain: string; state: 'queued' | 'deferred'; held: number; n: number }[]
  const recipients = { queued: 0, deferred: 0, held: 0 }
  const domains = new Map<string, QueueSummary['domains'][number]>()
  for (const r of rows) {
    const key = r.held ? 'held' : r.state
    recipients[key] += r.n
    const d = domains.get(r.domain) ?? { domain: r.domain, queued: 0, deferred: 0, held: 0 }
    d[key] += r.n
    domains.set(r.domain, d)
  }
  const total = (d: QueueSummary['domains'][number]) => d.queued + d.deferred + d.held
  return {
    messages: totals.n,
    recipients,
    oldestReceivedAt: totals.oldest ?? undefined,
    domains: [...domains.values()].sort((a, b) => total(b) - total(a) || (a.domain < b.domain ? -1 : 1)).slice(0, 20),
  }
}
