// Custom plugins as a user writes them: .ts files outside the relay (test/fixtures/), loaded by
// path from the config through tsx, against the real relay process, real DNS and real SMTP.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, sendMail, type RawSmtp } from '../harness/smtp-client.js'
import { ROOT, eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const fixture = (name: string) => path.join(ROOT, 'test/fixtures', `${name}.plugin.ts`)
const ACL = ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]

let dns: TestDns
let mx: TestReceiver // 127.0.0.2: the MX of dest.test
let smarthost: TestReceiver // 127.0.0.5: where the routing plugin sends mail
const relays: RelayProcess[] = []

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.0.2' })
  smarthost = await startReceiver({ host: '127.0.0.5' })
  dns = await startDns({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.2'] },
  })
})

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
  mx.setBehaviour({})
})

afterAll(async () => {
  await Promise.all([dns?.close(), mx?.close(), smarthost?.close()])
})

async function relayWith(plugins: unknown[], config: Record<string, unknown> = {}): Promise<RelayProcess> {
  const relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
      plugins,
      ...config,
    },
  })
  relays.push(relay)
  return relay
}

let counter = 0
function message(subject: string): { data: string; messageId: string } {
  const messageId = `<plugins-${process.pid}-${++counter}@sender.test>`
  return {
    messageId,
    data: `From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: ${subject}\r\nMessage-ID: ${messageId}\r\n\r\nHello.\r\n`,
  }
}

const received = (r: TestReceiver, messageId: string) => r.messages.filter((m) => m.raw.toString('latin1').includes(`Message-ID: ${messageId}\r\n`))

/** An SMTP session after EHLO; `send` gives each command's reply. */
async function session(port: number): Promise<{ client: RawSmtp; send: (line: string) => Promise<string> }> {
  const { client, greeting } = await connectRaw(port)
  expect(greeting).toMatch(/^220 /)
  const send = (line: string) => client.command(line, 5000)
  expect(await send('EHLO client.test')).toMatch(/^250[ -]/)
  return { client, send }
}

/** Connects from a given loopback address; resolves with the greeting and whether the server then closed. */
function connectFrom(localAddress: string, port: number): Promise<{ greeting: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress })
    let data = ''
    let greeting: string | undefined
    const timer = setTimeout(() => {
      socket.destroy()
      if (greeting !== undefined) resolve({ greeting, closed: false })
      else reject(new Error(`no greeting within 5 s (got ${JSON.stringify(data)})`))
    }, 5000)
    socket.on('data', (d) => {
      data += d.toString('latin1')
      if (greeting === undefined && data.includes('\r\n')) greeting = data.slice(0, data.indexOf('\r\n'))
    })
    socket.on('error', () => undefined)
    socket.on('close', () => {
      clearTimeout(timer)
      if (greeting === undefined) reject(new Error(`closed without a greeting (got ${JSON.stringify(data)})`))
      else resolve({ greeting, closed: true })
    })
  })
}

describe('plugins loaded from user files', () => {
  it('a rcpt hook rejects one recipient with its own code and text; the others pass and are delivered', async () => {
    const relay = await relayWith([[fixture('block-recipient'), { blocked: ['mallory@dest.test'] }], ACL])
    const { client, send } = await session(relay.port)
    expect(await send('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await send('RCPT TO:<bob@dest.test>')).toMatch(/^250 /)
    expect(await send('RCPT TO:<mallory@dest.test>')).toBe('550 5.7.1 recipient blocked')
    expect(await send('RCPT TO:<carol@dest.test>')).toMatch(/^250 /)
    expect(await send('DATA')).toMatch(/^354 /)
    const m = message('blocked recipient')
    client.send(dotStuff(m.data))
    expect(await client.read(5000)).toMatch(/^250 2\.0\.0 Ok: queued as \w+$/)
    await send('QUIT')
    client.close()

    await eventually(() => received(mx, m.messageId).length === 1, 10_000, 'delivery to the MX')
    const [delivered] = received(mx, m.messageId)
    expect(delivered!.to).toEqual(['bob@dest.test', 'carol@dest.test'])
  })

  it('runs hooks in config order and the first decisive verdict wins', async () => {
    const dir = tempDir()
    // first passes (returns nothing), second rejects: the second decides
    const traceA = path.join(dir, 'trace-a.txt')
    const a = await relayWith([
      [fixture('verdict'), { label: 'first', verdict: 'pass', trace: traceA }],
      [fixture('verdict'), { label: 'second', verdict: 'reject', trace: traceA }],
      ACL,
    ])
    let s = await session(a.port)
    expect(await s.send('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await s.send('RCPT TO:<bob@dest.test>')).toBe('550 5.7.1 refused by second')
    s.client.close()
    expect(fs.readFileSync(traceA, 'utf8')).toBe('first bob@dest.test\nsecond bob@dest.test\n')

    // first accepts: the second never runs, although it would reject, and the mail goes through
    const traceB = path.join(dir, 'trace-b.txt')
    const b = await relayWith([
      [fixture('verdict'), { label: 'first', verdict: 'accept', trace: traceB }],
      [fixture('verdict'), { label: 'second', verdict: 'reject', trace: traceB }],
    ])
    const m = message('first accepts')
    const r = await sendMail(b.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: m.data })
    expect(r.replies[3]).toMatch(/^250 /) // RCPT
    expect(r.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as /)
    await eventually(() => received(mx, m.messageId).length === 1, 10_000, 'delivery to the MX')
    expect(fs.readFileSync(traceB, 'utf8')).toBe('first bob@dest.test\n')
    await b.waitForLog((l) => l.msg === 'verdict plugin first ran', 5000)
    expect(b.logs.some((l) => l.msg === 'verdict plugin second ran')).toBe(false)

    // the same two plugins the other way round: now the rejecting one is first and decides
    const traceC = path.join(dir, 'trace-c.txt')
    const c = await relayWith([
      [fixture('verdict'), { label: 'second', verdict: 'reject', trace: traceC }],
      [fixture('verdict'), { label: 'first', verdict: 'accept', trace: traceC }],
    ])
    s = await session(c.port)
    expect(await s.send('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await s.send('RCPT TO:<bob@dest.test>')).toBe('550 5.7.1 refused by second')
    s.client.close()
    expect(fs.readFileSync(traceC, 'utf8')).toBe('second bob@dest.test\n')
  })

  it('a plugin that throws gives 451 4.3.0 and an error log naming it; one that hangs gives 451 4.3.0 after hookTimeout; the relay stays up', async () => {
    const relay = await relayWith([fixture('throws-at-mail'), fixture('hangs-at-rcpt'), ACL], { hookTimeout: '1s' })
    const s = await session(relay.port)
    expect(await s.send('MAIL FROM:<boom@sender.test>')).toBe('451 4.3.0 Temporary local problem, try again later')
    const error = await relay.waitForLog((l) => l.level === 50 && l.msg === 'plugin throws-at-mail failed in hook mail', 5000)
    expect(error.plugin).toBe('throws-at-mail')
    expect((error.err as { message?: string }).message).toBe('kaboom: plugin bug')

    // the same session goes on: another sender is fine, the hanging recipient times out
    expect(await s.send('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    const started = Date.now()
    const reply = await s.send('RCPT TO:<hang@dest.test>')
    const elapsed = Date.now() - started
    expect(reply).toBe('451 4.3.0 Temporary local problem, try again later')
    expect(elapsed).toBeGreaterThanOrEqual(900)
    expect(elapsed).toBeLessThan(3000)
    const timeout = await relay.waitForLog((l) => l.level === 50 && l.msg === 'plugin hangs-at-rcpt failed in hook rcpt', 5000)
    expect((timeout.err as { message?: string }).message).toMatch(/timed out after 1000 ms/)
    s.client.close()

    // a later session works end to end
    const m = message('after the failures')
    const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: m.data })
    expect(r.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as /)
    await eventually(() => received(mx, m.messageId).length === 1, 10_000, 'delivery to the MX')
    expect(relay.exited()).toBe(false)
  })

  it('a data hook sees the headers and adds one; a data reject gives 550 and queues nothing; a connect reject gives 554 and closes', async () => {
    const relay = await relayWith([fixture('headers'), [fixture('connect-gate'), { refuse: ['127.0.0.66'], refuseHelo: ['spammer.test'] }], ACL])

    const refused = message('forbidden words')
    const r1 = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: refused.data })
    expect(r1.lastReply).toBe('550 5.7.1 content refused by policy')
    expect(relay.logs.some((l) => l.msg === 'accepted' && l.event === 'accepted')).toBe(false)
    expect(await relay.listQueue()).toEqual([])
    expect(fs.readdirSync(path.join(relay.dataDir, 'spool'))).toEqual([])

    const ok = message('hello plugin')
    const r2 = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: ok.data })
    expect(r2.lastReply).toMatch(/^250 2\.0\.0 Ok: queued as /)
    await eventually(() => received(mx, ok.messageId).length === 1, 10_000, 'delivery to the MX')
    const raw = received(mx, ok.messageId)[0]!.raw.toString('latin1')
    const headerBlock = raw.slice(0, raw.indexOf('\r\n\r\n') + 2)
    expect(headerBlock).toMatch(/^X-Seen-By-Plugin: subject="hello plugin" from="Alice <alice@sender\.test>" size=\d+\r\n/m)
    // the plugin's header comes after the client's own fields, which are unchanged
    expect(headerBlock.indexOf('X-Seen-By-Plugin:')).toBeGreaterThan(headerBlock.indexOf(`Message-ID: ${ok.messageId}`))
    expect(raw.endsWith('\r\n\r\nHello.\r\n')).toBe(true)
    expect(received(mx, refused.messageId)).toEqual([])

    const gated = await connectFrom('127.0.0.66', relay.port)
    expect(gated.greeting).toBe('554 5.7.1 connections from your address are refused')
    expect(gated.closed).toBe(true)
    // other clients still get in
    const { client, greeting } = await connectRaw(relay.port)
    expect(greeting).toMatch(/^220 /)
    // the helo hook judges the HELO name at the first MAIL of the session
    expect(await client.command('EHLO spammer.test')).toMatch(/^250/)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toBe('550 5.7.1 HELO spammer.test refused')
    expect(await client.command('EHLO good.sender.test')).toMatch(/^250/)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    client.close()
  })

  it('a deliver hook routes mail to another host, and delivered events reach the plugin', async () => {
    const events = path.join(tempDir(), 'events.jsonl')
    const relay = await relayWith([[fixture('route-and-record'), { host: '127.0.0.5', port: smarthost.port, events }], ACL])
    const mxConnections = mx.connections
    const m = message('routed')
    const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: m.data })
    const queueId = /queued as (\w+)/.exec(r.lastReply)?.[1]
    expect(queueId, r.lastReply).toBeTruthy()

    await eventually(() => received(smarthost, m.messageId).length === 1, 10_000, 'delivery to the routed host')
    expect(received(smarthost, m.messageId)[0]!.to).toEqual(['bob@dest.test'])
    const text = await eventually(() => (fs.existsSync(events) ? fs.readFileSync(events, 'utf8') : ''), 5000, 'the delivered event in the plugin file')
    const recorded = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(recorded).toHaveLength(1)
    expect(recorded[0]).toMatchObject({ type: 'delivered', queueId, messageId: m.messageId, sender: 'alice@sender.test', recipient: 'bob@dest.test', domain: 'dest.test', attempts: 1 })
    expect(recorded[0]!.remoteHost).toBe(`127.0.0.5[127.0.0.5]:${smarthost.port}`)
    expect(recorded[0]!.response).toMatch(/^250 /)
    expect(received(mx, m.messageId)).toEqual([])
    expect(mx.connections).toBe(mxConnections)
  })

  it('validates plugin options at start: exit code 2 and the key path of the bad option', () => {
    const dir = tempDir()
    const configFile = path.join(dir, 'relay.config.json')
    fs.writeFileSync(
      configFile,
      JSON.stringify({ hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, 'data'), plugins: [[fixture('needs-number'), { n: 'x' }]] }),
    )
    for (const command of ['start', 'check-config']) {
      const r = runCli([command, '--config', configFile])
      expect(r.code, `${command}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(/plugins\[0\] \(needs-number\) options\.n: expected a number, got a string/)
      expect(r.stderr).toContain(configFile)
    }
  })

  it('plugins share notes: per session from connect, per message from MAIL', async () => {
    const relay = await relayWith([[fixture('notes'), { role: 'writer' }], [fixture('notes'), { role: 'reader' }], ACL])
    const first = message('notes one')
    const r = await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@dest.test'], data: first.data })
    expect(r.lastReply).toMatch(/^250 /)
    await eventually(() => received(mx, first.messageId).length === 1, 10_000, 'delivery')
    expect(received(mx, first.messageId)[0]!.raw.toString()).toMatch(/^X-Notes: session=true sender=alice@sender\.test\r$/m)
  })
})
