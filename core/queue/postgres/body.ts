// Large bodies in PostgreSQL: rows of `body_chunks`, written from the spool file a chunk at a time
// inside the enqueue transaction and read back a chunk per query, so no body is ever whole in memory.
import fsp from 'node:fs/promises'
import { Readable } from 'node:stream'
import type pg from 'pg'

export const CHUNK_SIZE = 256 * 1024

/** Streams `file` into body_chunks (seq 0, 1, …) on `client`, inside the caller's transaction; returns its size. */
export async function writeFileChunks(client: pg.PoolClient, s: string, messageId: string, file: string): Promise<number> {
  const handle = await fsp.open(file, 'r')
  try {
    let size = 0
    const buf = Buffer.allocUnsafe(CHUNK_SIZE)
    for (let seq = 0; ; seq++) {
      // Fill a whole chunk (reads may come back short).
      let filled = 0
      while (filled < CHUNK_SIZE) {
        const { bytesRead } = await handle.read(buf, filled, CHUNK_SIZE - filled, null)
        if (!bytesRead) break
        filled += bytesRead
      }
      if (!filled && seq > 0) break
      await client.query(`INSERT INTO ${s}.body_chunks (message_id, seq, data) VALUES ($1, $2, $3)`, [messageId, seq, buf.subarray(0, filled)])
      size += filled
      if (filled < CHUNK_SIZE) break
    }
    return size
  } finally {
    await handle.close()
  }
}

/** Writes a body held in memory as chunks (for inline bodies too large for one row). */
export async function writeBufferChunks(client: pg.PoolClient, s: string, messageId: string, body: Buffer): Promise<void> {
  for (let seq = 0, at = 0; at < body.length || seq === 0; seq++, at += CHUNK_SIZE) {
    await client.query(`INSERT INTO ${s}.body_chunks (message_id, seq, data) VALUES ($1, $2, $3)`, [messageId, seq, body.subarray(at, at + CHUNK_SIZE)])
  }
}

/**
 * The chunks of a stored body in order, one query per chunk as the reader pulls. A body that ends
 * short of `size` (the message was removed meanwhile) fails the stream rather than send a truncated message.
 */
export function readChunks(pool: pg.Pool, s: string, messageId: string, size: number): Readable {
  return Readable.from(
    (async function* () {
      let read = 0
      for (let seq = 0; ; seq++) {
        const { rows } = await pool.query<{ data: Buffer }>(`SELECT data FROM ${s}.body_chunks WHERE message_id = $1 AND seq = $2`, [messageId, seq])
        const data = rows[0]?.data
        if (!data) break
        read += data.length
        if (data.length) yield data
      }
      if (read !== size) throw new Error(`queue: body of ${messageId} has ${read} of ${size} bytes (removed from the queue?)`)
    })(),
    { objectMode: false },
  )
}
