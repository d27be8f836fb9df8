// RFC 5321 §4.5.3.2.6: the wait for the reply to the final dot is delivery.dataDoneTimeout (10
// minutes by default, as Postfix's smtp_data_done_timeout), not commandTimeout: a server that scans
// the message before it answers must not have it sent again while it is still taking it.
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let relay: RelayProcess
let server: net.Server
/** Messages the slow server answered 250 to; the time between the final dot and that reply. */
const taken: { ms: number }[] = []
let dots = 0

beforeAll(async () => {
  // Answers each command at once and the final dot after 2.5 s (a server that scans the message).
  server = net.createServer((s) => {
    s.on('error', () => {})
    let inData = false
    let buf = ''
    s.write('220 slow.test ESMTP\r\n')
    s.on('data', (chunk) => {
      buf += chunk.toString('latin1')
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n')
          if (end < 0) return
          buf = buf.slice(end + 5)
          inData = false
          dots++
          const at = Date.now()
          setTimeout(() => {
            if (s.destroyed) return
            taken.push({ ms: Date.now() - at })
            s.write('250 2.0.0 taken\r\n')
          }, 2500)
          continue
        }
        const nl = buf.indexOf('\r\n')
        if (nl < 0) return
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 2)
        if (/^DATA/i.test(line)) {
          inData = true
          s.write('354 go ahead\r\n')
        } else if (/^QUIT/i.test(line)) s.end('221 bye\r\n')
        else s.write(/^EHLO/i.test(line) ? '250 slow.test\r\n' : '250 ok\r\n')
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.2', resolve))
  dns = await startDns({ 'slow.test': { A: ['127.0.0.2'] } })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      // Every command must be answered within 1 s; the final dot within 5 s.
      delivery: { port: (server.address() as net.AddressInfo).port, commandTimeout: '1s', dataDoneTimeout: '5s', retry: { base: '1s', factor: 1, max: '1s' }, mtaSts: { enabled: false } },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  server?.close()
  await dns?.close()
})

describe('the reply to the final dot', () => {
  it('is waited for longer than commandTimeout: a server answering after 2.5 s gets the message once, not again at each retry', async () => {
    const r = await sendMail(relay.port, { from: 'a@sender.test', to: ['u@slow.test'], data: 'Subject: scanned slowly\r\n\r\nhello\r\n' })
    expect(r.lastReply).toMatch(/^250 /)
    const delivered = await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === 'u@slow.test', 15_000)
    expect(delivered.response).toMatch(/^250 2\.0\.0 taken/)
    await new Promise((resolve) => setTimeout(resolve, 1500))
    expect(dots).toBe(1)
    expect(taken).toHaveLength(1)
    expect(relay.logs.filter((l) => l.event === 'deferred' && l.recipient === 'u@slow.test')).toEqual([])
    // The connection is reused with commandTimeout again: a second message goes the same way.
    await sendMail(relay.port, { from: 'a@sender.test', to: ['v@slow.test'], data: 'Subject: second\r\n\r\nhello\r\n' })
    await eventually(() => relay.logs.some((l) => l.event === 'delivered' && l.recipient === 'v@slow.test'), 15_000, 'second delivered')
    expect(dots).toBe(2)
  }, 40_000)

  it('is dataDoneTimeout also when that is shorter than commandTimeout', async () => {
    const short = await startRelay({
      config: {
        dns: { servers: [dns.server], timeout: '1s' },
        delivery: { port: (server.address() as net.AddressInfo).port, commandTimeout: '8s', dataDoneTimeout: '1s', retry: { base: '1h', factor: 1, max: '1h' }, mtaSts: { enabled: false } },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
    try {
      await sendMail(short.port, { from: 'a@sender.test', to: ['w@slow.test'], data: 'Subject: short wait\r\n\r\nhello\r\n' })
      const deferred = await short.waitForLog((l) => l.event === 'deferred' && l.recipient === 'w@slow.test', 15_000)
      expect(deferred.response).toMatch(/ETIMEDOUT|[Tt]imeout/)
      expect(deferred.durationMs as number).toBeLessThan(2500)
    } finally {
      await short.stop()
    }
  }, 40_000)
})
