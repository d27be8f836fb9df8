// Delay warnings: messages deferred long whose sender has not been told yet.
import type { DelayCandidate, NewMessage } from '../types.js'
import type { BounceCategory } from '../../hooks/types.js'
import { insertGenerated } from './insert.js'
import { orUndefined, toMessage, type MessageRow, type PgContext } from './sql.js'

export async function delayCandidates(db: PgContext, receivedBefore: number, limit: number): Promise<DelayCandidate[]> {
  const { rows } = await db.query<MessageRow & {
    recipients: { id: number; address: string; args: Record<string, string | boolean> | null; last_response: string | null; remote_host: string | null; category: BounceCategory | null; updated_at: string | number }[]
  }>(
    `SELECT m.id, m.sender, m.sender_args, m.message_id, m.size, m.headers, m.received_at, m.expires_at, m.meta,
       (SELECT json_agg(json_build_object('id', r.id, 'address', r.address, 'args', r.args, 'last_response', r.last_response,
                                          'remote_host', r.remote_host, 'category', r.category, 'updated_at', r.updated_at) ORDER BY r.id)
        FROM ${db.s}.recipients r WHERE r.message_id = m.id AND r.state = 'deferred') AS recipients
     FROM ${db.s}.messages m
     WHERE m.delay_notified_at IS NULL AND m.received_at <= $1
       AND EXISTS (SELECT 1 FROM ${db.s}.recipients r WHERE r.message_id = m.id AND r.state = 'deferred')
     ORDER BY m.received_at LIMIT $2`,
    [receivedBefore, limit],
  )
  return rows.map((m) => {
    const { body: _body, ...message } = toMessage({ ...m, body: null, body_size: null })
    return {
      message,
      recipients: m.recipients.map((r) => ({
        rowId: r.id,
        address: r.address,
        args: orUndefined(r.args),
        lastResponse: orUndefined(r.last_response),
        remoteHost: orUndefined(r.remote_host),
        category: orUndefined(r.category),
        lastAttemptAt: Number(r.updated_at),
      })),
    }
  })
}

export async function markDelayNotified(db: PgContext, queueId: string, dsn?: NewMessage, rowIds: number[] = []): Promise<boolean> {
  return db.tx(async (c) => {
    // The message's lock first, as complete takes it; then its recipients as they are now: one
    // delivered or bounced since the warning was built makes it stale (nothing is written).
    const { rows: locked } = await c.query(`SELECT id FROM ${db.s}.messages WHERE id = $1 AND delay_notified_at IS NULL FOR UPDATE`, [queueId])
    if (!locked.length) return false
    const { rows: still } = await c.query(`SELECT id FROM ${db.s}.recipients WHERE message_id = $1 AND id = ANY($2::bigint[]) AND state = 'deferred'`, [queueId, rowIds])
    if (still.length !== rowIds.length) return false
    const { rowCount } = await c.query(
      `UPDATE ${db.s}.messages SET delay_notified_at = $2 WHERE id = $1 AND delay_notified_at IS NULL`,
      [queueId, Date.now()],
    )
    const marked = (rowCount ?? 0) > 0
    if (marked && dsn) await insertGenerated(c, db.s, db.nodeId, [dsn])
    return marked
  })
}
