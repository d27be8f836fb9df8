// Cursor paging for GET /api/queue: the cursor is opaque to clients (base64url of the last message's
// receivedAt and id); the queue lists oldest first by (receivedAt, id), so a page goes on after it
// however many messages arrive or leave in between.
import type { QueueEntry, QueueFilter, QueueOperations } from '../../../core/index.js'
import { AdminError } from '../server.js'

export function encodeCursor(m: Pick<QueueEntry, 'receivedAt' | 'id'>): string {
  return Buffer.from(JSON.stringify([m.receivedAt, m.id])).toString('base64url')
}

/** The position a cursor names; a 400 for anything this API did not hand out. */
export function decodeCursor(cursor: string): { receivedAt: number; id: string } {
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    value = undefined
  }
  if (!Array.isArray(value) || value.length !== 2 || !Number.isInteger(value[0]) || typeof value[1] !== 'string') {
    throw new AdminError(400, "cursor: not a cursor this API handed out (pass a page's nextCursor as it is)")
  }
  return { receivedAt: value[0] as number, id: value[1] as string }
}

/** One page: with a limit, one message more is read to tell whether another page follows. */
export async function queuePage(q: QueueOperations, filter: QueueFilter): Promise<{ messages: QueueEntry[]; nextCursor?: string }> {
  if (filter.limit === undefined) return { messages: await q.list(filter) }
  const messages = await q.list({ ...filter, limit: filter.limit + 1 })
  if (messages.length <= filter.limit) return { messages }
  messages.length = filter.limit
  return { messages, nextCursor: encodeCursor(messages[messages.length - 1]!) }
}
