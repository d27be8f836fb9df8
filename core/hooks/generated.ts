// The `generated` hook: a message the relay wrote itself (a DSN: a bounce, a delay warning, a
// success report, an operator's bounce) goes through the plugins that have this hook before it is
// queued, so that a signing plugin (dkim-sign) signs it as it signs submitted mail. Not the `queue`
// hook: policy plugins there (rate limits, feedback addresses) would count or refuse it. Nothing
// here refuses it either: a verdict other than accept, a hook that throws or times out, leaves the
// message as the relay built it (queued all the same, with a log line), as Postfix queues a bounce
// whatever a milter says.
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import type { Logger } from 'pino'
import { scan8bit, sevenBitStream } from '../mail/downgrade.js'
import { MessageHeaders } from '../mail/headers.js'
import type { NewMessage } from '../queue/types.js'
import type { HookBus } from './bus.js'

/** Runs the `generated` hook on `m` (its body inline); the message to queue: changed, or `m` itself. */
export async function runGenerated(bus: Pick<HookBus, 'has' | 'run'> | undefined, m: NewMessage, log: Pick<Logger, 'error' | 'warn'>): Promise<NewMessage> {
  if (!bus?.has('generated') || !('inline' in m.body)) return m
  const headers = MessageHeaders.parse(m.headers.toString('latin1'))
  let body = m.body.inline
  const readMessage = () => Readable.from([headers.toBuffer(), body], { objectMode: false })
  /** As the queue hook's: the 8-bit MIME parts re-encoded, the top-level Content-Transfer-Encoding with them. */
  const convertTo7bit = async () => {
    const scan = await scan8bit(readMessage())
    if (!scan.eightBit || scan.unconvertible) return false
    const all = await buffer(sevenBitStream(readMessage(), scan))
    body = all.subarray(all.indexOf('\r\n\r\n') + 2)
    const top = scan.convert.get(0)
    if (top === 'quoted-printable' || top === 'base64') headers.set('Content-Transfer-Encoding', top)
    else if (scan.containers.has(0) && /^(8bit|binary)$/i.test(headers.get('Content-Transfer-Encoding') ?? '')) headers.set('Content-Transfer-Encoding', '7bit')
    return true
  }
  const recipients = m.recipients.map((r) => ({ address: r.address, args: r.args ?? {} }))
  const about = { queueId: m.id, dsnFor: m.meta.dsnFor }
  try {
    const envelope = { sender: { address: m.sender, args: m.senderArgs ?? {} }, recipients }
    const d = await bus.run('generated', { kind: 'dsn', envelope, headers, size: m.headers.length + body.length, queueId: m.id, dsnFor: m.meta.dsnFor, readMessage, convertTo7bit })
    if (d && d.verdict.action !== 'accept') {
      log.warn({ ...about, plugin: d.plugin, verdict: d.verdict.action }, `the relay's own message is queued as built, without the changes of the generated hook (plugin ${d.plugin} answered ${d.verdict.action})`)
      return m
    }
  } catch (err) {
    log.error({ err, ...about }, "the relay's own message is queued as built: the generated hook failed")
    return m
  }
  const head = headers.toBuffer()
  return { ...m, headers: head, body: { inline: body }, size: head.length + body.length, messageId: headers.get('Message-ID') }
}
