// Recording delivery results for a batch of completes in one transaction: a handful of
// statements however many messages the batch holds.
import type pg from 'pg'
import type { CompleteResult, NewMessage, RecipientResult, Suppression } from '../types.js'
import { insertGenerated } from './insert.js'
import { upsertSuppressions } from './suppressions.js'
import { bareMessageId, domainOf, HOUR, owed, PENDING, waiting } from './sql.js'

export interface CompleteItem {
  queueId: string
  results: RecipientResult[]
  bounce?: NewMessage
  suppress?: Suppression[]
}

/**
 * Applies the completes in one transaction on `c` (a pipelined connection: BEGIN goes out with the
 * lock, COMMIT with the last statements); gives, per item, whether it finished its message and
 * whether the message's owed DSN is now its caller's to send.
 */
export async function completeMany(
  c: pg.PoolClient, s: string, nodeId: string, items: CompleteItem[], now: number, onLost?: (items: CompleteItem[]) => void,
): Promise<CompleteResult[]> {
  const ids = [...new Set(items.map((i) => i.queueId))]
  // The message rows' locks make completes of one message (its domains, on several nodes) take
  // turns, so the last one sees every other's result and removes the message. Taken in id order,
  // so two nodes' batches cannot deadlock; the statements below start after it, so they see what
  // the complete that held a lock before us wrote.
  const [, { rows: found }, { rows: lost }] = await Promise.all([
    c.query('BEGIN'),
    c.query<LockedMessage>({
      name: `relay-complete-lock-${s}`,
      text: `SELECT id, sender, message_id FROM ${s}.messages WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE`,
      values: [ids],
    }),
    // The recipients too (id order, as the heartbeat's takeover locks them), so no claim leases
    // them between this look and the update; those no longer this node's to report are listed.
    c.query<{ id: number; lost: boolean }>({
      name: `relay-complete-holder-${s}`,
      text: `SELECT id, NOT (${PENDING} AND (leased_by IS NULL OR leased_by = $2)) AS lost
             FROM ${s}.recipients WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE`,
      values: [items.flatMap((i) => i.results.map((r) => r.rowId)), nodeId],
    }),
  ])
  // An attempt whose recipients another node took over (this node was declared dead meanwhile), or
  // that already have a final result, is not recorded at all, bounce and suppressions included:
  // the new holder's attempt decides, and the sender gets at most one DSN. Nor is one whose
  // message is gone (finished by that node, or removed: `remove` sends no bounce).
  const messages = new Map(found.map((m) => [m.id, m]))
  const lostRows = new Set(lost.filter((r) => r.lost).map((r) => r.id))
  const kept = items.filter((i) => messages.has(i.queueId) && !i.results.some((r) => lostRows.has(r.rowId)))
  const keep = new Set(kept)
  const dropped = items.filter((i) => !keep.has(i) && messages.has(i.queueId))
  if (dropped.length) onLost?.(dropped)
  // Rare, and several statements each: written before the rest, which then goes out at once.
  const bounces = kept.flatMap((i) => (i.bounce ? [i.bounce] : []))
  if (bounces.length) await insertGenerated(c, s, nodeId, bounces)
  const suppress = kept.flatMap((i) => i.suppress ?? [])
  if (suppress.length) await upsertSuppressions(c, s, suppress, now)

  const results = kept.flatMap((i) => {
    const m = messages.get(i.queueId)
    return m ? i.results.map((r) => ({ r, m })) : []
  })
  const recorded = results.length ? c.query(recordResults(s, results, now)) : undefined
  // Its own statement, so it sees the results just recorded (and those of any complete that held a lock before).
  const finishing = found.length ? c.query<{ id: string }>(removeFinished(s, found.map((m) => m.id))) : undefined
  // Under the messages' locks: of two nodes finishing one message's last jobs, the second sees the first's results.
  const owing = found.length ? c.query<{ id: string }>(dsnDue(s, found.map((m) => m.id), now)) : undefined
  // An error in any statement fails this (COMMIT then only ends the aborted transaction).
  const [, done, due] = await Promise.all([recorded, finishing, owing, c.query('COMMIT')])
  const removed = new Set(done?.rows.map((r) => r.id))
  const owes = new Set(due?.rows.map((r) => r.id))
  // A message already gone counts as finished (as for a lone complete); one removed here is
  // finished by the last of its completes in the batch, which also sends its owed DSN.
  const lastOf = new Map(kept.map((i) => [i.queueId, i]))
  return items.map((i) => {
    const last = keep.has(i) && lastOf.get(i.queueId) === i
    return { finished: !messages.has(i.queueId) || (last && removed.has(i.queueId)), ...(last && owes.has(i.queueId) ? { dsnDue: true } : {}) }
  })
}

/** The messages that owe a DSN nobody in flight will send. */
export function dsnDue(s: string, ids: string[], now: number): pg.QueryConfig {
  return {
    name: `relay-complete-dsn-${s}`,
    text: `SELECT id FROM ${s}.messages m WHERE id = ANY($1::text[]) AND ${owed(s)} AND NOT ${waiting(s, '$2')}`,
    values: [ids, now],
  }
}

export interface LockedMessage {
  id: string
  sender: string
  message_id: string | null
}

/** Recipients' new states, their attempt history, the reputation counters and the sent log, in one statement. */
export function recordResults(s: string, results: { r: RecipientResult; m: LockedMessage }[], now: number): pg.QueryConfig {
  return {
    name: `relay-complete-${s}`,
    text: `WITH r AS (
       SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $13::int[], $14::jsonb[])
         AS t(queue_id, id, state, response, remote_host, next_attempt, category, sender, sender_domain, mid, inc, dsn)
     ),
     done AS (
       UPDATE ${s}.recipients x SET state = r.state, attempts = x.attempts + r.inc, last_response = r.response,
         remote_host = r.remote_host, next_attempt = r.next_attempt, leased_by = NULL, lease_until = NULL,
         updated_at = $11, category = r.category, dsn = r.dsn
       FROM r WHERE x.id = r.id AND x.message_id = r.queue_id
       RETURNING x.id, x.message_id, x.address, x.domain, x.state, x.last_response, x.remote_host, x.category, r.sender, r.sender_domain, r.mid, r.inc
     ),
     history AS (
       INSERT INTO ${s}.attempts (recipient_id, message_id, sender, recipient, at, state, response, remote_host, category)
       SELECT id, message_id, sender, address, $11::bigint, state, last_response, remote_host, category FROM done
     ),
     counted AS (
       -- Key order: two batches upserting the same counters cannot deadlock.
       INSERT INTO ${s}.stats AS st (hour, sender_domain, dest_domain, outcome, category, count)
       SELECT $12::bigint, sender_domain, domain, state, CASE WHEN state = 'delivered' THEN '' ELSE coalesce(category, '') END, count(*) FROM done
       WHERE sender <> '' AND inc = 1
       GROUP BY 2, 3, 4, 5 ORDER BY 2, 3, 4, 5
       ON CONFLICT (hour, sender_domain, dest_domain, outcome, category) DO UPDATE SET count = st.count + excluded.count
     )
     INSERT INTO ${s}.sent_log (queue_id, message_id, sender, sender_domain, sent_at)
     SELECT DISTINCT ON (message_id) message_id, mid, sender, sender_domain, $11::bigint FROM done
     WHERE sender <> '' AND state = 'delivered'
     ORDER BY message_id
     ON CONFLICT (queue_id) DO NOTHING`,
    values: [
      results.map(({ m }) => m.id), results.map(({ r }) => r.rowId), results.map(({ r }) => r.state), results.map(({ r }) => r.response),
      results.map(({ r }) => r.remoteHost ?? null), results.map(({ r }) => r.nextAttemptAt ?? now), results.map(({ r }) => r.category ?? null),
      // A bounce (null sender) is no sending domain's reputation, nor a message to complain about.
      results.map(({ m }) => m.sender), results.map(({ m }) => domainOf(m.sender)), results.map(({ m }) => bareMessageId(m.message_id)),
      now, Math.floor(now / HOUR) * HOUR,
      // A wait at the relay's own route cap is no attempt (RecipientResult.counted).
      results.map(({ r }) => (r.counted === false ? 0 : 1)),
      results.map(({ r }) => (r.dsn ? JSON.stringify(r.dsn) : null)),
    ],
  }
}

/** Removes the messages none of whose recipients is pending any more nor owed a DSN (bodies and history go with them). */
export function removeFinished(s: string, ids: string[]): pg.QueryConfig {
  return {
    name: `relay-complete-remove-${s}`,
    text: `DELETE FROM ${s}.messages m WHERE id = ANY($1::text[])
           AND NOT EXISTS (SELECT 1 FROM ${s}.recipients r WHERE r.message_id = m.id AND (r.${PENDING} OR r.dsn IS NOT NULL))
           RETURNING id`,
    values: [ids],
  }
}
