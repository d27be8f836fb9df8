// Claiming due work for delivery: leases taken with FOR UPDATE SKIP LOCKED, so nodes never take
// the same recipients.
import type { ClaimOptions, ClaimResult, Job } from '../types.js'
import { orUndefined, PENDING, toMessage, type MessageRow, type PgContext } from './sql.js'

export async function claim(db: PgContext, o: ClaimOptions): Promise<ClaimResult> {
  const domains = Object.keys(o.inFlight)
  const full = domains.filter((d) => (o.inFlight[d] ?? 0) >= o.perDomain)
  // One statement: lock due rows other nodes have not locked, group them into jobs (one per
  // message and domain, in due order) within `limit` and `perDomain`, lease the chosen ones.
  // Rows looked at but not chosen are unlocked when the statement ends. The same statement tells
  // when the next pending work is due (a lease moves it to the lease's expiry), on a row of its
  // own when no job was claimed.
  const { rows } = await db.query<MessageRow & { next_due: number | null; domain: string | null; taken_over: number | null; recipients: { rowId: number; address: string; attempts: number; args: Record<string, string | boolean> | null }[] }>({
    // Prepared once per connection: it runs after every delivery.
    name: `relay-claim-${db.s}`,
    text: `WITH cand AS MATERIALIZED (
       SELECT r.id, r.message_id, r.domain, r.next_attempt, r.leased_by FROM ${db.s}.recipients r
       WHERE r.${PENDING} AND r.next_attempt <= $1 AND r.domain <> ALL($2::text[])
         AND NOT EXISTS (SELECT 1 FROM ${db.s}.messages h WHERE h.id = r.message_id AND h.held_at IS NOT NULL)
       ORDER BY r.next_attempt, r.id
       LIMIT $3
       FOR UPDATE OF r SKIP LOCKED
     ),
     pos AS (SELECT id, message_id, domain, leased_by, row_number() OVER (ORDER BY next_attempt, id) AS n FROM cand),
     groups AS (SELECT message_id, domain, min(n) AS first FROM pos GROUP BY message_id, domain),
     ranked AS (SELECT message_id, domain, first, row_number() OVER (PARTITION BY domain ORDER BY first) AS in_domain FROM groups),
     chosen AS (
       SELECT g.message_id, g.domain, g.first FROM ranked g
       LEFT JOIN unnest($4::text[], $5::int[]) AS f(domain, busy) ON f.domain = g.domain
       WHERE coalesce(f.busy, 0) + g.in_domain <= $6
       ORDER BY g.first
       LIMIT $7
     ),
     leased AS (
       UPDATE ${db.s}.recipients r SET next_attempt = $8, leased_by = $9, lease_until = $8
       FROM pos p JOIN chosen c ON c.message_id = p.message_id AND c.domain = p.domain
       WHERE r.id = p.id
       -- p.leased_by is the owner before this lease: set while due means its lease ran out.
       RETURNING r.id, r.message_id, r.domain, r.address, r.args, r.attempts, c.first, p.leased_by AS prev_owner
     ),
     jobs AS (
       SELECT message_id, domain, min(first) AS first, (count(*) FILTER (WHERE prev_owner IS NOT NULL))::int AS taken_over,
              json_agg(json_build_object('rowId', id, 'address', address, 'attempts', attempts, 'args', args) ORDER BY id) AS recipients
       FROM leased GROUP BY message_id, domain
     ),
     next AS (
       -- The statement sees the rows as they were before its lease: leased rows count at the lease's expiry.
       SELECT least(
         (SELECT min(r.next_attempt) FROM ${db.s}.recipients r
          WHERE r.${PENDING} AND NOT EXISTS (SELECT 1 FROM leased l WHERE l.id = r.id)
            AND NOT EXISTS (SELECT 1 FROM ${db.s}.messages h WHERE h.id = r.message_id AND h.held_at IS NOT NULL)),
         (SELECT $8::bigint WHERE EXISTS (SELECT 1 FROM leased))
       ) AS next_due
     )
     SELECT n.next_due, m.*, j.domain, j.taken_over, j.recipients
     FROM next n LEFT JOIN (jobs j JOIN ${db.s}.messages m ON m.id = j.message_id) ON true
     ORDER BY j.first`,
    values: [
      o.now, full, Math.min(Math.max(o.limit, 0) * 8, 5000),
      domains, domains.map((d) => o.inFlight[d] ?? 0), o.perDomain, Math.max(o.limit, 0),
      o.now + o.leaseMs, db.nodeId,
    ],
  })
  const jobs: Job[] = rows.filter((row) => row.domain !== null).map((row) => ({
    domain: row.domain!,
    message: toMessage(row),
    recipients: row.recipients.map((r) => ({ rowId: r.rowId, address: r.address, attempts: r.attempts, args: orUndefined(r.args) })),
  }))
  return { jobs, nextDueAt: orUndefined(rows[0]?.next_due), takenOver: rows.reduce((n, row) => n + (row.taken_over ?? 0), 0) }
}

/**
 * Moves the leases of rows this node still holds (leased to it and pending) to `until`, in one
 * statement: not rows another node took over, nor rows with a result. Locked in id order, as
 * complete and the heartbeat's takeover lock them.
 */
export async function renewLeases(db: PgContext, rowIds: number[], until: number): Promise<void> {
  if (!rowIds.length) return
  await db.query({
    name: `relay-renew-leases-${db.s}`,
    text: `UPDATE ${db.s}.recipients SET next_attempt = $2, lease_until = $2
           WHERE id IN (SELECT id FROM ${db.s}.recipients WHERE id = ANY($1::bigint[]) AND leased_by = $3 AND ${PENDING} ORDER BY id FOR UPDATE)`,
    values: [rowIds, until, db.nodeId],
  })
}
