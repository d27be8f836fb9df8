// A DNS answer that takes seconds (a slow authoritative server, a cold cache) within dns.timeout is
// waited for. Node's c-ares (1.32 on) shortens its timeout after fast answers: a relay, whose
// lookups are mostly fast, gave up on a 3-second answer after about 2 s with `dns.timeout: '5s'`,
// and deferred the mail (4.4.3).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns, type ZoneEntry } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let rx: TestReceiver
let relay: RelayProcess
const FAST = 16

beforeAll(async () => {
  rx = await startReceiver({ host: '127.0.0.2' })
  const zones: Record<string, ZoneEntry> = {
    'slow.test': { MX: [{ exchange: 'mx.slow.test', priority: 10 }], delayMs: 3000 },
    'mx.slow.test': { A: ['127.0.0.2'] },
  }
  for (let i = 0; i < FAST; i++) {
    zones[`f${i}.test`] = { MX: [{ exchange: `mx.f${i}.test`, priority: 10 }] }
    zones[`mx.f${i}.test`] = { A: ['127.0.0.2'] }
  }
  dns = await startDns(zones)
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '5s' },
      delivery: { port: rx.port, retry: { base: '30s' } },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), rx?.close()])
})

describe('slow DNS answers', () => {
  it('after many fast answers, an MX answer that takes 3 s (dns.timeout 5s) is waited for and the mail delivered in its first attempt', async () => {
    // Fast answers first: MX and A of FAST domains, as a relay's lookups mostly are.
    for (let i = 0; i < FAST; i++) await sendMail(relay.port, { from: 'a@sender.test', to: [`u@f${i}.test`], data: `Subject: fast ${i}\r\n\r\nhi\r\n` })
    await rx.waitForMessages(FAST, 20_000)
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@slow.test'], data: 'Subject: slow\r\n\r\nhi\r\n' })
    const delivered = await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === 'u@slow.test', 20_000)
    expect(delivered.recipient).toBe('u@slow.test')
    expect(relay.logs.filter((l) => l.event === 'deferred')).toEqual([])
  }, 60_000)
})
