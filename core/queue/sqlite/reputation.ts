// Reputation in SQLite: hourly counters per sending and destination domain, and feedback-loop
// complaints matched against the sent log.
import type { Complaint, ComplaintResult, StatsRow } from '../types.js'
import { bareMessageId, domainOf, hourOf, type Sqlite } from './sql.js'

/** Adds one to a reputation counter. */
export function count(q: Sqlite, hour: number, senderDomain: string, destDomain: string, outcome: StatsRow['outcome'], category: string): void {
  q.stmt(
    `INSERT INTO stats (hour, sender_domain, dest_domain, outcome, category, count) VALUES (?,?,?,?,?,1)
     ON CONFLICT (hour, sender_domain, dest_domain, outcome, category) DO UPDATE SET count = count + 1`,
  ).run(hour, senderDomain, destDomain, outcome, category)
}

export function stats(q: Sqlite, since: number): StatsRow[] {
  if (q.version < 3) return []
  const rows = q.stmt(`SELECT hour, sender_domain, dest_domain, outcome, category, count FROM stats WHERE hour >= ? ORDER BY hour, sender_domain, dest_domain, outcome, category`).all(
    since,
  ) as { hour: number; sender_domain: string; dest_domain: string; outcome: StatsRow['outcome']; category: StatsRow['category']; count: number }[]
  return rows.map((r) => ({ hour: r.hour, senderDomain: r.sender_domain, destDomain: r.dest_domain, outcome: r.outcome, category: r.category, count: r.count }))
}

/** Matches by queue id, then Message-ID, in the sent log; else counts against Original-Mail-From's domain. */
export function recordComplaint(q: Sqlite, c: Complaint): ComplaintResult {
  type Sent = { queue_id: string; sender: string; sender_domain: string }
  let sent: Sent | undefined
  const byQueueId = q.stmt(`SELECT queue_id, sender, sender_domain FROM sent_log WHERE queue_id = ?`)
  for (const id of c.queueIds ?? []) {
    sent = byQueueId.get(id) as Sent | undefined
    if (sent) break
  }
  const messageId = bareMessageId(c.messageId)
  if (!sent && messageId) {
    sent = q.stmt(`SELECT queue_id, sender, sender_domain FROM sent_log WHERE message_id = ? ORDER BY received_at DESC LIMIT 1`).get(messageId) as Sent | undefined
  }
  const result: ComplaintResult = sent
    ? { matched: true, queueId: sent.queue_id, sender: sent.sender, senderDomain: sent.sender_domain }
    : { matched: false, senderDomain: domainOf(c.originalMailFrom) }
  count(q, hourOf(c.receivedAt), result.senderDomain, domainOf(c.originalRcptTo), 'complaint', '')
  return result
}

/** Drops reputation counters and sent-log entries older than the retention (indexed deletes). */
export function prune(q: Sqlite, now: number, retentionMs: number): void {
  if (q.version < 3) return
  const before = now - retentionMs
  q.stmt(`DELETE FROM stats WHERE hour < ?`).run(hourOf(before))
  q.stmt(`DELETE FROM sent_log WHERE received_at < ?`).run(before)
}
