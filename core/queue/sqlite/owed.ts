// DSNs owed per message (core/delivery/dsn.ts has the design): a recipient's `dsn` column marks a
// report owed for its final result, written by complete with that result; the message stays until
// the one DSN for every marked recipient is queued (sendOwedDsn clears the marks in the same write).
import type { NewMessage, OwedDsn, OwedReport } from '../types.js'
import { deleteMessage, enqueue } from './delivery.js'
import { parse, PENDING, toMessage, WAITING, type MessageRow, type Sqlite } from './sql.js'

export function owedDsn(q: Sqlite, queueId: string, now: number): OwedReport | undefined {
  const m = q.stmt(`SELECT * FROM messages m WHERE m.id = ? AND NOT ${WAITING}`).get(queueId, now) as MessageRow | undefined
  if (!m) return undefined
  const rows = q.stmt(`SELECT id, address, args, last_response, remote_host, dsn FROM recipients WHERE message_id = ? AND dsn IS NOT NULL ORDER BY id`).all(queueId) as {
    id: number; address: string; args: string | null; last_response: string | null; remote_host: string | null; dsn: string
  }[]
  if (!rows.length) return undefined
  return {
    message: toMessage(m),
    recipients: rows.map((r) => ({ rowId: r.id, address: r.address, args: parse(r.args), response: r.last_response ?? '', remoteHost: r.remote_host ?? undefined, dsn: JSON.parse(r.dsn) as OwedDsn })),
  }
}

/** Oldest first: a backlog larger than `limit` is worked through, none of it left behind for good. */
export function owedDsnMessages(q: Sqlite, now: number, limit: number): string[] {
  const rows = q.stmt(`SELECT m.id FROM messages m WHERE m.id IN (SELECT DISTINCT message_id FROM recipients WHERE dsn IS NOT NULL) AND NOT ${WAITING} ORDER BY m.received_at, m.id LIMIT ?`).all(now, limit) as { id: string }[]
  return rows.map((r) => r.id)
}

/** Returns whether the marks were cleared (and the DSN queued), and the body file to remove if the message left the queue. */
export function sendOwedDsn(q: Sqlite, queueId: string, rowIds: number[], dsn: NewMessage | undefined): { sent: boolean; bodyFile?: string } {
  const ids = JSON.stringify(rowIds)
  const marked = q.stmt(`SELECT COUNT(*) AS n FROM recipients WHERE message_id = ? AND id IN (SELECT value FROM json_each(?)) AND dsn IS NOT NULL`).get(queueId, ids) as { n: number }
  if (marked.n !== rowIds.length) return { sent: false }
  q.stmt(`UPDATE recipients SET dsn = NULL WHERE message_id = ? AND id IN (SELECT value FROM json_each(?))`).run(queueId, ids)
  if (dsn) enqueue(q, dsn)
  const left = q.stmt(`SELECT COUNT(*) AS n FROM recipients WHERE message_id = ? AND (${PENDING} OR dsn IS NOT NULL)`).get(queueId) as { n: number }
  if (left.n > 0) return { sent: true }
  const m = q.stmt(`SELECT body_file FROM messages WHERE id = ?`).get(queueId) as { body_file: string | null } | undefined
  deleteMessage(q, queueId)
  return { sent: true, bodyFile: m?.body_file ?? undefined }
}
