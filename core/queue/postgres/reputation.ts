// Reputation in PostgreSQL: hourly counters per sending and destination domain, feedback-loop
// complaints matched against the sent log, and pruning both.
import type { Complaint, ComplaintResult, StatsRow } from '../types.js'
import { bareMessageId, domainOf, HOUR, type PgContext } from './sql.js'

export async function stats(db: PgContext, since: number): Promise<StatsRow[]> {
  const { rows } = await db.query<{ hour: number; sender_domain: string; dest_domain: string; outcome: StatsRow['outcome']; category: StatsRow['category']; count: number }>(
    `SELECT hour, sender_domain, dest_domain, outcome, category, count FROM ${db.s}.stats WHERE hour >= $1
     ORDER BY hour, sender_domain, dest_domain, outcome, category`,
    [since],
  )
  return rows.map((r) => ({ hour: r.hour, senderDomain: r.sender_domain, destDomain: r.dest_domain, outcome: r.outcome, category: r.category, count: r.count }))
}

export async function recordComplaint(db: PgContext, complaint: Complaint, retention: number): Promise<ComplaintResult> {
  const since = complaint.receivedAt - retention
  type Sent = { queue_id: string; sender: string; sender_domain: string }
  const find = async (where: string, value: unknown): Promise<Sent | undefined> =>
    (await db.query<Sent>(`SELECT queue_id, sender, sender_domain FROM ${db.s}.sent_log WHERE ${where} AND sent_at >= $2 ORDER BY sent_at DESC LIMIT 1`, [value, since])).rows[0]
  let sent: Sent | undefined
  if (complaint.queueIds?.length) sent = await find(`queue_id = ANY($1::text[])`, complaint.queueIds)
  if (!sent && complaint.messageId) sent = await find(`message_id = $1`, bareMessageId(complaint.messageId))
  if (!sent && complaint.originalMailFrom) sent = await find(`lower(sender) = $1`, complaint.originalMailFrom.toLowerCase())
  const senderDomain = sent ? sent.sender_domain : domainOf(complaint.originalMailFrom)
  // Nothing to count against when no sending domain can be told.
  if (senderDomain) await db.query(
    `INSERT INTO ${db.s}.stats AS st (hour, sender_domain, dest_domain, outcome, category, count) VALUES ($1, $2, $3, 'complaint', '', 1)
     ON CONFLICT (hour, sender_domain, dest_domain, outcome, category) DO UPDATE SET count = st.count + 1`,
    [Math.floor(complaint.receivedAt / HOUR) * HOUR, senderDomain, domainOf(complaint.originalRcptTo)],
  )
  return { matched: !!sent, queueId: sent?.queue_id, sender: sent?.sender, senderDomain }
}

/** Drops counters and sent-log entries older than `retention` (indexed deletes). */
export async function pruneOld(db: PgContext, now: number, retention: number): Promise<void> {
  const cut = now - retention
  await Promise.all([
    db.query(`DELETE FROM ${db.s}.sent_log WHERE sent_at < $1`, [cut]),
    db.query(`DELETE FROM ${db.s}.stats WHERE hour < $1`, [Math.floor(cut / HOUR) * HOUR]),
  ])
}
