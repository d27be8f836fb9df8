// Idle sessions (issue 16): many open, silent sessions after EHLO cost little, and the paths that
// were made leaner for them (core/smtp/patches.ts 6-8: the socket feeds the command parser without
// Readable#pipe, one idle-timeout listener per socket, maps made at first use; the session time
// limit swept by one timer; plugin notes made at first use) behave as before: a client that
// pipelines far more than the parser buffers without reading is paused and then answered in full
// and in order, the socket idle timeout still closes a silent session, and a trusted client
// relays at once while hundreds of idle sessions are open.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import net from 'node:net'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, sendMail, type RawSmtp } from '../harness/smtp-client.js'
import { startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let mx: TestReceiver
let relay: RelayProcess // relay-acl trusts 127.0.0.1 only; socketTimeout 6s
const clients = new Set<RawSmtp>()
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.0.2' })
  dns = await startDns({ 'idle.test': { A: ['127.0.0.2'] } })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port },
      smtp: { reverseLookup: false, socketTimeout: '6s', trustedNetworks: ['127.0.0.1/32'] },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }]],
    },
  })
})

afterAll(async () => {
  for (const c of clients) c.close()
  await relay?.stop()
  await mx?.close()
  await dns?.close()
})

/** Replies read off a raw socket until `n` final lines came (or `ms` passed). */
function readReplies(socket: net.Socket, n: number, ms: number): Promise<string[]> {
  return new Promise((resolve) => {
    const lines: string[] = []
    let buf = ''
    const finish = () => {
      clearTimeout(timer)
      socket.off('data', onData)
      resolve(lines)
    }
    const timer = setTimeout(finish, ms)
    const onData = (d: Buffer) => {
      buf += d.toString('latin1')
      for (let nl = buf.indexOf('\r\n'); nl >= 0; nl = buf.indexOf('\r\n')) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 2)
        if (line[3] !== '-') lines.push(line)
        if (lines.length >= n) return finish()
      }
    }
    socket.on('data', onData)
  })
}

describe('idle sessions', () => {
  it('3,000 pipelined NOOPs (18 KB) sent before reading anything: all answered, in order, then a message relays', async () => {
    const socket = net.connect({ port: relay.port, host: '127.0.0.1', localAddress: '127.0.0.1' })
    try {
      socket.pause() // nothing read until everything was sent: the relay's replies back up
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
      const noops = 3000
      const tail = ['MAIL FROM:<app@client.test>', 'RCPT TO:<someone@idle.test>', 'DATA']
      socket.write('EHLO client.test\r\n' + 'NOOP\r\n'.repeat(noops) + tail.join('\r\n') + '\r\n')
      await sleep(500)
      socket.resume()
      const replies = await readReplies(socket, 1 + 1 + noops + tail.length, 15_000)
      expect(replies[0]).toMatch(/^220 /)
      expect(replies[1]).toMatch(/^250 /)
      expect(replies.slice(2, 2 + noops).every((r) => r.startsWith('250 '))).toBe(true)
      expect(replies.slice(2 + noops)).toEqual([expect.stringMatching(/^250 /), expect.stringMatching(/^250 /), expect.stringMatching(/^354 /)])
      socket.write('From: app@client.test\r\nTo: someone@idle.test\r\nSubject: after pipelining\r\n\r\nhello\r\n.\r\n')
      expect((await readReplies(socket, 1, 5000))[0]).toMatch(/^250 2\.0\.0 Ok: queued as /)
      const [m] = await mx.waitForMessages(1, 10_000)
      expect(m!.raw.toString()).toContain('Subject: after pipelining')
    } finally {
      socket.destroy()
    }
  })

  it('300 idle sessions from 6 addresses stay open; a trusted client relays at once; the idle ones time out with 421', async () => {
    const held: RawSmtp[] = []
    for (let batch = 0; batch < 6; batch++) {
      const opened = await Promise.all(
        Array.from({ length: 50 }, async (_, k) => {
          const i = batch * 50 + k
          const { client, greeting } = await connectRaw(relay.port, '127.0.0.1', 5000, undefined, `127.0.3.${1 + (i % 6)}`)
          clients.add(client)
          expect(greeting).toMatch(/^220 /)
          expect(await client.command(`EHLO idle${i}.client.test`)).toMatch(/^250/)
          return client
        }),
      )
      held.push(...opened)
    }
    const started = Date.now()
    const r = await sendMail(relay.port, { from: 'app@client.test', to: ['other@idle.test'], data: 'Subject: while idle\r\n\r\nhi\r\n', timeoutMs: 5000 })
    expect(r.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as /)
    expect(Date.now() - started).toBeLessThan(2000)
    await mx.waitForMessages(2, 10_000)
    expect(held.filter((c) => c.isClosed())).toHaveLength(0)
    // socketTimeout 6s: every idle session gets its 421 and is closed.
    const replies = await Promise.all(held.map((c) => c.read(12_000).catch((e: Error) => e.message)))
    expect(replies.filter((x) => /^421 .*Timeout/.test(x))).toHaveLength(300)
    await sleep(200)
    expect(held.filter((c) => !c.isClosed())).toHaveLength(0)
    // Their per-client counts were released: 50 (the default cap) open again from one of them.
    for (let i = 0; i < 50; i++) {
      const { client, greeting } = await connectRaw(relay.port, '127.0.0.1', 5000, undefined, '127.0.3.1')
      clients.add(client)
      expect(greeting, `session ${i + 1}`).toMatch(/^220 /)
    }
  })
})
