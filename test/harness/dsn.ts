// Reading DSNs and waiting on the queue, for the tests of one DSN per message.
import crypto from 'node:crypto'
import { expect } from 'vitest'
import type { ReceivedMessage } from './smtp-receiver.js'
import type { RelayProcess } from './relay.js'
import { connectRaw, dotStuff } from './smtp-client.js'

/** One message over SMTP (each command must get its 2xx/3xx; `rcptArgs` after each RCPT, e.g. NOTIFY=SUCCESS); its queue id. */
export async function submit(relay: RelayProcess, from: string, to: string[], subject: string, rcptArgs = ''): Promise<string> {
  const { client } = await connectRaw(relay.port)
  try {
    await client.command('EHLO client.test')
    expect(await client.command(`MAIL FROM:<${from}>`)).toMatch(/^250 /)
    for (const t of to) expect(await client.command(`RCPT TO:<${t}>${rcptArgs ? ` ${rcptArgs}` : ''}`)).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const end = client.read(10_000)
    client.send(dotStuff(`From: <${from}>\r\nTo: <${to[0]}>\r\nSubject: ${subject}\r\nMessage-ID: <${crypto.randomUUID()}@sender.test>\r\n\r\nHello.\r\n`))
    const reply = await end
    expect(reply).toMatch(/^250 /)
    await client.command('QUIT', 1000).catch(() => undefined)
    return /queued as (\w+)/.exec(reply)![1]!
  } finally {
    client.close()
  }
}

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
    const queue = await relay.listQueue()
    if (check(queue)) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(queue)}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}
