// Mail through the SQLite queue: taking it in, claiming due work for delivery, recording results,
// and the delay warnings for mail deferred long.
import type { ClaimOptions, ClaimResult, DelayCandidate, Job, NewMessage, RecipientResult, Suppression } from '../types.js'
import { count } from './reputation.js'
import { suppress as addSuppressions } from './suppressions.js'
import { dueRows } from './due.js'
import { bareMessageId, domainOf, hourOf, json, NOT_HELD, parse, PENDING, toMessage, WAITING, type MessageRow, type RecipientRow, type Sqlite } from './sql.js'

export function enqueue(q: Sqlite, m: NewMessage, leaseUntil?: number): number[] {
  q.stmt(
    `INSERT INTO messages (id, sender, sender_args, message_id, size, headers, body, body_file, received_at, expires_at, meta, delay_notified_at)
     VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
  ).run(
    m.id, m.sender, json(m.senderArgs), m.messageId ?? null, m.size, m.headers,
    'inline' in m.body ? m.body.inline : null, 'file' in m.body ? m.body.file : null,
    m.receivedAt, m.expiresAt, JSON.stringify(m.meta),
    // No delay warning is ever sent for a message from the null sender.
    m.sender === '' ? 0 : null,
  )
  // The sent log, for matching complaints later (not for bounces: nobody complains to the null sender).
  if (m.sender !== '') {
    q.stmt(`INSERT OR REPLACE INTO sent_log (queue_id, message_id, sender, sender_domain, received_at) VALUES (?,?,?,?,?)`).run(
      m.id, bareMessageId(m.messageId), m.sender, domainOf(m.sender), m.receivedAt,
    )
  }
  const insert = q.stmt(
    `INSERT INTO recipients (message_id, address, domain, args, state, next_attempt, leased, updated_at) VALUES (?,?,?,?, 'queued', ?, ?, ?)`,
  )
  return m.recipients.map(
    (r) => Number(insert.run(m.id, r.address, r.domain, json(r.args), leaseUntil ?? m.receivedAt, leaseUntil ? 1 : 0, m.receivedAt).lastInsertRowid),
  )
}

export function claim(q: Sqlite, o: ClaimOptions): ClaimResult {
  const full = Object.keys(o.inFlight).filter((d) => (o.inFlight[d] ?? 0) >= o.perDomain)
  const rows = dueRows(q, o, full)

  const jobs = new Map<string, { messageId: string; domain: string; rows: RecipientRow[] }>()
  const perDomain = new Map<string, number>()
  for (const row of rows) {
    const key = `${row.message_id}\u0000${row.domain}`
    const job = jobs.get(key)
    if (job) {
      job.rows.push(row)
      continue
    }
    const busy = (o.inFlight[row.domain] ?? 0) + (perDomain.get(row.domain) ?? 0)
    if (jobs.size >= o.limit || busy >= o.perDomain) continue
    perDomain.set(row.domain, (perDomain.get(row.domain) ?? 0) + 1)
    jobs.set(key, { messageId: row.message_id, domain: row.domain, rows: [row] })
  }

  const lease = q.stmt(`UPDATE recipients SET next_attempt = ?, leased = 1 WHERE id = ?`)
  const getMessage = q.stmt(`SELECT * FROM messages WHERE id = ?`)
  const result: Job[] = []
  let takenOver = 0
  const messages = new Map<string, MessageRow | undefined>()
  for (const job of jobs.values()) {
    if (!messages.has(job.messageId)) messages.set(job.messageId, getMessage.get(job.messageId) as MessageRow | undefined)
    const m = messages.get(job.messageId)
    if (!m) continue
    for (const row of job.rows) {
      // Still marked leased while due: its lease ran out without a result (recover() clears the
      // marks of a process that restarted, so what is left belonged to one that died or hung).
      if (row.leased) takenOver++
      lease.run(o.now + o.leaseMs, row.id)
    }
    result.push({
      domain: job.domain,
      message: toMessage(m),
      recipients: job.rows.map((r) => ({ rowId: r.id, address: r.address, attempts: r.attempts, args: parse(r.args) })),
    })
  }
  // ORDER BY + LIMIT walks the due index and stops at the first message not held (MIN() would scan).
  const next = q.stmt(`SELECT next_attempt AS t FROM recipients WHERE ${PENDING} AND ${NOT_HELD} ORDER BY next_attempt LIMIT 1`).get() as { t: number } | undefined
  return { jobs: result, nextDueAt: next?.t, takenOver }
}

/**
 * Moves the leases of rows still leased and pending to `until` (one statement for the batch); rows
 * with a result (complete clears the mark) or freed meanwhile (recover, flush) stay as they are.
 */
export function renewLeases(q: Sqlite, rowIds: number[], until: number): number {
  if (!rowIds.length) return 0
  return q.stmt(`UPDATE recipients SET next_attempt = ? WHERE id IN (SELECT value FROM json_each(?)) AND leased = 1 AND ${PENDING}`).run(until, JSON.stringify(rowIds)).changes
}

/** Returns the body file to remove when the message has left the queue. */
export function complete(q: Sqlite, queueId: string, results: RecipientResult[], bounce: NewMessage | undefined, now: number, suppress?: Suppression[]): { finished: boolean; dsnDue?: boolean; bodyFile?: string } {
  const update = q.stmt(
    `UPDATE recipients SET state = ?, attempts = attempts + ?, last_response = ?, remote_host = ?, next_attempt = ?, leased = 0, updated_at = ?, category = ?, dsn = ?
     WHERE id = ? AND message_id = ? RETURNING domain, address`,
  )
  const history = q.stmt(`INSERT INTO attempts (recipient_id, message_id, at, state, response, remote_host, category, sender, recipient) VALUES (?,?,?,?,?,?,?,?,?)`)
  const m = q.stmt(`SELECT sender, body_file FROM messages WHERE id = ?`).get(queueId) as { sender: string; body_file: string | null } | undefined
  // Bounces from the null sender are no sending domain's reputation.
  const senderDomain = m && m.sender !== '' ? domainOf(m.sender) : undefined
  for (const r of results) {
    const counted = r.counted !== false
    const row = update.get(r.state, counted ? 1 : 0, r.response, r.remoteHost ?? null, r.nextAttemptAt ?? now, now, r.category ?? null, json(r.dsn), r.rowId, queueId) as { domain: string; address: string } | undefined
    if (!row) continue // removed meanwhile (relay queue remove)
    history.run(r.rowId, queueId, now, r.state, r.response, r.remoteHost ?? null, r.category ?? null, m?.sender ?? '', row.address)
    if (senderDomain !== undefined && counted) count(q, hourOf(now), senderDomain, row.domain, r.state, r.state === 'delivered' ? '' : (r.category ?? ''))
  }
  if (bounce) enqueue(q, bounce)
  if (suppress?.length) addSuppressions(q, suppress, now)
  const pending = q.stmt(`SELECT COUNT(*) AS n FROM recipients WHERE message_id = ? AND ${PENDING}`).get(queueId) as { n: number }
  // A message that owes a DSN stays until it is queued (owed.ts).
  const owed = q.stmt(`SELECT EXISTS (SELECT 1 FROM recipients o WHERE o.message_id = m.id AND o.dsn IS NOT NULL) AND NOT ${WAITING} AS due FROM messages m WHERE m.id = ?`).get(now, queueId) as { due: number } | undefined
  const due = Boolean(owed?.due)
  if (pending.n > 0 || due) return { finished: false, dsnDue: due }
  deleteMessage(q, queueId)
  return { finished: true, bodyFile: m?.body_file ?? undefined }
}

/** Its attempts stay in the attempt log (recent.ts prunes them). */
export function deleteMessage(q: Sqlite, queueId: string): void {
  q.stmt(`DELETE FROM recipients WHERE message_id = ?`).run(queueId)
  q.stmt(`DELETE FROM messages WHERE id = ?`).run(queueId)
}

export function recover(q: Sqlite, now: number, queueIds?: string[]): number {
  if (queueIds) {
    return q.stmt(`UPDATE recipients SET next_attempt = ?, leased = 0 WHERE message_id IN (SELECT value FROM json_each(?)) AND leased = 1 AND ${PENDING}`).run(now, JSON.stringify(queueIds)).changes
  }
  // Schema 5 on: through the index of leased rows only (a restart costs what was in flight, not the queue).
  const table = q.version >= 5 ? 'recipients INDEXED BY recipients_leased' : 'recipients'
  return q.stmt(`UPDATE ${table} SET next_attempt = ?, leased = 0 WHERE leased = 1 AND ${PENDING}`).run(now).changes
}

export function delayCandidates(q: Sqlite, receivedBefore: number, limit: number): DelayCandidate[] {
  const messages = q.stmt(
    `SELECT id, sender, sender_args, message_id, size, headers, received_at, expires_at, meta FROM messages m
     WHERE delay_notified_at IS NULL AND received_at <= ?
       AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = 'deferred')
     ORDER BY received_at LIMIT ?`,
  ).all(receivedBefore, limit) as MessageRow[]
  const recipients = q.stmt(
    `SELECT id, address, args, last_response, remote_host, category, updated_at FROM recipients WHERE message_id = ? AND state = 'deferred' ORDER BY id`,
  )
  return messages.map((m) => {
    const { body: _body, ...message } = toMessage({ ...m, body: null, body_file: null })
    return {
      message,
      recipients: (recipients.all(m.id) as RecipientRow[]).map((r) => ({
        rowId: r.id,
        address: r.address,
        args: parse(r.args),
        lastResponse: r.last_response ?? undefined,
        remoteHost: r.remote_host ?? undefined,
        category: r.category ?? undefined,
        lastAttemptAt: r.updated_at,
      })),
    }
  })
}

export function markDelayNotified(q: Sqlite, queueId: string, dsn: NewMessage | undefined, now: number, rowIds: number[] = []): boolean {
  // Delivered or bounced since the warning was built: it would tell of a delay that is over.
  const still = q.stmt(`SELECT COUNT(*) AS n FROM recipients WHERE message_id = ? AND id IN (SELECT value FROM json_each(?)) AND state = 'deferred'`).get(queueId, JSON.stringify(rowIds)) as { n: number }
  if (still.n !== rowIds.length) return false
  const marked = q.stmt(`UPDATE messages SET delay_notified_at = ? WHERE id = ? AND delay_notified_at IS NULL`).run(now, queueId).changes > 0
  if (marked && dsn) enqueue(q, dsn)
  return marked
}

export function bodyFiles(q: Sqlite): string[] {
  return (q.db.prepare(`SELECT body_file FROM messages WHERE body_file IS NOT NULL`).all() as { body_file: string }[]).map((r) => r.body_file)
}
