// NUL bytes in a message (issue 12, point 5): `<CRLF><NUL>.<CRLF>` is an end of data to a receiver
// that deletes NULs, and what follows it would run there as SMTP commands (smuggling). In 'reject'
// mode the relay refuses any NUL (550 5.6.0); in 'normalize' mode it removes them, so the next hop
// gets one message, intact but for the NULs. The next hop here is a real smtp-server behind a TCP
// hop that deletes every NUL byte, as such receivers do.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import net from 'node:net'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff } from '../harness/smtp-client.js'
import { ROOT, startRelay, type RelayProcess } from '../harness/relay.js'

const NUL_HEADER = path.join(ROOT, 'test/fixtures/nul-header.plugin.ts') // adds a header with NULs in its value

let dns: TestDns
let rx: TestReceiver // the mail store, behind the NUL-deleting hop
let nulDropper: net.Server // 127.0.0.2: deletes NULs from what the relay sends, passes the rest on
let nulsDeleted = 0 // NUL bytes the relay sent (the dropper deleted them)
let rejecting: RelayProcess // bareLineEndings 'reject' (the default)
let normalizing: RelayProcess // bareLineEndings 'normalize'

/** The smuggling payload: a body line `<NUL>.` followed by a whole second transaction. */
const smuggling = (tag: string) =>
  Buffer.from(
    `From: a@client.test\r\nTo: b@nul.test\r\nSubject: ${tag}\r\n\r\nfirst line\r\n\x00.\r\n` +
      `MAIL FROM:<evil@client.test>\r\nRCPT TO:<victim@nul.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n`,
    'latin1',
  )

/** One transaction over a raw socket; resolves with the reply to the final dot. */
async function send(port: number, data: Buffer): Promise<string> {
  const { client } = await connectRaw(port)
  try {
    await client.command('EHLO client.test')
    expect(await client.command('MAIL FROM:<a@client.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<b@nul.test>')).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const reply = client.read()
    client.send(dotStuff(data))
    return await reply
  } finally {
    client.close()
  }
}

beforeAll(async () => {
  rx = await startReceiver({ host: '127.0.0.3', behaviour: { noStartTls: true } })
  nulDropper = net.createServer((inbound) => {
    const outbound = net.connect(rx.port, '127.0.0.3')
    inbound.on('data', (d: Buffer) => {
      const kept = Buffer.from(d.filter((b) => b !== 0))
      nulsDeleted += d.length - kept.length
      outbound.write(kept)
    })
    outbound.pipe(inbound)
    for (const s of [inbound, outbound]) s.on('error', () => undefined)
    inbound.on('close', () => outbound.destroy())
    outbound.on('close', () => inbound.destroy())
  })
  await new Promise<void>((resolve) => nulDropper.listen(0, '127.0.0.2', resolve))
  const port = (nulDropper.address() as net.AddressInfo).port
  dns = await startDns({ 'nul.test': { A: ['127.0.0.2'] } })
  const config = (bareLineEndings: string) => ({
    localDomains: ['nul.test'],
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: { port, retry: { base: '1h', factor: 1, max: '1h' } },
    smtp: { reverseLookup: false, bareLineEndings },
    plugins: [[NUL_HEADER, {}]],
  })
  ;[rejecting, normalizing] = await Promise.all([startRelay({ config: config('reject') }), startRelay({ config: config('normalize') })])
})

beforeEach(() => {
  nulsDeleted = 0
})

afterAll(async () => {
  await Promise.all([rejecting?.stop(), normalizing?.stop()])
  await new Promise((r) => nulDropper?.close(r))
  await Promise.all([dns?.close(), rx?.close()])
})

describe("bareLineEndings 'reject'", () => {
  it('a body line <NUL>. gets 550 5.6.0 and nothing is queued or sent', async () => {
    expect(await send(rejecting.port, smuggling('reject body'))).toMatch(/^550 5\.6\.0 Message contains a NUL byte/)
    await rejecting.waitForLog((l) => l.msg === 'refused' && l.rule === 'core:nul-byte' && l.dsn === '5.6.0', 5000)
  })

  it('a NUL in a header field, or anywhere in the body, gets 550 5.6.0', async () => {
    expect(await send(rejecting.port, Buffer.from('From: a@client.test\r\nSubject: nul\x00here\r\n\r\nbody\r\n', 'latin1'))).toMatch(/^550 5\.6\.0 /)
    expect(await send(rejecting.port, Buffer.from('Subject: ok\r\n\r\nbody with a \x00 inside\r\n', 'latin1'))).toMatch(/^550 5\.6\.0 /)
    // The session goes on after the refusal, and clean mail still passes.
    expect(await send(rejecting.port, Buffer.from('Subject: clean (reject relay)\r\n\r\nbody\r\n'))).toMatch(/^250 2\.0\.0 Ok: queued as /)
    const [m] = await rx.waitForMessages(1, 10_000)
    expect(m!.raw.toString('latin1')).toContain('Subject: clean (reject relay)')
    expect(nulsDeleted).toBe(0)
    expect(rx.messages.some((x) => x.to.includes('victim@nul.test'))).toBe(false)
  })
})

describe("bareLineEndings 'normalize'", () => {
  it('NULs are removed: the NUL-deleting receiver gets exactly one message, the rest as its content, no command run', async () => {
    const before = rx.messages.length
    expect(await send(normalizing.port, smuggling('normalize body'))).toMatch(/^250 2\.0\.0 Ok: queued as /)
    const received = (await rx.waitForMessages(before + 1, 10_000)).slice(before)
    await new Promise((r) => setTimeout(r, 500)) // a smuggled second message would come in the same session
    expect(rx.messages.length).toBe(before + 1)
    const raw = received[0]!.raw
    expect(nulsDeleted).toBe(0)
    expect(received[0]!.to).toEqual(['b@nul.test'])
    const text = raw.toString('latin1')
    expect(text).toContain('Subject: normalize body\r\n')
    expect(text).toContain('\r\n\r\nfirst line\r\n.\r\nMAIL FROM:<evil@client.test>\r\nRCPT TO:<victim@nul.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n')
    expect(rx.messages.some((x) => x.to.includes('victim@nul.test'))).toBe(false)
  })

  it('a NUL in a header field is removed too, in the client\'s fields and in one a plugin adds', async () => {
    const before = rx.messages.length
    expect(await send(normalizing.port, Buffer.from('From: a@client.test\r\nSubject: nul\x00in\x00header\r\n\r\nbody\r\n', 'latin1'))).toMatch(/^250 /)
    const [m] = (await rx.waitForMessages(before + 1, 10_000)).slice(before)
    expect(nulsDeleted).toBe(0)
    expect(m!.raw.toString('latin1')).toContain('Subject: nulinheader\r\n')
    expect(m!.raw.toString('latin1')).toContain('X-Plugin-Note: scannedbyplugin\r\n')
  })
})
