// The attempt log as the dashboard's recent events read it: every delivery attempt, newest first.
// Attempts of messages still queued are their history (`show`); those of messages that left the
// queue are kept ATTEMPT_LOG_MS (pruned with the reputation data), so a restart blanks nothing.
import type { RecentAttempt } from '../../hooks/operator.js'
import type { BounceCategory } from '../../hooks/types.js'
import type { Sqlite } from './sql.js'

/** How long attempts of messages no longer queued are kept (at most the queue's retention). */
export const ATTEMPT_LOG_MS = 86_400_000

interface Row {
  at: number
  queue_id: string
  sender: string | null
  recipient: string | null
  state: RecentAttempt['state']
  response: string
  remote_host: string | null
  category: BounceCategory | null
}

/** Newest first; `before`: only attempts made before this time (epoch ms). */
export function recentAttempts(q: Sqlite, opts: { limit: number; before?: number }): RecentAttempt[] {
  if (q.version < 3) return []
  const limit = Math.max(0, Math.floor(opts.limit))
  // Attempts written before schema 4 carry no sender or recipient: taken from their message, if still queued.
  const own = q.version >= 4
  const rows = q.stmt(
    `SELECT a.at, a.message_id AS queue_id, ${own ? 'coalesce(a.sender, m.sender)' : 'm.sender'} AS sender,
            ${own ? 'coalesce(a.recipient, r.address)' : 'r.address'} AS recipient, a.state, a.response, a.remote_host, a.category
     FROM attempts a
     LEFT JOIN recipients r ON r.id = a.recipient_id AND r.message_id = a.message_id
     LEFT JOIN messages m ON m.id = a.message_id
     WHERE a.at < ? ORDER BY a.at DESC, a.id DESC LIMIT ?`,
  ).all(opts.before ?? Number.MAX_SAFE_INTEGER, limit) as Row[]
  return rows.map((r) => ({
    at: r.at,
    queueId: r.queue_id,
    sender: r.sender ?? '',
    recipient: r.recipient ?? '',
    state: r.state,
    response: r.response,
    remoteHost: r.remote_host ?? undefined,
    category: r.category ?? undefined,
  }))
}

/** Drops attempts older than the log keeps of messages that left the queue (theirs stay with them). */
export function pruneAttempts(q: Sqlite, now: number, retentionMs: number): void {
  if (q.version < 3) return
  q.stmt(`DELETE FROM attempts WHERE at < ? AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = attempts.message_id)`).run(now - Math.min(retentionMs, ATTEMPT_LOG_MS))
}
