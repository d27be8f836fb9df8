// The operator's verbs on the PostgreSQL queue: list, show, hold, release, remove, bounce, flush, summary.
import type { MessageDetail, OperatorBounce, OwedDsn, QueueEntry, QueueFilter, QueueSummary, RecipientState } from '../types.js'
import type { BounceCategory } from '../../hooks/types.js'
import { dsnDue, recordResults, removeFinished, type LockedMessage } from './complete.js'
import { orUndefined, PENDING, type MessageRow, type PgContext } from './sql.js'

export async function list(db: PgContext, filter: QueueFilter = {}): Promise<QueueEntry[]> {
  const where: string[] = []
  const values: unknown[] = []
  const param = (v: unknown) => `$${values.push(v)}`
  // Held messages are listed as held only; state and domain together: a recipient in that state at that domain.
  const recipient: string[] = []
  if (filter.state === 'held') where.push(`m.held_at IS NOT NULL`)
  else if (filter.state) {
    where.push(`m.held_at IS NULL`)
    recipient.push(`r.state = ${param(filter.state)}`)
  }
  if (filter.domain !== undefined) recipient.push(`r.domain = ${param(filter.domain.toLowerCase())}`)
  if (recipient.length) where.push(`EXISTS (SELECT 1 FROM ${db.s}.recipients r WHERE r.message_id = m.id AND ${recipient.join(' AND ')})`)
  if (filter.sender !== undefined) where.push(`lower(m.sender) = ${param(filter.sender.toLowerCase())}`)
  if (filter.after !== undefined) where.push(`(m.received_at, m.id) > (${param(filter.after.receivedAt)}, ${param(filter.after.id)})`)
  const limit = filter.limit !== undefined ? `LIMIT ${param(Math.max(0, filter.limit))}` : ''
  const { rows } = await db.query<{
    id: string; message_id: string | null; sender: string; size: number; received_at: number; held_at: number | null
    recipients: { address: string; state: RecipientState; attempts: number; next_attempt: number; last_response: string | null; category: BounceCategory | null; dsn_owed: boolean; delivering: boolean }[] | null
  }>(
    `SELECT m.id, m.message_id, m.sender, m.size, m.received_at, m.held_at,
       (SELECT json_agg(json_build_object('address', r.address, 'state', r.state, 'attempts', r.attempts, 'next_attempt', r.next_attempt,
                                          'last_response', r.last_response, 'category', r.category, 'dsn_owed', r.dsn IS NOT NULL,
                                          'delivering', r.lease_until IS NOT NULL AND r.lease_until > ${param(Date.now())}) ORDER BY r.id)
        FROM ${db.s}.recipients r WHERE r.message_id = m.id) AS recipients
     FROM ${db.s}.messages m ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY m.received_at, m.id ${limit}`,
    values,
  )
  return rows.map((m) => ({
    id: m.id,
    messageId: orUndefined(m.message_id),
    sender: m.sender,
    size: m.size,
    receivedAt: m.received_at,
    heldAt: orUndefined(m.held_at),
    recipients: (m.recipients ?? []).map((r) => ({
      address: r.address,
      state: r.state,
      attempts: r.attempts,
      // A lease is in flight: no next attempt is set while it runs.
      nextAttemptAt: (r.state === 'queued' || r.state === 'deferred') && !r.delivering ? r.next_attempt : undefined,
      lastResponse: orUndefined(r.last_response),
      category: orUndefined(r.category),
      ...(r.dsn_owed ? { dsnOwed: true as const } : {}),
      ...((r.state === 'queued' || r.state === 'deferred') && r.delivering ? { delivering: true as const } : {}),
    })),
  }))
}

export async function show(db: PgContext, queueId: string): Promise<MessageDetail | undefined> {
  const now = Date.now()
  const { rows } = await db.query<MessageRow & {
    recipients: {
      id: number; address: string; domain: string; args: Record<string, string | boolean> | null; state: RecipientState; attempts: number
      next_attempt: number; lease_until: number | null; last_response: string | null; remote_host: string | null; category: BounceCategory | null; dsn_owed: boolean
      history: { at: number; state: 'delivered' | 'deferred' | 'bounced'; response: string; remote_host: string | null; category: BounceCategory | null }[] | null
    }[] | null
  }>(
    `SELECT m.id, m.sender, m.sender_args, m.message_id, m.size, m.headers, m.received_at, m.expires_at, m.meta, m.held_at,
       (SELECT json_agg(json_build_object(
                 'id', r.id, 'address', r.address, 'domain', r.domain, 'args', r.args, 'state', r.state, 'attempts', r.attempts,
                 'next_attempt', r.next_attempt, 'lease_until', r.lease_until, 'last_response', r.last_response,
                 'remote_host', r.remote_host, 'category', r.category, 'dsn_owed', r.dsn IS NOT NULL,
                 'history', (SELECT json_agg(json_build_object('at', a.at, 'state', a.state, 'response', a.response,
                                                               'remote_host', a.remote_host, 'category', a.category) ORDER BY a.id)
                             FROM ${db.s}.attempts a WHERE a.recipient_id = r.id)) ORDER BY r.id)
        FROM ${db.s}.recipients r WHERE r.message_id = m.id) AS recipients
     FROM ${db.s}.messages m WHERE m.id = $1`,
    [queueId],
  )
  const m = rows[0]
  if (!m) return undefined
  return {
    id: m.id,
    messageId: orUndefined(m.message_id),
    sender: m.sender,
    senderArgs: orUndefined(m.sender_args),
    size: m.size,
    receivedAt: m.received_at,
    expiresAt: m.expires_at,
    heldAt: orUndefined(m.held_at),
    meta: m.meta,
    headers: m.headers.toString('utf8'),
    recipients: (m.recipients ?? []).map((r) => {
      const pending = r.state === 'queued' || r.state === 'deferred'
      return {
        rowId: r.id,
        address: r.address,
        domain: r.domain,
        args: orUndefined(r.args),
        state: r.state,
        attempts: r.attempts,
        nextAttemptAt: pending ? r.next_attempt : undefined,
        lastResponse: orUndefined(r.last_response),
        category: orUndefined(r.category),
        remoteHost: orUndefined(r.remote_host),
        ...(r.dsn_owed ? { dsnOwed: true as const } : {}),
        leased: pending && r.lease_until != null && r.lease_until > now,
        history: (r.history ?? []).map((a) => ({
          at: a.at,
          state: a.state,
          response: a.response,
          remoteHost: orUndefined(a.remote_host),
          category: orUndefined(a.category),
        })),
      }
    }),
  }
}

export async function hold(db: PgContext, queueId: string): Promise<boolean> {
  const { rowCount } = await db.query(`UPDATE ${db.s}.messages SET held_at = coalesce(held_at, $2) WHERE id = $1`, [queueId, Date.now()])
  return (rowCount ?? 0) > 0
}

export async function release(db: PgContext, queueId: string, now: number): Promise<boolean> {
  // Pending recipients become due, except one a delivery holds right now (it reports itself).
  const { rows } = await db.query<{ n: number }>(
    `WITH m AS (UPDATE ${db.s}.messages SET held_at = NULL WHERE id = $1 AND held_at IS NOT NULL RETURNING id),
     due AS (
       UPDATE ${db.s}.recipients SET next_attempt = $2, leased_by = NULL, lease_until = NULL
       WHERE message_id IN (SELECT id FROM m) AND ${PENDING} AND (lease_until IS NULL OR lease_until <= $2)
     )
     SELECT count(*) AS n FROM m`,
    [queueId, now],
  )
  return (rows[0]?.n ?? 0) > 0
}

export async function remove(db: PgContext, queueId: string, unlessInFlightAt?: number): Promise<boolean | 'in-flight'> {
  // Recipients and body chunks go with it (ON DELETE CASCADE); attempts stay in the attempt log (recent.ts).
  if (unlessInFlightAt === undefined) {
    const { rowCount } = await db.query(`DELETE FROM ${db.s}.messages WHERE id = $1`, [queueId])
    return (rowCount ?? 0) > 0
  }
  // Not while a node delivers one of its recipients: that attempt would deliver it all the same.
  const now = unlessInFlightAt
  const { rows } = await db.query<{ deleted: boolean }>(
    `WITH busy AS (SELECT 1 FROM ${db.s}.recipients WHERE message_id = $1 AND ${PENDING} AND lease_until > $2 LIMIT 1),
          gone AS (DELETE FROM ${db.s}.messages WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM busy) RETURNING 1)
     SELECT EXISTS (SELECT 1 FROM gone) AS deleted, EXISTS (SELECT 1 FROM busy) AS busy`,
    [queueId, now],
  )
  const r = rows[0] as { deleted: boolean; busy?: boolean } | undefined
  return r?.deleted ? true : r?.busy ? 'in-flight' : false
}

/**
 * Bounces the recipients pending and not in flight now, under the message's lock and theirs (as
 * complete takes them; a claim skips locked rows, one that leased them first is seen as in flight).
 */
export async function bounceNow(db: PgContext, queueId: string, response: string, mark: OwedDsn, owed: number[], now: number): Promise<OperatorBounce | undefined> {
  return db.tx(async (c) => {
    const { rows: found } = await c.query<LockedMessage>(`SELECT id, sender, message_id FROM ${db.s}.messages WHERE id = $1 FOR UPDATE`, [queueId])
    const m = found[0]
    if (!m) return undefined
    const { rows } = await c.query<{ id: number; address: string; domain: string; attempts: number; busy: boolean }>(
      `SELECT id, address, domain, attempts, (lease_until IS NOT NULL AND lease_until > $2) AS busy FROM ${db.s}.recipients
       WHERE message_id = $1 AND ${PENDING} ORDER BY id FOR UPDATE`,
      [queueId, now],
    )
    const free = rows.filter((r) => !r.busy)
    const owes = new Set(owed)
    const results = free.map((r) => ({ r: { rowId: r.id, state: 'bounced' as const, response, category: 'other' as const, ...(owes.has(r.id) ? { dsn: mark } : {}) }, m }))
    if (results.length) await c.query(recordResults(db.s, results, now))
    const { rows: gone } = await c.query<{ id: string }>(removeFinished(db.s, [queueId]))
    const { rows: due } = gone.length ? { rows: [] } : await c.query<{ id: string }>(dsnDue(db.s, [queueId], now))
    return {
      finished: gone.length > 0,
      ...(due.length ? { dsnDue: true } : {}),
      bounced: free.map((r) => ({ rowId: r.id, address: r.address, domain: r.domain, attempts: r.attempts })),
      inFlight: rows.filter((r) => r.busy).map((r) => r.address),
    }
  })
}

export async function applyLifetime(db: PgContext, lifetimeMs: number): Promise<number> {
  return db.tx(async (c) => {
    const { rowCount } = await c.query(`UPDATE ${db.s}.messages SET expires_at = received_at + $1 WHERE expires_at <> received_at + $1`, [lifetimeMs])
    // The last try happens at expiry (a shortened lifetime must not wait for a retry hours later).
    if (rowCount)
      await c.query(
        `UPDATE ${db.s}.recipients r SET next_attempt = m.expires_at FROM ${db.s}.messages m
         WHERE m.id = r.message_id AND r.${PENDING} AND r.lease_until IS NULL AND m.held_at IS NULL AND r.next_attempt > m.expires_at`,
      )
    return rowCount ?? 0
  })
}

export async function flush(db: PgContext, filter: { queueId?: string; domain?: string }, now: number): Promise<number> {
  const values: unknown[] = [now]
  const param = (v: unknown) => `$${values.push(v)}`
  const where = [
    `r.${PENDING}`,
    `r.next_attempt > $1`,
    // Not what a delivery holds right now.
    `(r.lease_until IS NULL OR r.lease_until <= $1)`,
    `NOT EXISTS (SELECT 1 FROM ${db.s}.messages h WHERE h.id = r.message_id AND h.held_at IS NOT NULL)`,
  ]
  if (filter.queueId !== undefined) where.push(`r.message_id = ${param(filter.queueId)}`)
  if (filter.domain !== undefined) where.push(`r.domain = ${param(filter.domain.toLowerCase())}`)
  const { rowCount } = await db.query(`UPDATE ${db.s}.recipients r SET next_attempt = $1 WHERE ${where.join(' AND ')}`, values)
  return rowCount ?? 0
}

export async function summary(db: PgContext, _now: number): Promise<QueueSummary> {
  const [totals, byDomain, owing] = await Promise.all([
    db.query<{ messages: number; oldest: number | null }>(`SELECT count(*) AS messages, min(received_at) AS oldest FROM ${db.s}.messages`),
    db.query<{ domain: string; state: 'queued' | 'deferred'; held: boolean; n: number }>(
      `SELECT r.domain, r.state, m.held_at IS NOT NULL AS held, count(*) AS n
       FROM ${db.s}.recipients r JOIN ${db.s}.messages m ON m.id = r.message_id
       WHERE r.${PENDING} GROUP BY 1, 2, 3`,
    ),
    db.query<{ n: number }>(`SELECT count(DISTINCT message_id)::int AS n FROM ${db.s}.recipients WHERE dsn IS NOT NULL`),
  ])
  const recipients = { queued: 0, deferred: 0, held: 0 }
  const domains = new Map<string, { domain: string; queued: number; deferred: number; held: number }>()
  for (const row of byDomain.rows) {
    const key = row.held ? 'held' : row.state
    recipients[key] += row.n
    let d = domains.get(row.domain)
    if (!d) domains.set(row.domain, (d = { domain: row.domain, queued: 0, deferred: 0, held: 0 }))
    d[key] += row.n
  }
  const total = (d: { queued: number; deferred: number; held: number }) => d.queued + d.deferred + d.held
  return {
    messages: totals.rows[0]?.messages ?? 0,
    recipients,
    oldestReceivedAt: orUndefined(totals.rows[0]?.oldest),
    domains: [...domains.values()].sort((a, b) => total(b) - total(a) || a.domain.localeCompare(b.domain)).slice(0, 20),
    ...(owing.rows[0]?.n ? { owingDsn: owing.rows[0].n } : {}),
  }
}
