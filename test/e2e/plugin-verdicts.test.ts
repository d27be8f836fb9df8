// What a client sees when a third-party plugin breaks the hook contract: a verdict with fields of
// the wrong type, one whose fields throw when read, reply text that would overrun an SMTP line,
// a hook that throws, and data/queue hooks that change the envelope they were shown. Each must
// end in a temporary failure naming the plugin in the log (never a 5xx the plugin did not mean,
// never a crash), or have no effect on what is queued. Real relay, real DNS, real receiving MX.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, sendMail } from '../harness/smtp-client.js'
import { ROOT, eventually, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let mx: TestReceiver
let relay: RelayProcess

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.0.2' })
  dns = await startDns({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { A: ['127.0.0.2'] } })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
      plugins: [path.join(ROOT, 'test/fixtures/bad-verdicts.plugin.ts'), path.join(ROOT, 'test/fixtures/deliver-bad-verdict.plugin.ts'), ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), mx?.close()])
})

describe('plugin verdicts that break the contract', () => {
  it('a verdict with a non-string message or a throwing field is a 451 4.3.0 naming the plugin, not a 5xx with the error text', async () => {
    const { client } = await connectRaw(relay.port)
    await client.command('EHLO client.test')
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    for (const local of ['msgnum', 'getter']) expect(await client.command(`RCPT TO:<${local}@dest.test>`)).toBe('451 4.3.0 Temporary local problem, try again later')
    const errors = await eventually(() => {
      const found = relay.logs.filter((l) => l.level === 50 && l.plugin === 'bad-verdicts' && l.hook === 'rcpt')
      return found.length >= 2 ? found : undefined
    }, 5000, 'two error lines naming the plugin')
    for (const e of errors) expect(e.msg).toBe('plugin bad-verdicts returned something that is not a verdict from hook rcpt')
    // The session goes on.
    expect(await client.command('RCPT TO:<bob@dest.test>')).toMatch(/^250 /)
    client.close()
    expect(relay.exited()).toBe(false)
  })

  it('a hook that throws is 451 4.3.0 with the plugin named in the log', async () => {
    const { client } = await connectRaw(relay.port)
    await client.command('EHLO client.test')
    await client.command('MAIL FROM:<alice@sender.test>')
    expect(await client.command('RCPT TO:<throws@dest.test>')).toBe('451 4.3.0 Temporary local problem, try again later')
    const line = await relay.waitForLog((l) => l.msg === 'plugin bad-verdicts failed in hook rcpt', 5000)
    expect(line.level).toBe(50)
    client.close()
  })

  it('reply text from a plugin is cut to fit one SMTP reply line (RFC 5321: 512 octets)', async () => {
    const { client } = await connectRaw(relay.port)
    await client.command('EHLO client.test')
    await client.command('MAIL FROM:<alice@sender.test>')
    const reply = await client.command('RCPT TO:<long@dest.test>')
    expect(reply).toMatch(/^550 5\.7\.1 x+/)
    expect(reply.length + 2).toBeLessThanOrEqual(512)
    client.close()
  })

  it('data and queue hooks that change the envelope or the session they were shown change nothing that is queued', async () => {
    const messageId = `<tamper-${process.pid}@sender.test>`
    const data = `From: alice@sender.test\r\nTo: bob@dest.test\r\nSubject: tamper\r\nMessage-ID: ${messageId}\r\n\r\nHi.\r\n`
    const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data })
    expect(r.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as /)
    const got = await eventually(() => mx.messages.find((m) => m.raw.toString('latin1').includes(messageId)), 10_000, 'delivery')
    expect(got.from).toBe('alice@sender.test')
    expect(got.to).toEqual(['bob@dest.test'])
    const accepted = await relay.waitForLog((l) => l.msg === 'accepted' && l.messageId === messageId, 5000)
    expect(accepted.user).toBeUndefined()
    await new Promise((resolve) => setTimeout(resolve, 1500)) // nothing else goes out for it
    expect(mx.messages.filter((m) => m.raw.toString('latin1').includes(messageId))).toHaveLength(1)
  })

  it('a deliver verdict with a status of the wrong class or text with a line break: the outcome keeps its class and one line', async () => {
    for (const local of ['reject', 'defer']) {
      const data = `From: alice@sender.test\r\nTo: ${local}@dest.test\r\nSubject: deliver ${local}\r\n\r\nHi.\r\n`
      expect((await sendMail(relay.port, { from: '', to: [`${local}@dest.test`], data })).lastReply).toMatch(/^250 /)
    }
    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'reject@dest.test', 10_000)
    expect(bounced.response).toBe('5.0.0 fine X-Injected: yes')
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'defer@dest.test', 10_000)
    expect(deferred.response).toBe('4.0.0 later 550 no')
  })
})

