// Moved to testing/smtp-client.ts (exported to plugin authors as `relay-mta/testing`); kept so existing tests import it unchanged.
import { connectRaw } from '../../testing/smtp-client.js'
export * from '../../testing/smtp-client.js'

/** The relay's reply to `RCPT TO:<to>` after EHLO and MAIL FROM:<a@sender.test>, on a connection of its own. */
export async function rcptReply(port: number, to: string, opts: { host?: string; localAddress?: string } = {}): Promise<string> {
  const { client } = await connectRaw(port, opts.host ?? '127.0.0.1', undefined, undefined, opts.localAddress)
  try {
    await client.command('EHLO client.test')
    await client.command('MAIL FROM:<a@sender.test>')
    return await client.command(`RCPT TO:<${to}>`)
  } finally {
    client.close()
  }
}
