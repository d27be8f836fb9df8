// DSNs owed per message (core/delivery/dsn.ts has the design): a recipient's `dsn` column marks a
// report owed for its final result, written by complete with that result; the message stays until
// the one DSN for every marked recipient is queued (sendOwedDsn clears the marks in the same
// transaction, under the message's lock, as complete takes it).
import type { NewMessage, OwedDsn, OwedReport } from '../types.js'
import { insertGenerated } from './insert.js'
import { orUndefined, owed, PENDING, toMessage, waiting, type MessageRow, type PgContext } from './sql.js'

export async function owedDsn(db: PgContext, queueId: string, now: number): Promise<OwedReport | undefined> {
  const { rows } = await db.query<MessageRow & { owed: { id: number; address: string; args: Record<string, string | boolean> | null; last_response: string | null; remote_host: string | null; dsn: OwedDsn }[] | null }>(
    `SELECT m.id, m.sender, m.sender_args, m.message_id, m.size, m.headers, m.body, m.body_size, m.received_at, m.expires_at, m.meta, m.held_at,
       (SELECT json_agg(json_build_object('id', r.id, 'address', r.address, 'args', r.args, 'last_response', r.last_response,
                                          'remote_host', r.remote_host, 'dsn', r.dsn) ORDER BY r.id)
        FROM ${db.s}.recipients r WHERE r.message_id = m.id AND r.dsn IS NOT NULL) AS owed
     FROM ${db.s}.messages m WHERE m.id = $1 AND NOT ${waiting(db.s, '$2')}`,
    [queueId, now],
  )
  const m = rows[0]
  if (!m?.owed?.length) return undefined
  return {
    message: toMessage(m),
    recipients: m.owed.map((r) => ({ rowId: r.id, address: r.address, args: orUndefined(r.args), response: r.last_response ?? '', remoteHost: orUndefined(r.remote_host), dsn: r.dsn })),
  }
}

/** Oldest first: a backlog larger than `limit` is worked through, none of it left behind for good. */
export async function owedDsnMessages(db: PgContext, now: number, limit: number): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT m.id FROM ${db.s}.messages m WHERE m.id IN (SELECT DISTINCT message_id FROM ${db.s}.recipients WHERE dsn IS NOT NULL)
       AND ${owed(db.s)} AND NOT ${waiting(db.s, '$1')} ORDER BY m.received_at, m.id LIMIT $2`,
    [now, limit],
  )
  return rows.map((r) => r.id)
}

export async function sendOwedDsn(db: PgContext, queueId: string, rowIds: number[], dsn?: NewMessage): Promise<boolean> {
  return db.tx(async (c) => {
    // The message's lock first, as complete takes it: no complete of it runs meanwhile.
    const { rows: locked } = await c.query(`SELECT id FROM ${db.s}.messages WHERE id = $1 FOR UPDATE`, [queueId])
    if (!locked.length) return false
    const { rows: marked } = await c.query(`SELECT id FROM ${db.s}.recipients WHERE message_id = $1 AND id = ANY($2::bigint[]) AND dsn IS NOT NULL`, [queueId, rowIds])
    // Sent already (another node, or an earlier pass), in part or in full: nothing is written.
    if (marked.length !== rowIds.length) return false
    await c.query(`UPDATE ${db.s}.recipients SET dsn = NULL WHERE message_id = $1 AND id = ANY($2::bigint[])`, [queueId, rowIds])
    if (dsn) await insertGenerated(c, db.s, db.nodeId, [dsn])
    await c.query(
      `DELETE FROM ${db.s}.messages m WHERE id = $1
       AND NOT EXISTS (SELECT 1 FROM ${db.s}.recipients r WHERE r.message_id = m.id AND (r.${PENDING} OR r.dsn IS NOT NULL))`,
      [queueId],
    )
    return true
  })
}
