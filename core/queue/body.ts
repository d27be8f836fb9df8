// A queued message's body as a stream, from where the SMTP side left it: in memory or a spool file.
import fs from 'node:fs'
import { Readable } from 'node:stream'
import type { QueuedMessage } from './types.js'

export function openLocalBody(message: Pick<QueuedMessage, 'id' | 'body'>): Readable {
  const { body } = message
  // An array: Readable.from(buffer) would yield the buffer byte by byte.
  if ('inline' in body) return Readable.from([body.inline], { objectMode: false })
  if ('file' in body) return fs.createReadStream(body.file)
  throw new Error(`message ${message.id}: a 'stored' body belongs to the PostgreSQL queue; the SQLite queue keeps bodies inline or in spool files`)
}
