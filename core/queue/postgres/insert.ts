// Writing new messages: many messages and all their recipients in one statement (a batch of
// enqueues, or the bounces of a batch of completes).
import type pg from 'pg'
import type { NewMessage } from '../types.js'
import { writeBufferChunks } from './body.js'
import { INLINE_MAX, json, type Db } from './sql.js'

export interface NewRow {
  message: NewMessage
  /** Recipients leased to `nodeId` until then (delivery from memory). */
  leaseUntil?: number
  /** The body when it goes in the row; null when it goes to body_chunks. */
  inline: Buffer | null
  /** Set for a body in body_chunks (0 until its chunks are written). */
  bodySize: number | null
  /** The JSON columns, serialised up front. */
  json: { senderArgs: string | null; meta: string; rcptArgs: (string | null)[] }
}

/**
 * A message as it will be written. Made before it joins a batch, so a message that cannot be
 * serialised fails its own caller, not the batch.
 */
export function newRow(message: NewMessage, leaseUntil: number | undefined, inline: Buffer | null, bodySize: number | null): NewRow {
  const rowJson = { senderArgs: json(message.senderArgs), meta: JSON.stringify(message.meta), rcptArgs: message.recipients.map((r) => json(r.args)) }
  return { message, leaseUntil, inline, bodySize, json: rowJson }
}

/**
 * Inserts the messages and their recipients in one statement; gives each message's recipient row
 * ids, in the order of its recipients.
 */
export async function insertMessages(db: Db, s: string, nodeId: string, rows: NewRow[]): Promise<number[][]> {
  const rcpts = rows.flatMap((r) => r.message.recipients.map((rcpt, i) => ({ row: r, rcpt, args: r.json.rcptArgs[i] ?? null })))
  const { rows: inserted } = await db.query<{ id: number; message_id: string }>({
    name: `relay-insert-${s}`,
    text: `WITH m AS (
         INSERT INTO ${s}.messages (id, sender, sender_args, message_id, size, headers, body, body_size, received_at, expires_at, meta, delay_notified_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::bigint[], $6::bytea[], $7::bytea[], $8::bigint[],
                              $9::bigint[], $10::bigint[], $11::jsonb[], $12::bigint[])
       )
       INSERT INTO ${s}.recipients (message_id, address, domain, args, state, next_attempt, leased_by, lease_until, updated_at)
       SELECT t.message_id, t.address, t.domain, t.args, 'queued', t.next_attempt, t.leased_by, t.lease_until, t.updated_at
       FROM unnest($13::text[], $14::text[], $15::text[], $16::jsonb[], $17::bigint[], $18::text[], $19::bigint[], $20::bigint[])
         WITH ORDINALITY AS t(message_id, address, domain, args, next_attempt, leased_by, lease_until, updated_at, n)
       ORDER BY t.n
       RETURNING id, message_id`,
    values: [
      rows.map((r) => r.message.id), rows.map((r) => r.message.sender), rows.map((r) => r.json.senderArgs),
      rows.map((r) => r.message.messageId ?? null), rows.map((r) => r.message.size), rows.map((r) => r.message.headers),
      rows.map((r) => r.inline), rows.map((r) => r.bodySize), rows.map((r) => r.message.receivedAt), rows.map((r) => r.message.expiresAt),
      rows.map((r) => r.json.meta),
      // No delay warning is ever sent for a message from the null sender.
      rows.map((r) => (r.message.sender === '' ? 0 : null)),
      rcpts.map((x) => x.row.message.id), rcpts.map((x) => x.rcpt.address), rcpts.map((x) => x.rcpt.domain), rcpts.map((x) => x.args),
      rcpts.map((x) => x.row.leaseUntil ?? x.row.message.receivedAt), rcpts.map((x) => (x.row.leaseUntil ? nodeId : null)),
      rcpts.map((x) => x.row.leaseUntil ?? null), rcpts.map((x) => x.row.message.receivedAt),
    ],
  })
  // Identity values are drawn in the order the rows are inserted (ORDER BY t.n).
  const byMessage = new Map<string, number[]>(rows.map((r) => [r.message.id, []]))
  for (const r of inserted) byMessage.get(r.message_id)!.push(r.id)
  return rows.map((r) => byMessage.get(r.message.id)!.sort((a, b) => a - b))
}

/** Messages generated here (bounces, delay warnings) inside a transaction: inline bodies, chunked when large. */
export async function insertGenerated(c: pg.PoolClient, s: string, nodeId: string, messages: NewMessage[]): Promise<void> {
  const rows: NewRow[] = []
  const chunked: NewMessage[] = []
  for (const m of messages) {
    if (!('inline' in m.body)) throw new Error('queue: generated messages carry their body inline')
    if (m.body.inline.length <= INLINE_MAX) rows.push(newRow(m, undefined, m.body.inline, null))
    else {
      rows.push(newRow(m, undefined, null, m.body.inline.length))
      chunked.push(m)
    }
  }
  if (!rows.length) return
  await insertMessages(c, s, nodeId, rows)
  for (const m of chunked) await writeBufferChunks(c, s, m.id, (m.body as { inline: Buffer }).inline)
}
