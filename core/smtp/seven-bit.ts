// Converts a received message to 7-bit before it is queued, for plugins that must see (and sign)
// the form that will travel: the dkim-sign plugin asks for it, so that a next hop without 8BITMIME
// gets the very bytes that were signed (delivery then finds nothing left to convert).
import type { Readable } from 'node:stream'
import { scan8bit, sevenBitStream } from '../mail/downgrade.js'
import type { Spool, SpoolFile } from '../queue/spool.js'
import { INLINE_BODY_LIMIT, type ReceivedData } from './data.js'

const SEPARATOR = Buffer.from('\r\n\r\n')

/**
 * Rewrites `data` (its top-level header fields and its body, inline or in a new spool file) with
 * every 8-bit MIME part converted to quoted-printable or base64. `readMessage` reads `data` as it
 * stands. Returns false, changing nothing, when there is no 8-bit content or it cannot be
 * converted (8-bit header fields).
 */
export async function convertReceivedTo7bit(data: ReceivedData, readMessage: () => Readable, spool: Spool, id: string): Promise<boolean> {
  const scan = await scan8bit(readMessage())
  if (!scan.eightBit || scan.unconvertible) return false
  let head: Buffer | undefined = Buffer.alloc(0)
  let inline: Buffer[] = []
  let size = 0
  let file: SpoolFile | undefined
  const addBody = async (b: Buffer) => {
    if (!b.length) return
    size += b.length
    if (file) return file.write(b)
    inline.push(b)
    if (size > INLINE_BODY_LIMIT) {
      file = await spool.create(`${id}.7bit`)
      for (const c of inline) await file.write(c)
      inline = []
    }
  }
  try {
    for await (const chunk of sevenBitStream(readMessage(), scan) as AsyncIterable<Buffer>) {
      if (!head) {
        await addBody(chunk)
        continue
      }
      head = Buffer.concat([head, chunk])
      const end = head.indexOf(SEPARATOR)
      if (end < 0) continue
      // The stored body starts with the empty line that ends the header section.
      await addBody(head.subarray(end + 2))
      head = undefined
    }
    if (head) await addBody(head) // no header section at all: cannot happen after readMessage's header
    if (file) await file.flushPending()
  } catch (err) {
    await (file as SpoolFile | undefined)?.discard()
    throw err
  }
  // The top-level entity's own header: the only header block of the message that changes.
  const top = scan.convert.get(0)
  if (top === 'quoted-printable' || top === 'base64') data.headers.set('Content-Transfer-Encoding', top)
  else if (scan.containers.has(0) && /^(8bit|binary)$/i.test(data.headers.get('Content-Transfer-Encoding') ?? '')) data.headers.set('Content-Transfer-Encoding', '7bit')
  if ('file' in data.body) await data.body.file.discard()
  data.body = file ? { file } : { inline: Buffer.concat(inline) }
  data.bodySize = size
  return true
}
