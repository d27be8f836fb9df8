// Robustness end to end: what a hostile or broken client can do to the relay over real sockets.
// Open-relay attempts, malformed commands, oversized lines and messages, clients that vanish
// mid-DATA, SMTP smuggling probes, and a 30 MB message. The relay is the built one (dist/) in its
// own process; DNS and the receiving MX are real servers on loopback.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, type RawSmtp } from '../harness/smtp-client.js'
import { eventually, runCli, startRelay, type QueueListEntry, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let mx: TestReceiver // 127.0.0.2: MX of every test domain
let relay: RelayProcess // trusts 127.0.0.0/8, rejects bare LF/CR (the default)
const clients = new Set<RawSmtp>()

/** Config every relay in this file shares: our DNS, our MX port, fast retries. */
const baseConfig = () => ({
  dns: { servers: [dns.server], timeout: '1s' },
  delivery: { port: mx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
})
const trustLoopback = [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]]

const message = (tag: string, body = 'Hello there.\r\n') =>
  `From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@sender.test>\r\n\r\n${body}`

/** Messages (accepted or refused) that reached the MX and carry this tag anywhere in their bytes. */
const reachedMx = (tag: string): ReceivedMessage[] => [...mx.messages, ...mx.refused].filter((m) => m.raw.includes(tag))

/**
 * Waits (bounded) until the MX has accepted a message with this subject tag, and returns it. When
 * relay `r` sent it, also until `r` has logged it delivered: the MX has the message before the
 * relay records the 250, and a later read of the queue must not find it in flight.
 */
async function deliveredTagged(tag: string, timeoutMs = 10_000, r: RelayProcess = relay): Promise<ReceivedMessage> {
  const got = await eventually(() => mx.messages.find((m) => m.raw.includes(`Subject: ${tag}\r\n`)), timeoutMs, `delivery of "${tag}"`)
  const queueId = / id (\w+)/.exec(/^Received: .*(?:\r\n[ \t].*)*/.exec(got.raw.toString('latin1'))?.[0] ?? '')?.[1]
  // r's log lines reach us up to 100 ms after the receiver has the message (they are written in
  // batches): wait a little for r's 'accepted' line; another relay's queue id never gets one.
  const acceptedByR = queueId !== undefined && (await r.waitForLog((l) => l.event === 'accepted' && l.queueId === queueId, 1000).then(() => true, () => false))
  if (acceptedByR) await r.waitForLog((l) => l.event === 'delivered' && l.queueId === queueId, timeoutMs)
  return got
}

const spoolFiles = (r: RelayProcess) => fs.readdirSync(path.join(r.dataDir, 'spool'))
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Connects and says EHLO; the client is closed after the test. */
async function open(port: number): Promise<RawSmtp> {
  const { client, greeting } = await connectRaw(port)
  clients.add(client)
  expect(greeting).toMatch(/^220 /)
  expect(await client.command('EHLO client.test')).toMatch(/^250 /m)
  return client
}

/** MAIL, RCPT, DATA on an open session, then the dot-stuffed data; resolves with the final reply. */
async function transaction(client: RawSmtp, o: { from?: string; to: string; data: string | Buffer; timeoutMs?: number }): Promise<string> {
  expect(await client.command(`MAIL FROM:<${o.from ?? 'alice@sender.test'}>`)).toMatch(/^250 /)
  expect(await client.command(`RCPT TO:<${o.to}>`)).toMatch(/^250 /)
  expect(await client.command('DATA')).toMatch(/^354 /)
  const reply = client.read(o.timeoutMs ?? 5000)
  client.send(dotStuff(o.data))
  return reply
}

/** A fresh connection relays a message to the MX: the relay still works. */
async function stillRelays(r: RelayProcess, tag: string): Promise<void> {
  const client = await open(r.port)
  expect(await transaction(client, { to: `ok@dest.test`, data: message(tag) })).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
  // Delivered, and done in r's queue (callers then read the queue).
  await deliveredTagged(tag, 10_000, r)
  client.close()
}

/** Closes the test's clients first (an open session holds up a graceful stop), then stops. */
async function stopRelays(...relays: RelayProcess[]): Promise<void> {
  for (const c of clients) c.close()
  clients.clear()
  await Promise.all(relays.map((r) => r.stop()))
}

/** The process is up and logged no crash (uncaught exception, unhandled rejection, fatal). */
function expectHealthy(r: RelayProcess): void {
  expect(r.exited()).toBe(false)
  const crashes = r.logs.filter((l) => l.level >= 60 || /uncaught|unhandled/i.test(l.msg))
  expect(crashes).toEqual([])
}

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.0.2' })
  const dest = { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }
  dns = await startDns({
    'dest.test': dest,
    'foreign.test': dest,
    'big.test': dest,
    'mx.dest.test': { A: ['127.0.0.2'] },
    'sender.test': dest,
  })
  relay = await startRelay({ config: { ...baseConfig(), plugins: trustLoopback } })
})

afterEach(() => {
  for (const c of clients) c.close()
  clients.clear()
  mx.setBehaviour({})
})

afterAll(async () => {
  if (relay) await stopRelays(relay)
  await Promise.all([dns?.close(), mx?.close()])
})

describe('robustness', () => {
  it('is not an open relay: an untrusted client only reaches local domains, and with no plugins nothing relays', async () => {
    const messagesBefore = mx.messages.length + mx.refused.length
    const connectionsBefore = mx.connections
    const started = await Promise.allSettled([
      // 127.0.0.1 is outside the trusted network
      startRelay({ config: { ...baseConfig(), localDomains: ['local.test'], plugins: [['relay-acl', { trustedNetworks: ['10.0.0.0/8'] }]] } }),
      // no plugins at all
      startRelay({ config: baseConfig() }),
    ])
    const up = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
    if (up.length < started.length) {
      await stopRelays(...up)
      throw (started.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason
    }
    const [acl, bare] = up as [RelayProcess, RelayProcess]
    try {
      for (const r of [acl, bare]) {
        const client = await open(r.port)
        expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
        expect(await client.command('RCPT TO:<bob@foreign.test>')).toMatch(/^550 5\.7\.1 /)
        // the usual tricks to slip past a domain check are refused as well
        expect(await client.command('RCPT TO:<bob@[127.0.0.2]>')).toMatch(/^550 5\.7\.1 /)
        expect(await client.command('RCPT TO:<BOB@FOREIGN.TEST>')).toMatch(/^550 5\.7\.1 /)
        // a source route is ignored (RFC 5321 appendix C): this is bob@foreign.test
        expect(await client.command('RCPT TO:<@local.test:bob@foreign.test>')).toMatch(/^550 5\.7\.1 /)
        // no recipient was accepted, so there is no transaction to send data for
        expect(await client.command('DATA')).toMatch(/^503 /)
        expect(await client.command('RSET')).toMatch(/^250 /)
        client.close()
      }

      // the untrusted client still reaches the relay's own domain (case-insensitively)
      const client = await open(acl.port)
      expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
      expect(await client.command('RCPT TO:<bob@foreign.test>')).toMatch(/^550 5\.7\.1 /)
      expect(await client.command('RCPT TO:<postmaster@local.test>')).toMatch(/^250 /)
      expect(await client.command('RCPT TO:<bob@LOCAL.test>')).toMatch(/^250 /)
      expect(await client.command('RSET')).toMatch(/^250 /)
      // and the relay without plugins has no local domains: nothing at all gets in
      const bareClient = await open(bare.port)
      expect(await bareClient.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
      expect(await bareClient.command('RCPT TO:<postmaster@local.test>')).toMatch(/^550 5\.7\.1 /)

      expect(await acl.listQueue()).toEqual([])
      expect(await bare.listQueue()).toEqual([])
      await sleep(300)
      expect(mx.messages.length + mx.refused.length).toBe(messagesBefore)
      expect(mx.connections).toBe(connectionsBefore)
      expectHealthy(acl)
      expectHealthy(bare)
    } finally {
      await stopRelays(acl, bare)
    }
  })

  it('answers malformed commands with 5xx and keeps the session and the process up', async () => {
    const client = await open(relay.port)
    expect(await client.command('XYZZY plugh')).toMatch(/^5\d\d /)
    expect(await client.command('\x00\xff\x01 binary junk')).toMatch(/^5\d\d /)
    expect(await client.command('MAIL FROM:<no-brackets')).toMatch(/^5\d\d /)
    expect(await client.command('MAIL FROM:')).toMatch(/^5\d\d /)
    expect(await client.command('RCPT TO:<bob@dest.test>')).toMatch(/^503 /) // before MAIL
    expect(await client.command('DATA')).toMatch(/^503 /) // before MAIL
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^503 /) // nested MAIL
    expect(await client.command('DATA')).toMatch(/^503 /) // before RCPT
    // Bad recipient syntax is 5xx with status 5.1.3. smtp-server's own address check answers most
    // of these (501 5.1.3) before the relay's stricter one (553 5.1.3) runs; both codes are valid
    // RCPT replies (RFC 5321 4.3.2), the enhanced status is what matters.
    expect(await client.command('RCPT TO:<bob>')).toMatch(/^5(01|53) 5\.1\.3 /) // unqualified
    expect(await client.command('RCPT TO:<bob@dest.test.>')).toMatch(/^5(01|53) 5\.1\.3 /) // trailing dot
    expect(await client.command('RCPT TO:<bob@@dest.test>')).toMatch(/^5(01|53) 5\.1\.3 /)
    expect(await client.command('RCPT TO:<bob@dest..test>')).toMatch(/^5(01|53) 5\.1\.3 /)
    expect(await client.command('RCPT TO:<bob@localhost>')).toMatch(/^553 5\.1\.3 /) // the relay's own check: no dot
    expect(await client.command('RCPT TO:<bob@-dest.test>')).toMatch(/^553 5\.1\.3 /)
    expect(await client.command('RCPT TO:<bob@192.0.2.1>')).toMatch(/^553 5\.1\.3 /) // an IP is not a domain; literals need brackets
    expect(await client.command('DATA')).toMatch(/^503 /) // still no valid recipient

    // the same session then runs a normal transaction (MAIL is still in effect)
    expect(await client.command('RCPT TO:<bob@dest.test>')).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const reply = client.read()
    client.send(dotStuff(message('after malformed')))
    expect(await reply).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const delivered = await deliveredTagged('after malformed')
    expect(delivered.from).toBe('alice@sender.test')
    expect(delivered.to).toEqual(['bob@dest.test'])
    expect(await client.command('QUIT')).toMatch(/^221 /)

    await stillRelays(relay, 'new connection after malformed')
    expectHealthy(relay)
  })

  it('refuses MAIL and RCPT parameters that no offered extension defines (555 5.5.4) and takes the ones it offers', async () => {
    const client = await open(relay.port)
    expect(await client.command('MAIL FROM:<alice@sender.test> FOO=BAR')).toMatch(/^555 5\.5\.4 MAIL FROM parameter FOO not supported/)
    expect(await client.command('MAIL FROM:<alice@sender.test> XYZZY')).toMatch(/^555 5\.5\.4 /)
    // AUTH= (RFC 4954 §5) only where AUTH is on offer: not on this listener.
    expect(await client.command('MAIL FROM:<alice@sender.test> SIZE=300 AUTH=<>')).toMatch(/^555 5\.5\.4 MAIL FROM parameter AUTH not supported/)
    expect(await client.command('MAIL FROM:<alice@sender.test> SIZE=300 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=e1')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<bob@dest.test> TO=<mallory@evil.test>')).toMatch(/^555 5\.5\.4 RCPT TO parameter TO not supported/)
    expect(await client.command('RCPT TO:<carol@dest.test> NOTIFY=FAILURE ORCPT=rfc822;carol@dest.test')).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const reply = client.read()
    client.send(dotStuff(message('only offered parameters')))
    expect(await reply).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const delivered = await deliveredTagged('only offered parameters')
    expect(delivered.to).toEqual(['carol@dest.test'])
    expect(reachedMx('mallory@evil.test')).toEqual([])
    expectHealthy(relay)
  })

  it('refuses envelope addresses holding bytes that are not UTF-8 instead of rewriting them', async () => {
    const client = await open(relay.port)
    const raw = async (latin1: string) => {
      const reply = client.read()
      client.send(Buffer.from(`${latin1}\r\n`, 'latin1'))
      return reply
    }
    expect(await raw('MAIL FROM:<bad\xff\xfeutf@sender.test>')).toMatch(/^5\d\d 5\.1\.7 /)
    expect(await raw('MAIL FROM:<bad\xff\xfeutf@sender.test> SMTPUTF8')).toMatch(/^5\d\d 5\.1\.7 /)
    expect(await client.command('MAIL FROM:<alice@sender.test> SMTPUTF8')).toMatch(/^250 /)
    expect(await raw('RCPT TO:<v\xc3@dest.test>')).toMatch(/^5\d\d 5\.1\.3 /)
    // well-formed UTF-8 is taken (SMTPUTF8)
    expect(await raw(`RCPT TO:<${Buffer.from('jürgen@dest.test').toString('latin1')}>`)).toMatch(/^250 /)
    expectHealthy(relay)
  })

  it('takes quoted local parts with spaces (RFC 5321 §4.1.2) and queues exactly those mailboxes; angle brackets, which no next hop could be given, are refused', async () => {
    // The MX would defer at MAIL, but its parser refuses these addresses first (501): what the relay
    // took is read from its 'accepted' line below, not from a queue the bounce may already have emptied.
    mx.setBehaviour({ reply: { mail: () => ({ code: 451, message: '4.3.2 not now' }) } })
    try {
      const client = await open(relay.port)
      expect(await client.command('MAIL FROM:<"john smith"@sender.test>')).toMatch(/^250 /)
      expect(await client.command('RCPT TO:<"a b"@dest.test>')).toMatch(/^250 /)
      // RFC 5321 qtext, but the delivery client refuses such an envelope address: the whole
      // transaction would never go out (relay-tricks.test.ts has the delivery).
      expect(await client.command('RCPT TO:<"c>d"@dest.test> NOTIFY=NEVER')).toMatch(/^553 5\.1\.3 /)
      expect(await client.command('RCPT TO:<"c d"@dest.test> NOTIFY=NEVER')).toMatch(/^250 /)
      expect(await client.command('DATA')).toMatch(/^354 /)
      const reply = client.read()
      client.send(dotStuff(message('quoted local parts')))
      const id = /queued as (\w+)/.exec(await reply)![1]!
      // What was queued, as the relay's 'accepted' line lists it.
      const entry = await relay.waitForLog((l) => l.event === 'accepted' && l.queueId === id)
      expect(entry.sender).toBe('"john smith"@sender.test')
      expect((entry.recipients as string[]).sort()).toEqual(['"a b"@dest.test', '"c d"@dest.test'])
      // outside quotes a space still ends the path
      expect(await client.command('MAIL FROM:<john smith@sender.test>')).toMatch(/^5\d\d /)
      // Clean-up: these recipients now reach the MX's MAIL (the 451), and under load the message
      // was seen to leave the queue before this ran (unexplained; see the branch report).
      // A delete while the attempt runs is refused ("being delivered right now"): try again.
      await eventually(async () => {
        const del = runCli(['queue', 'delete', id, '--config', relay.configFile])
        if (/being delivered right now/.test(del.stderr)) return false
        expect(del.code === 0 || /no message/.test(del.stderr), del.stderr).toBe(true)
        return true
      }, 15_000, 'deleted once no attempt is under way')
    } finally {
      mx.setBehaviour({})
    }
    // The MX refused what did go out, so a DSN to "john smith" may be queued, and deferred by the same
    // 451: it leaves on its next try now. Later tests read this relay's queue as empty.
    await eventually(async () => (await relay.listQueue()).length === 0 || (await sleep(250)), 15_000, 'the DSN of the quoted-local-part message to leave the queue')
  })

  it('keeps a HELO name that is no host name out of the structure of its Received field', async () => {
    for (const helo of ['x(', 'a;b', '(c)', 'x\\']) {
      const { client } = await connectRaw(relay.port)
      clients.add(client)
      expect(await client.command(`EHLO ${helo}`)).toMatch(/^250[ -]/)
      const tag = `helo ${helo}`
      expect(await transaction(client, { to: 'bob@dest.test', data: message(tag) })).toMatch(/^250 2\.0\.0 /)
      const got = await deliveredTagged(tag)
      const received = /^Received: (.*(?:\r\n[ \t].*)*)\r\n/.exec(got.raw.toString('latin1'))![1]!
      // The relay's own parts stay outside any comment, and the field ends with its own date.
      const uncommented = received.replace(/\((?:[^()\\]|\\.)*\)/g, '')
      expect(uncommented, helo).toMatch(/^from \[127\.0\.0\.1\]\s+by \S+\s+with \w+ id \w+\s+for <bob@dest\.test>;\s+\w{3}, \d{2} \w{3} \d{4} [\d:]{8} \+0000$/)
      expect(received, helo).not.toContain(`from ${helo}`)
    }
  })

  it('survives a 1 MB command line and relays on a new connection', async () => {
    const client = await open(relay.port)
    const line = `MAIL FROM:<${'a'.repeat(1024 * 1024)}@sender.test>`
    let outcome: string
    try {
      outcome = await client.command(line, 5000)
    } catch (err) {
      // a connection closed by the relay is fine; a reply that never comes is not
      const msg = (err as Error).message
      expect(msg).toMatch(/closed/)
      outcome = 'closed'
    }
    expect(outcome).toMatch(/^[45]\d\d |^closed$/)
    // the long line never became a sender: the session is gone or has no transaction
    if (!client.isClosed()) {
      const next = await client.command('RCPT TO:<bob@dest.test>').catch(() => 'closed')
      expect(next).toMatch(/^503 |^closed$/)
    }
    await stillRelays(relay, 'after long line')
    expect(await relay.listQueue()).toEqual([])
    expectHealthy(relay)
  })

  it('queues nothing when the client disconnects mid-DATA, and leaves no spool file behind', async () => {
    const before = mx.messages.length + mx.refused.length

    // small (in-memory) half message
    const small = await open(relay.port)
    expect(await small.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await small.command('RCPT TO:<bob@dest.test>')).toMatch(/^250 /)
    expect(await small.command('DATA')).toMatch(/^354 /)
    small.send(message('half small', 'first half of the body\r\n'.repeat(200)))
    await sleep(200)
    small.close()

    // large half message: past the inline limit, so its body is being spooled to a file
    const large = await open(relay.port)
    expect(await large.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await large.command('RCPT TO:<bob@dest.test>')).toMatch(/^250 /)
    expect(await large.command('DATA')).toMatch(/^354 /)
    large.send(message('half large', `${'y'.repeat(998)}\r\n`.repeat(300)))
    // the spool file exists while the message is coming in ...
    await eventually(() => spoolFiles(relay).length === 1, 5000, 'a spool file for the incoming message')
    large.close()
    // ... and goes away with the client
    await eventually(() => spoolFiles(relay).length === 0, 5000, 'the spool file of the half message to be removed')

    // the relay keeps working; by the time the next message is delivered, a half message that
    // had been queued would have been delivered too
    await stillRelays(relay, 'after disconnects')
    expect(await relay.listQueue()).toEqual([])
    expect(reachedMx('half small')).toEqual([])
    expect(reachedMx('half large')).toEqual([])
    expect(mx.messages.length + mx.refused.length).toBe(before + 1)
    expect(spoolFiles(relay)).toEqual([])
    expectHealthy(relay)
  })

  describe('SMTP smuggling', () => {
    // The published probes: an end-of-data sequence with a bare LF or bare CR in it.
    const probes: [string, string][] = [
      ['LF.LF', '\n.\n'],
      ['LF.CRLF', '\n.\r\n'],
      ['CRLF.LF', '\r\n.\n'],
      ['CR.CRLF', '\r.\r\n'],
    ]
    const smuggled = 'MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\nFrom: evil@x.test\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n'
    /** The first message with a probe in its body, then commands for a second one; raw, not dot-stuffed. */
    const probeData = (tag: string, probe: string) => `${message(tag, 'first message body')}${probe}${smuggled}`
    const sendProbe = async (client: RawSmtp, tag: string, probe: string): Promise<string> => {
      expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
      expect(await client.command('RCPT TO:<victim@dest.test>')).toMatch(/^250 /)
      expect(await client.command('DATA')).toMatch(/^354 /)
      const reply = client.read()
      // the real end of data: CRLF . CRLF (the CRLF ends the last smuggled line)
      client.send(Buffer.from(`${probeData(tag, probe)}.\r\n`, 'latin1'))
      return reply
    }
    const fromEvil = () => [...mx.messages, ...mx.refused].filter((m) => m.from === 'evil@x.test' || m.raw.includes('Subject: smuggled\r\n\r\n'))

    it('rejects every probe with 550 5.6.0 by default: neither message is relayed', async () => {
      const before = mx.messages.length + mx.refused.length
      const client = await open(relay.port)
      for (const [name, probe] of probes) {
        expect(await sendProbe(client, `probe reject ${name}`, probe), name).toMatch(/^550 5\.6\.0 /)
        // the next reply answers the next command: no reply to any smuggled command is pending
        expect(await client.command('NOOP'), name).toMatch(/^250 /)
      }
      expect(await client.command('QUIT')).toMatch(/^221 /)
      expect(await relay.listQueue()).toEqual([])
      await stillRelays(relay, 'after reject probes')
      for (const [name] of probes) expect(reachedMx(`probe reject ${name}`), name).toEqual([])
      expect(fromEvil()).toEqual([])
      expect(mx.messages.length + mx.refused.length).toBe(before + 1)
      expectHealthy(relay)
    })

    it("with bareLineEndings 'normalize' relays each probe as exactly one message with CRLF line ends only", async () => {
      const normalizing = await startRelay({
        config: { ...baseConfig(), smtp: { bareLineEndings: 'normalize', reverseLookup: false }, plugins: trustLoopback },
      })
      try {
        // The MX defers the first attempts, so that the queued messages can be looked at.
        let hold = true
        mx.setBehaviour({ reply: { rcpt: ({ address }) => (hold && address === 'victim@dest.test' ? { code: 451, message: '4.3.0 later' } : undefined) } })
        const client = await open(normalizing.port)
        const ids = new Map<string, string>()
        for (const [name, probe] of probes) {
          const reply = await sendProbe(client, `probe normalize ${name}`, probe)
          expect(reply, name).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
          ids.set(name, /queued as (\w+)/.exec(reply)![1]!)
          expect(await client.command('NOOP'), name).toMatch(/^250 /)
        }
        expect(await client.command('QUIT')).toMatch(/^221 /)
        for (const id of ids.values()) await normalizing.waitForLog((l) => l.event === 'deferred' && l.queueId === id)
        // exactly one queued message per probe, none from the smuggled commands
        const queued = await normalizing.listQueue()
        expect(queued.map((m) => m.id).sort()).toEqual([...ids.values()].sort())
        expect(queued.every((m) => m.sender === 'alice@sender.test' && m.recipients.length === 1)).toBe(true)
        hold = false

        for (const [name, probe] of probes) {
          const tag = `probe normalize ${name}`
          const msg = await deliveredTagged(tag)
          expect(msg.from, name).toBe('alice@sender.test')
          expect(msg.to, name).toEqual(['victim@dest.test'])
          const raw = msg.raw.toString('latin1')
          // no bare LF, no bare CR anywhere
          expect(raw.match(/(?<!\r)\n/g), `${name}: bare LF`).toBeNull()
          expect(raw.match(/\r(?!\n)/g), `${name}: bare CR`).toBeNull()
          // it is what was sent with the probe's line ends made CRLF; the smuggled commands stay
          // inside the message as text, below the relay's Received header
          const expected = probeData(tag, probe.replace(/\r?\n|\r/g, '\r\n'))
          expect(raw.endsWith(expected), name).toBe(true)
          const received = raw.slice(0, raw.length - expected.length)
          expect(received, name).toMatch(/^Received: [^\r\n]*(\r\n\t[^\r\n]*)*\r\n$/)
          expect(received, name).toContain(` id ${ids.get(name)}`)
          // the relay itself stored the normalized bytes (not only the outbound SMTP client fixing
          // them on the way out): the queued size is the size of what arrived
          expect(queued.find((m) => m.id === ids.get(name))!.size, name).toBe(msg.raw.length)
        }
        // give a smuggled second message time to arrive: none does, and each probe arrived once
        await stillRelays(normalizing, 'after normalize probes')
        await sleep(300)
        for (const [name] of probes) expect(reachedMx(`probe normalize ${name}`), name).toHaveLength(1)
        const all = [...mx.messages, ...mx.refused]
        expect(all.filter((m) => m.from === 'evil@x.test')).toEqual([])
        expect(all.filter((m) => m.raw.includes('smuggled body') && !m.raw.includes('probe normalize'))).toEqual([])
        expect(all.filter((m) => m.raw.includes('smuggled body') && m.raw.includes('probe normalize'))).toHaveLength(probes.length)
        expect(await normalizing.listQueue()).toEqual([])
        expectHealthy(normalizing)
      } finally {
        await stopRelays(normalizing)
      }
    })
  })

  it('a client that does not dot-stuff: the first period of each line with more after it is dropped (RFC 5321 §4.5.2, as Postfix), also split across reads', async () => {
    const tag = 'undoubled dots'
    const body = '.first\r\n. space\r\n..doubled\r\n.\t\r\n...three\r\nmiddle'
    const client = await open(relay.port)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<bob@dest.test>')).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const reply = client.read()
    // Reads that end right after a line's first period, and one whose first byte is the period.
    const data = message(tag, body)
    const cut = data.indexOf('\r\n..doubled') + 3
    for (const part of [data.slice(0, cut), data.slice(cut, cut + 1), data.slice(cut + 1), '\r\n.', 'last\r\n.', '\r\n']) {
      client.send(Buffer.from(part, 'latin1'))
      await sleep(30)
    }
    expect(await reply).toMatch(/^250 /)
    expect(await client.command('QUIT')).toMatch(/^221 /)
    const raw = (await deliveredTagged(tag)).raw.toString('latin1')
    // The relay sends it on dot-stuffed; the receiver takes the stuffing off again.
    expect(raw.endsWith('\r\n\r\nfirst\r\n space\r\n.doubled\r\n\t\r\n..three\r\nmiddle\r\nlast\r\n')).toBe(true)
  })

  describe('lines over 998 octets (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1)', () => {
    /** Lines of `raw`, each with its CRLF (the last one without, when there is none). */
    const linesOf = (raw: Buffer): Buffer[] => {
      const out: Buffer[] = []
      for (let pos = 0; pos < raw.length; ) {
        const lf = raw.indexOf('\r\n', pos)
        const end = lf < 0 ? raw.length : lf + 2
        out.push(raw.subarray(pos, end))
        pos = end
      }
      return out
    }

    it('reach the MX broken into lines of at most 1000 octets with CRLF: body pieces put together are the line, header lines folded', async () => {
      const tag = 'long lines wrapped'
      // 200,000 octets with UTF-8 in it (2-, 3- and 4-byte sequences), a line starting with a dot
      const parts = ['.']
      for (let i = 0, octets = 1; octets < 200_000; i++) {
        const c = i % 97 === 0 ? 'é€𝄞' : String.fromCharCode(0x21 + (i % 90))
        parts.push(c)
        octets += Buffer.byteLength(c)
      }
      const bodyLine = parts.join('')
      const words = Array.from({ length: 400 }, (_, i) => `rcpt${i}@dest.test`).join(', ') // ~5,800 octets
      const token = 'T'.repeat(5000)
      const head = `From: Alice <alice@sender.test>\r\nTo: ${words}\r\nX-Token: ${token}\r\nSubject: ${tag}\r\nMessage-ID: <wrapped@sender.test>\r\n`
      const client = await open(relay.port)
      expect(await transaction(client, { to: 'bob@dest.test', data: Buffer.from(`${head}\r\nfirst\r\n${bodyLine}\r\nlast\r\n`, 'utf8') })).toMatch(/^250 2\.0\.0 /)
      const raw = (await deliveredTagged(tag)).raw
      const lines = linesOf(raw)
      expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(1000)
      expect(lines.every((l) => l.subarray(-2).toString() === '\r\n')).toBe(true)
      // no break inside a UTF-8 sequence
      for (const l of lines) expect(Buffer.from(l.toString('utf8'), 'utf8').equals(l)).toBe(true)
      const text = raw.toString('utf8')
      const sep = text.indexOf('\r\n\r\n')
      const header = text.slice(0, sep + 2)
      const body = text.slice(sep + 4)
      // the body: the pieces put together are the line; the lines around it unchanged
      const bodyLines = body.split('\r\n')
      expect(bodyLines[0]).toBe('first')
      expect(bodyLines.at(-2)).toBe('last')
      expect(bodyLines.slice(1, -2).join('')).toBe(bodyLine)
      expect(bodyLines.length - 3).toBe(Math.ceil(Buffer.byteLength(bodyLine) / 998))
      // the header: To folded at its own spaces (unfolding gives it back), the token broken with a folding space
      const fields = header.split(/\r\n(?![ \t])/)
      expect(fields.find((f) => f.startsWith('To:'))!.replace(/\r\n/g, '')).toBe(`To: ${words}`)
      expect(fields.find((f) => f.startsWith('X-Token:'))!.replace(/\r\n /g, '')).toBe(`X-Token: ${token}`)
      expect(fields.find((f) => f.startsWith('Subject:'))).toBe(`Subject: ${tag}`)
      expect(fields[0]).toMatch(/^Received: /)
      expectHealthy(relay)
    })

    it('a 1 MB body line and many 5,000-octet lines are relayed in short lines too', async () => {
      const tag = 'long lines megabyte'
      const mega = 'm'.repeat(1024 * 1024)
      const fives = Array.from({ length: 50 }, (_, i) => String(i % 10).repeat(5000))
      const client = await open(relay.port)
      expect(await transaction(client, { to: 'bob@dest.test', data: message(tag, `${mega}\r\n${fives.join('\r\n')}\r\n`), timeoutMs: 15_000 })).toMatch(/^250 2\.0\.0 /)
      const raw = (await deliveredTagged(tag, 15_000)).raw
      expect(Math.max(...linesOf(raw).map((l) => l.length))).toBeLessThanOrEqual(1000)
      const body = raw.toString('latin1').split('\r\n\r\n').slice(1).join('\r\n\r\n')
      expect(body.replace(/\r\n/g, '')).toBe(mega + fives.join(''))
      expectHealthy(relay)
    })
  })

  it("a message starting with a whitespace line never continues the relay's Received field", async () => {
    const tag = 'whitespace first line'
    const forged = '\tby mx.trusted.example (Postfix) with ESMTPS id ABC;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n'
    const client = await open(relay.port)
    for (const data of [`${forged}Subject: ${tag} 1\r\n\r\nbody\r\n`, ` by mx.trusted.example; Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: ${tag} 2\r\n`, `\tby mx.trusted.example\r\n\r\nSubject: ${tag} 3\r\n`]) {
      const reply = await transaction(client, { to: 'bob@dest.test', data })
      // refused, or accepted: then what arrives must keep the relay's trace field its own
      if (!reply.startsWith('250')) {
        expect(reply).toMatch(/^5\d\d /)
        continue
      }
      const n = /Subject: whitespace first line (\d)/.exec(data)![1]
      const raw = (await deliveredTagged(`${tag} ${n}`)).raw.toString('latin1')
      const header = raw.slice(0, raw.indexOf('\r\n\r\n') + 2)
      expect(header, data).not.toContain('mx.trusted.example')
      const fields = header.split(/\r\n(?![ \t])/).filter(Boolean)
      expect(fields[0], data).toMatch(/^Received: from client\.test /)
      expect(fields[0], data).not.toContain('Mon, 1 Jan 2024')
    }
    expectHealthy(relay)
  })

  it("a HELO address literal that is no address (RFC 5321 4.1.3) is not the Received field's `from` domain: the client's IP is, the name goes in the comment", async () => {
    const client = await open(relay.port)
    const cases: [helo: string, asFrom: boolean][] = [
      ['[127.0.0.1]', true],
      ['[IPv6:::1]', true],
      ['[ipv6:2001:db8::1]', true],
      ['[300.1.1.1]', false],
      ['[::1]', false],
      ['[cafe]', false],
      ['[....]', false],
      ['[ipv6:1.2.3.4]', false],
      ['[IPv6:zz]', false],
      ['[1.2.3]', false],
    ]
    for (const [i, [helo, asFrom]] of cases.entries()) {
      expect(await client.command(`EHLO ${helo}`), helo).toMatch(/^250 /m)
      const tag = `helo literal ${i}`
      expect(await transaction(client, { to: 'bob@dest.test', data: message(tag, 'x\r\n') }), helo).toMatch(/^250 2\.0\.0 /)
      const raw = (await deliveredTagged(tag)).raw.toString('latin1')
      const received = raw.slice(0, raw.indexOf('\r\n\t'))
      const esc = helo.replace(/[[\].]/g, '\\$&')
      expect(received, helo).toMatch(asFrom ? new RegExp(`^Received: from ${esc} \\(`, 'i') : new RegExp(`^Received: from \\[127\\.0\\.0\\.1\\] \\(helo=${esc} `, 'i'))
    }
    expectHealthy(relay)
  })

  it('relays a 30 MB message byte-identical, with its body in a spool file while queued', async () => {
    // ~30 MB of 78-byte CRLF lines; every 5000th line starts with a dot (dot-stuffing both ways)
    const lines: string[] = []
    let size = 0
    for (let i = 0; size < 30 * 1024 * 1024; i++) {
      const line = `${i % 5000 === 0 ? '.' : ''}${i.toString(36).padStart(8, '0')} ${'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(2).slice(i % 7, i % 7 + 67)}\r\n`
      lines.push(line)
      size += line.length
    }
    const head = message('thirty megabytes', '')
    const sent = Buffer.from(head + lines.join(''), 'latin1')
    const wire = Buffer.from(head + lines.map((l) => (l[0] === '.' ? `.${l}` : l)).join('') + '.\r\n', 'latin1')
    lines.length = 0
    const bodySize = sent.length - head.indexOf('\r\n\r\n') - 2 // the body keeps the blank separator line

    // the MX defers the recipient until we have looked at the queue
    let hold = true
    mx.setBehaviour({ reply: { rcpt: ({ address }) => (hold && address === 'big@big.test' ? { code: 451, message: '4.3.0 come back later' } : undefined) } })

    const client = await open(relay.port)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<big@big.test>')).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const reply = client.read(15_000)
    client.send(wire)
    const queued = /^250 2\.0\.0 Ok: queued as (\w+)/.exec(await reply)
    expect(queued).not.toBeNull()
    const id = queued![1]!
    await relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id, 10_000)

    // queued: the body is a spool file of the body's exact size, and not in the queue database
    const files = spoolFiles(relay)
    expect(files).toHaveLength(1)
    expect(fs.statSync(path.join(relay.dataDir, 'spool', files[0]!)).size).toBe(bodySize)
    const dbBytes = fs
      .readdirSync(relay.dataDir)
      .filter((f) => f.startsWith('queue.sqlite'))
      .reduce((sum, f) => sum + fs.statSync(path.join(relay.dataDir, f)).size, 0)
    expect(dbBytes).toBeLessThan(5 * 1024 * 1024)
    const entry = (await relay.listQueue()).find((m) => m.id === id)
    expect(entry?.recipients[0]).toMatchObject({ address: 'big@big.test', state: 'deferred' })

    hold = false
    const msg = await eventually(() => mx.messages.find((m) => m.to.includes('big@big.test')), 15_000, 'delivery of the 30 MB message')
    const raw = msg.raw
    expect(raw.length).toBeGreaterThan(sent.length)
    expect(raw.subarray(raw.length - sent.length).equals(sent)).toBe(true)
    expect(raw.subarray(0, raw.length - sent.length).toString('latin1')).toMatch(new RegExp(`^Received: [^\\r\\n]*(\\r\\n\\t[^\\r\\n]*)*id ${id}[^]*\\r\\n$`))
    // delivered: the message left the queue and its spool file is gone
    await eventually(() => spoolFiles(relay).length === 0, 5000, 'the spool file to be removed after delivery')
    expect((await relay.listQueue()).find((m) => m.id === id)).toBeUndefined()
    expectHealthy(relay)
  })

  it('refuses a message over smtp.maxMessageSize with 552 and queues nothing', async () => {
    const small = await startRelay({
      config: { ...baseConfig(), smtp: { maxMessageSize: '1MB', reverseLookup: false }, plugins: trustLoopback },
    })
    try {
      const before = mx.messages.length + mx.refused.length
      const client = await open(small.port)
      expect(await client.command('EHLO client.test')).toMatch(/^250[- ]SIZE 1048576$/m)
      // announced too big: refused at MAIL
      expect(await client.command('MAIL FROM:<alice@sender.test> SIZE=2097152')).toMatch(/^552 /)
      // not announced: refused after the data
      const big = message('too big', `${'z'.repeat(998)}\r\n`.repeat(2 * 1024 + 100))
      expect(Buffer.byteLength(big)).toBeGreaterThan(2 * 1024 * 1024)
      expect(await transaction(client, { to: 'bob@dest.test', data: big, timeoutMs: 10_000 })).toMatch(/^552 /)
      // the session goes on: a message under the limit is accepted on it
      expect(await transaction(client, { to: 'bob@dest.test', data: message('small enough') })).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
      await deliveredTagged('small enough')
      expect(reachedMx('too big')).toEqual([])
      expect(mx.messages.length + mx.refused.length).toBe(before + 1)
      expect(await small.listQueue()).toEqual([])
      await eventually(() => spoolFiles(small).length === 0, 5000, 'no spool file left')
      expectHealthy(small)
    } finally {
      await stopRelays(small)
    }
  })
})
