// Reading DSNs and waiting on the queue, for the tests of one DSN per message.
import type { ReceivedMessage } from './smtp-receiver.js'
import type { RelayProcess } from './relay.js'

/** The per-recipient blocks of a DSN's message/delivery-status part, by Final-Recipient. */
export function dsnBlocks(m: ReceivedMessage): Map<string, string> {
  const t = m.raw.toString('latin1')
  const start = t.indexOf('Content-Type: message/delivery-status')
  const part = t.slice(start, t.indexOf('\r\n--', start))
  const out = new Map<string, string>()
  for (const b of part.split('\r\n\r\n')) {
    const rcpt = /^Final-Recipient: rfc822; (\S+)/m.exec(b)?.[1]
    if (rcpt) out.set(rcpt, b)
  }
  return out
}

/** Polls the queue (a CLI run each) until `check` holds, at most 20 s. */
export async function queueUntil(relay: RelayProcess, check: (q: ReturnType<RelayProcess['queueList']>) => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000
  for (;;) {
    if (check(relay.queueList())) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(relay.queueList())}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}
