// The attempt log as the dashboard's recent events read it: every delivery attempt, newest first,
// from every node. Attempts of messages still queued are their history (`show`); those of messages
// that left the queue are kept ATTEMPT_LOG_MS (pruned with the reputation data).
import type { RecentAttempt } from '../../hooks/operator.js'
import type { BounceCategory } from '../../hooks/types.js'
import { orUndefined, type PgContext } from './sql.js'

/** How long attempts of messages no longer queued are kept (at most the queue's retention). */
export const ATTEMPT_LOG_MS = 86_400_000

/** Newest first; `before`: only attempts made before this time (epoch ms). */
export async function recentAttempts(db: PgContext, opts: { limit: number; before?: number }): Promise<RecentAttempt[]> {
  // Attempts written before migration 3 carry no envelope: taken from their recipient (still queued).
  const { rows } = await db.query<{
    at: number; queue_id: string | null; sender: string | null; recipient: string | null; state: RecentAttempt['state']
    response: string; remote_host: string | null; category: BounceCategory | null
  }>(
    `SELECT a.at, coalesce(a.message_id, r.message_id) AS queue_id, coalesce(a.sender, m.sender) AS sender,
            coalesce(a.recipient, r.address) AS recipient, a.state, a.response, a.remote_host, a.category
     FROM ${db.s}.attempts a
     LEFT JOIN ${db.s}.recipients r ON a.message_id IS NULL AND r.id = a.recipient_id
     LEFT JOIN ${db.s}.messages m ON a.sender IS NULL AND m.id = r.message_id
     WHERE a.at < $2 ORDER BY a.at DESC, a.id DESC LIMIT $1`,
    [Math.max(0, Math.floor(opts.limit)), opts.before ?? Number.MAX_SAFE_INTEGER],
  )
  return rows.map((r) => ({
    at: r.at,
    queueId: r.queue_id ?? '',
    sender: r.sender ?? '',
    recipient: r.recipient ?? '',
    state: r.state,
    response: r.response,
    remoteHost: orUndefined(r.remote_host),
    category: orUndefined(r.category),
  }))
}

/** Drops attempts older than the log keeps whose recipient left the queue (theirs stay with them). */
export async function pruneAttempts(db: PgContext, now: number, retention: number): Promise<void> {
  await db.query(
    `DELETE FROM ${db.s}.attempts a WHERE a.at < $1 AND NOT EXISTS (SELECT 1 FROM ${db.s}.recipients r WHERE r.id = a.recipient_id)`,
    [now - Math.min(retention, ATTEMPT_LOG_MS)],
  )
}
