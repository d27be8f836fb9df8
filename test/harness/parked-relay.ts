// A relay whose mail can be parked in the queue on demand, for the operator tests (admin API, queue
// CLI): park.test (127.0.0.2) answers 451 at RCPT for the addresses in `parked`, sender.test
// (127.0.0.3) takes the DSNs. Retries are an hour apart, so only flush and release make parked work
// due within a test.
import { startDns, type TestDns } from './dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from './smtp-receiver.js'
import { sendMail } from './smtp-client.js'
import { startRelay, type RelayProcess } from './relay.js'

export interface ParkedRelay {
  relay: RelayProcess
  /** park.test's server. */
  rx: TestReceiver
  /** sender.test's server: where DSNs go. */
  senderRx: TestReceiver
  /** Addresses at park.test that get 451 at RCPT. */
  parked: Set<string>
  /**
   * Sends one message to `to` (parked from now on) and resolves with its queue id once its first
   * attempt was deferred: until then its recipient is leased to that attempt, which an operator's
   * bounce or hold in the test would race.
   */
  submit(to: string, from?: string, headers?: string): Promise<string>
  /** Messages park.test accepted for `to`. */
  delivered(to: string): ReceivedMessage[]
  close(): Promise<void>
}

export const messageText = (m: ReceivedMessage) => m.raw.toString('latin1')

/** `admin`: further options of the admin plugin (e.g. `insecureNoToken` when `token` is undefined); false: no admin plugin. */
export async function startParkedRelay(token: string | undefined, admin: Record<string, unknown> | false = {}): Promise<ParkedRelay> {
  const parked = new Set<string>()
  const rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true, reply: { rcpt: ({ address }) => (parked.has(address!) ? { code: 451, message: '4.2.0 parked, try later' } : undefined) } } })
  const senderRx = await startReceiver({ host: '127.0.0.3', port: rx.port, behaviour: { noStartTls: true } })
  const dns: TestDns = await startDns({ 'park.test': { A: ['127.0.0.2'] }, 'sender.test': { A: ['127.0.0.3'] } })
  const relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s', delayWarning: false },
      plugins: [
        ...(admin === false ? [] : [['admin', { host: '127.0.0.1', port: 0, token, ...admin }]]),
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
      ],
    },
  })
  return {
    relay,
    rx,
    senderRx,
    parked,
    async submit(to, from = 'alice@sender.test', headers = '') {
      parked.add(to)
      const r = await sendMail(relay.port, { from, to: [to], data: `From: <${from || 'mailer-daemon@x.test'}>\r\nTo: <${to}>\r\nSubject: parked for ${to}\r\n${headers}\r\nHello.\r\n` })
      const id = /^250 .*queued as (\w+)/.exec(r.lastReply)?.[1]
      if (!id) throw new Error(`not queued: ${r.lastReply}`)
      await relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id, 10_000)
      return id
    },
    delivered: (to) => rx.messages.filter((m) => m.to.includes(to)),
    async close() {
      await relay.stop()
      await Promise.all([dns, rx, senderRx].map((x) => x.close()))
    },
  }
}
