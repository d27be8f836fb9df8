// Breaks the long lines of a received message after the data hook (core/smtp/accept.ts): the hook
// judged the sender's signatures on the lines as they were signed; what is signed, queued and sent
// has no line over 998 octets (RFC 5321 §4.5.3.1.6).
import type { Readable } from 'node:stream'
import type { Spool } from '../queue/spool.js'
import { readMessage, type ReceivedData } from './data.js'

/**
 * Breaks the lines over 998 octets of a message read with `wrap: false` (its header fields folded,
 * its body lines broken, as readMessage does), reading it as it stands: `data` is rewritten, its
 * body inline or in a new spool file. Unlimited header limits: they were checked at intake.
 */
export async function wrapLongLines(data: ReceivedData, readAsItStands: () => Readable, spool: Spool, id: string): Promise<void> {
  const unlimited = { maxBytes: Infinity, maxLines: Infinity, maxFieldLines: Infinity }
  const wrapped = await readMessage(readAsItStands(), { spool, id: `${id}.wrapped`, lineEndings: 'normalize', headerLimits: unlimited })
  if ('file' in wrapped.body) await wrapped.body.file.flushPending()
  if ('file' in data.body) await data.body.file.discard()
  data.headers = wrapped.headers
  data.body = wrapped.body
  data.bodySize = wrapped.bodySize
  data.longLines = false
}
