// No backscatter (issue 12 §3): undeliverable local recipients are refused at RCPT by the
// recipient-verify plugin (static list, or a cached call-ahead RCPT probe to the mail store that
// fails safe with 450), and DSNs for mail from untrusted clients return headers only and go to a
// (possibly forged) sender at most once per delivery.untrustedDsn.interval.
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff } from '../harness/smtp-client.js'
import { eventually, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let store: TestReceiver // 127.0.0.12: the local mail store; 550 to RCPT of nobody*@..., 451 to slow*@...
let senderMx: TestReceiver // 127.0.0.13: sender.test's MX, where DSNs go
let lmtpStore: TestReceiver // 127.0.0.15: a mail store speaking LMTP, same replies as `store`
let relay: RelayProcess
/** Accepts connections on 127.0.0.16 and never answers: a mail store that hangs. */
let silentStore: net.Server
let silentConnections = 0
let recipientFile: string
let dnsEvents: string
/** Every RCPT the mail store saw (probes and deliveries), lower-cased. */
const storeRcpts: string[] = []

const TRUSTED_CLIENT = '127.0.0.50' // in smtp.trustedNetworks; 127.0.0.1 is not

/** RCPT alone (after EHLO and MAIL), then QUIT: how the relay answers a recipient. */
async function rcptReply(address: string, from = 'someone@sender.test', port = relay.port, localAddress?: string): Promise<string> {
  const { client } = await connectRaw(port, '127.0.0.1', 5000, undefined, localAddress)
  try {
    await client.command('EHLO client.test')
    expect(await client.command(`MAIL FROM:<${from}>`)).toMatch(/^250 /)
    return await client.command(`RCPT TO:<${address}>`, 15_000)
  } finally {
    await client.command('QUIT', 1000).catch(() => undefined)
    client.close()
  }
}

/** One whole transaction with RET=FULL; the DATA reply must be 250. */
async function send(opts: { from: string; to: string; subject: string; body: string; localAddress?: string; notify?: string }): Promise<void> {
  const { client } = await connectRaw(relay.port, '127.0.0.1', 5000, undefined, opts.localAddress)
  try {
    await client.command('EHLO client.test')
    expect(await client.command(`MAIL FROM:<${opts.from}> RET=FULL`)).toMatch(/^250 /)
    expect(await client.command(`RCPT TO:<${opts.to}>${opts.notify ? ` NOTIFY=${opts.notify}` : ''}`)).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    const end = client.read(10_000)
    client.send(dotStuff(`From: <${opts.from}>\r\nTo: <${opts.to}>\r\nSubject: ${opts.subject}\r\nMessage-ID: <${opts.subject.replace(/\W/g, '')}@sender.test>\r\n\r\n${opts.body}\r\n`))
    expect(await end).toMatch(/^250 /)
    await client.command('QUIT', 1000).catch(() => undefined)
  } finally {
    client.close()
  }
}

const text = (m: ReceivedMessage) => m.raw.toString('latin1')
const dsnsTo = (address: string) => senderMx.messages.filter((m) => m.from === '' && m.to.includes(address))

/** A port on 127.0.0.14 where nothing listens (a next hop that is down). */
async function deadPort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.14', resolve))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

beforeAll(async () => {
  const storeBehaviour = {
    noStartTls: true,
    reply: {
      rcpt: ({ address }: { address?: string }) => {
        storeRcpts.push(address!.toLowerCase())
        if (/^slow/i.test(address!)) return { code: 451, message: '4.3.0 Try again later' }
        return /^nobody/i.test(address!) ? { code: 550, message: '5.1.1 <' + address + '>: User unknown in local recipient table' } : undefined
      },
    },
  }
  store = await startReceiver({ host: '127.0.0.12', behaviour: storeBehaviour })
  lmtpStore = await startReceiver({ host: '127.0.0.15', behaviour: storeBehaviour, serverOptions: { lmtp: true } })
  senderMx = await startReceiver({ host: '127.0.0.13', port: store.port, behaviour: { noStartTls: true } })
  dns = await startDns({
    'static.test': { A: ['127.0.0.12'] },
    'local.test': { A: ['127.0.0.12'] },
    'bounce.test': { A: ['127.0.0.12'] },
    'sender.test': { A: ['127.0.0.13'] },
    // Call-ahead next hops known only to this DNS server (never to the system's resolver)
    'store2.probe.test': { A: ['127.0.0.12'] },
    'broken.probe.test': 'SERVFAIL',
  })
  const dir = tempDir('relay-backscatter-')
  recipientFile = path.join(dir, 'recipients')
  fs.writeFileSync(recipientFile, '# valid recipients\nbob@static.test\n')
  const down = await deadPort()
  silentStore = net.createServer((sock) => (silentConnections++, sock.on('error', () => undefined)))
  await new Promise<void>((resolve) => silentStore.listen(0, '127.0.0.16', resolve))
  const silentPort = (silentStore.address() as net.AddressInfo).port
  // Records every dnsFailed event the relay emits, one JSON line each.
  dnsEvents = path.join(dir, 'dns-events.jsonl')
  const recorder = path.join(dir, 'record-dns-failed.plugin.mjs')
  fs.writeFileSync(
    recorder,
    `import fs from 'node:fs'\nexport default { name: 'record-dns-failed', hooks: { dnsFailed: (e) => fs.appendFileSync(${JSON.stringify(dnsEvents)}, JSON.stringify(e) + '\\n') } }\n`,
  )
  relay = await startRelay({
    dir,
    config: {
      localDomains: ['static.test', 'local.test', 'down.test', 'lmtp.test', 'bounce.test', 'named.test', 'broken.test', 'nx.test', 'bücher.test', 'silent.test'],
      dns: { servers: [dns.server], timeout: '1s' },
      smtp: { reverseLookup: false, trustedNetworks: [`${TRUSTED_CLIENT}/32`] },
      delivery: { port: store.port, connectTimeout: '2s', retry: { base: '1s', factor: 1, max: '1s' }, delayWarning: '1s' },
      plugins: [
        [recorder, {}],
        [
          'recipient-verify',
          {
            // bounce.test is left unverified: mail to it is accepted and bounced later (§ untrusted DSNs).
            domains: ['static.test', 'local.test', 'down.test', 'lmtp.test', 'named.test', 'broken.test', 'nx.test', 'Bücher.test', 'silent.test'],
            recipients: ['alice@static.test', 'anna@bücher.test'],
            file: recipientFile,
            checkInterval: '50ms',
            callAhead: {
              routes: [
                { match: { domain: 'local.test' }, kind: 'smtp', host: `127.0.0.12:${store.port}` },
                { match: { domain: 'down.test' }, kind: 'smtp', host: `127.0.0.14:${down}` },
                { match: { domain: 'lmtp.test' }, kind: 'lmtp', host: `127.0.0.15:${lmtpStore.port}` },
                // Host names: looked up with dns.servers (the test DNS server), not the system's resolver.
                { match: { domain: 'named.test' }, kind: 'smtp', host: `store2.probe.test:${store.port}` },
                { match: { domain: 'broken.test' }, kind: 'smtp', host: `broken.probe.test:${store.port}` },
                { match: { domain: 'nx.test' }, kind: 'smtp', host: [`nx.probe.test:${store.port}`] },
                { match: { domain: 'silent.test' }, kind: 'smtp', host: `127.0.0.16:${silentPort}` },
              ],
              maxConcurrent: 3,
              perClient: 2,
              perSession: 3,
              connectTimeout: '1s',
              commandTimeout: '2s',
            },
          },
        ],
      ],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, store, senderMx, lmtpStore].map((x) => x?.close()))
  silentStore?.close()
})

describe('recipient-verify: static list', () => {
  it('refuses an unknown local recipient with 550 5.1.1 at RCPT, and accepts and delivers a listed one', async () => {
    expect(await rcptReply('mallory@static.test')).toBe('550 5.1.1 <mallory@static.test>: Recipient address rejected: User unknown')
    await send({ from: 'someone@sender.test', to: 'alice@static.test', subject: 'for alice', body: 'Hello Alice.' })
    const delivered = await eventually(() => store.messages.find((m) => m.to.includes('alice@static.test')), 10_000, 'delivery to alice')
    expect(text(delivered)).toContain('Hello Alice.')
    expect(await rcptReply('ALICE@Static.Test')).toMatch(/^250 /)
  })

  it('an internationalized domain and its entries, written as U-labels, match recipients in either spelling', async () => {
    expect(await rcptReply('anna@xn--bcher-kva.test')).toMatch(/^250 /)
    expect(await rcptReply('mallory@XN--BCHER-KVA.test')).toMatch(/^550 5\.1\.1 /)
  })

  it('takes recipients from the file, and reads it again when it changes', async () => {
    expect(await rcptReply('bob@static.test')).toMatch(/^250 /)
    expect(await rcptReply('carol@static.test')).toMatch(/^550 5\.1\.1 /)
    fs.writeFileSync(recipientFile, '# valid recipients\nbob@static.test\ncarol@static.test\n')
    await eventually(async () => /^250 /.test(await rcptReply('carol@static.test')), 5000, 'carol accepted after the file changed')
  })
})

describe('recipient-verify: call-ahead', () => {
  it('refuses at RCPT what the next hop refuses, passes what it accepts, and never sends DATA to probe', async () => {
    const dataBefore = store.attempts.data
    expect(await rcptReply('nobody-here@local.test')).toMatch(/^550 5\.1\.1 <nobody-here@local\.test>: Recipient address rejected: undeliverable address: .*User unknown/)
    expect(await rcptReply('dave@local.test')).toMatch(/^250 /)
    expect(storeRcpts).toContain('nobody-here@local.test')
    expect(storeRcpts).toContain('dave@local.test')
    expect(store.attempts.data).toBe(dataBefore)
  })

  it('asks an LMTP next hop with LHLO', async () => {
    expect(await rcptReply('gina@lmtp.test')).toMatch(/^250 /)
    expect(await rcptReply('nobody-lmtp@lmtp.test')).toMatch(/^550 5\.1\.1 .*undeliverable address: host 127\.0\.0\.15:\d+ said: 550/)
    expect(lmtpStore.attempts.rcpt).toBe(2)
    expect(lmtpStore.attempts.data).toBe(0)
  })

  it('answers 450 4.1.1 when the next hop is down', async () => {
    expect(await rcptReply('erin@down.test')).toMatch(/^450 4\.1\.1 <erin@down\.test>: Recipient address rejected: unverified address: .*try again later$/)
  })

  it('reaches a next hop named only in the DNS of dns.servers (looked up with the relay resolver)', async () => {
    expect(await rcptReply('hank@named.test')).toMatch(/^250 /)
    expect(await rcptReply('nobody-named@named.test')).toMatch(/^550 5\.1\.1 .*undeliverable address: host store2\.probe\.test:\d+ said: 550/)
    expect(storeRcpts).toContain('hank@named.test')
    expect(dns.queries.some((q) => q.name === 'store2.probe.test' && q.type === 'A')).toBe(true)
  })

  it('a next hop whose name cannot be looked up: 450 4.4.3 naming it, and a dnsFailed event', async () => {
    expect(await rcptReply('ivy@broken.test')).toMatch(/^450 4\.4\.3 <ivy@broken\.test>: Recipient address rejected: unverified address: cannot look up host broken\.probe\.test: ESERVFAIL; try again later$/)
    expect(await rcptReply('jack@nx.test')).toMatch(/^450 4\.4\.3 <jack@nx\.test>: .*cannot look up host nx\.probe\.test: ENOTFOUND/)
    const events = () => (fs.existsSync(dnsEvents) ? fs.readFileSync(dnsEvents, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [])
    await eventually(() => events().find((e) => e.type === 'A' && e.code === 'ESERVFAIL'), 5000, 'a dnsFailed event for the A lookup')
    // A name without records is an answer, not a DNS failure: no event for it.
    expect(events().every((e) => e.code !== 'ENOTFOUND' && e.code !== 'ENODATA')).toBe(true)
  })

  it('at most callAhead.maxConcurrent probes at once, perClient of them one client\'s: past either a new address gets 450 at once, not a connection that hangs', async () => {
    const before = silentConnections
    // Two probes to the store that never answers, from one client, hold its perClient (2) places until commandTimeout (2 s).
    const slow = [rcptReply('hang1@silent.test'), rcptReply('hang2@silent.test')]
    await eventually(() => silentConnections >= before + 2 || undefined, 5000, 'two probes connected to the silent store')
    let started = Date.now()
    expect(await rcptReply('hang3@silent.test')).toBe('450 4.7.1 <hang3@silent.test>: Recipient address rejected: unverified address: too many verifications running; try again later')
    expect(Date.now() - started).toBeLessThan(1500)
    // Another client takes the last of the relay's maxConcurrent (3) places; a third finds none.
    slow.push(rcptReply('hang4@silent.test', undefined, relay.port, '127.0.0.60'))
    await eventually(() => silentConnections >= before + 3 || undefined, 5000, 'the other client\'s probe connected')
    started = Date.now()
    expect(await rcptReply('hang5@silent.test', undefined, relay.port, '127.0.0.61')).toBe('450 4.1.1 <hang5@silent.test>: Recipient address rejected: unverified address: too many verifications running; try again later')
    expect(Date.now() - started).toBeLessThan(1500)
    for (const r of await Promise.all(slow)) expect(r).toMatch(/^450 4\.1\.1 .*verification failed/)
    expect(silentConnections).toBe(before + 3)
    // The places are free again: a known store answers.
    expect(await rcptReply('erin@local.test')).toMatch(/^250 /)
  })

  it('at most callAhead.perSession new probes in one session: 450 4.7.1 for the rest, answers already cached still given', async () => {
    const { client } = await connectRaw(relay.port)
    try {
      await client.command('EHLO client.test')
      expect(await client.command('MAIL FROM:<someone@sender.test>')).toMatch(/^250 /)
      const replies: string[] = []
      for (const a of ['ps1@local.test', 'ps2@local.test', 'nobody-ps3@local.test', 'ps4@local.test', 'nobody-ps5@local.test', 'dave@local.test']) replies.push(await client.command(`RCPT TO:<${a}>`, 15_000))
      expect(replies.map((r) => r.slice(0, 9))).toEqual(['250 2.1.5', '250 2.1.5', '550 5.1.1', '450 4.7.1', '450 4.7.1', '250 2.1.5'])
      expect(replies[3]).toBe('450 4.7.1 <ps4@local.test>: Recipient address rejected: too many addresses to verify in one session; send the rest later')
      expect(storeRcpts.filter((a) => /ps\d@local\.test$/.test(a)).sort()).toEqual(['nobody-ps3@local.test', 'ps1@local.test', 'ps2@local.test'])
    } finally {
      client.close()
    }
    // A new session has its own budget.
    expect(await rcptReply('ps4@local.test')).toMatch(/^250 /)
  })

  it('caches the result: two sessions, one probe', async () => {
    expect(await rcptReply('frank@local.test')).toMatch(/^250 /)
    expect(await rcptReply('frank@local.test')).toMatch(/^250 /)
    expect(await rcptReply('nobody-twice@local.test')).toMatch(/^550 /)
    expect(await rcptReply('nobody-twice@local.test')).toMatch(/^550 /)
    expect(storeRcpts.filter((a) => a === 'frank@local.test')).toHaveLength(1)
    expect(storeRcpts.filter((a) => a === 'nobody-twice@local.test')).toHaveLength(1)
  })
})

describe('recipient-verify: call-ahead with workers: 2', () => {
  let workers: RelayProcess

  beforeAll(async () => {
    const silentPort = (silentStore.address() as net.AddressInfo).port
    workers = await startRelay({
      config: {
        workers: 2,
        localDomains: ['silent.test', 'local.test'],
        smtp: { reverseLookup: false },
        plugins: [
          [
            'recipient-verify',
            {
              callAhead: {
                routes: [
                  { match: { domain: 'local.test' }, kind: 'smtp', host: `127.0.0.12:${store.port}` },
                  { match: { domain: 'silent.test' }, kind: 'smtp', host: `127.0.0.16:${silentPort}` },
                ],
                maxConcurrent: 2,
                connectTimeout: '1s',
                commandTimeout: '2s',
              },
            },
          ],
        ],
      },
    })
  })

  afterAll(async () => {
    await workers?.stop()
  })

  it('callAhead.maxConcurrent holds for the whole relay: with 2 probes hanging, the next new address gets 450 at once from either worker', async () => {
    const before = silentConnections
    // Sessions go to the workers in turn: the two probes run in different workers.
    const slow = [rcptReply('whang1@silent.test', undefined, workers.port), rcptReply('whang2@silent.test', undefined, workers.port)]
    await eventually(() => silentConnections >= before + 2 || undefined, 5000, 'two probes connected to the silent store')
    for (const address of ['whang3@silent.test', 'whang4@silent.test']) {
      const started = Date.now()
      expect(await rcptReply(address, undefined, workers.port)).toBe(`450 4.1.1 <${address}>: Recipient address rejected: unverified address: too many verifications running; try again later`)
      expect(Date.now() - started).toBeLessThan(1500)
    }
    for (const r of await Promise.all(slow)) expect(r).toMatch(/^450 4\.1\.1 .*verification failed/)
    expect(silentConnections).toBe(before + 2)
    // The places are free again: a known store answers.
    expect(await rcptReply('wendy@local.test', undefined, workers.port)).toMatch(/^250 /)
  })
})

describe('DSNs for mail from untrusted clients', () => {
  it('returns headers only, whatever RET says, and at most one DSN per sender per interval', async () => {
    await send({ from: 'victim@sender.test', to: 'nobody1@bounce.test', subject: 'untrusted one', body: 'ATTACKER-CHOSEN-BODY-1' })
    const [dsn] = await eventually(() => (dsnsTo('victim@sender.test').length ? dsnsTo('victim@sender.test') : undefined), 10_000, 'the DSN to the forged sender')
    const t = text(dsn!)
    expect(t).toContain('Final-Recipient: rfc822; nobody1@bounce.test')
    expect(t).toContain('Content-Type: text/rfc822-headers')
    expect(t).toContain('Subject: untrusted one')
    expect(t).not.toContain('message/rfc822')
    expect(t).not.toContain('ATTACKER-CHOSEN-BODY-1')

    // A second one with the same sender bounces too, but no second DSN goes out.
    await send({ from: 'victim@sender.test', to: 'nobody2@bounce.test', subject: 'untrusted two', body: 'ATTACKER-CHOSEN-BODY-2' })
    await relay.waitForLog((l) => l.msg === 'bounced' && l.event === 'bounced' && l.recipient === 'nobody2@bounce.test', 10_000)
    await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('DSN dropped') && l.to === 'victim@sender.test', 5000)
    await new Promise((r) => setTimeout(r, 1000))
    expect(dsnsTo('victim@sender.test')).toHaveLength(1)
  })

  it('limits delay warnings the same way', async () => {
    await send({ from: 'victim2@sender.test', to: 'slow1@bounce.test', subject: 'untrusted slow one', body: 'SLOW-BODY-1' })
    const [warning] = await eventually(() => (dsnsTo('victim2@sender.test').length ? dsnsTo('victim2@sender.test') : undefined), 10_000, 'the delay warning')
    expect(text(warning!)).toContain('Action: delayed')
    expect(text(warning!)).not.toContain('SLOW-BODY-1')
    await send({ from: 'victim2@sender.test', to: 'slow2@bounce.test', subject: 'untrusted slow two', body: 'SLOW-BODY-2' })
    await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('DSN dropped') && l.to === 'victim2@sender.test' && l.action === 'delayed', 10_000)
    await new Promise((r) => setTimeout(r, 1000))
    expect(dsnsTo('victim2@sender.test')).toHaveLength(1)
  })

  it('limits success DSNs the same way, and logs a dropped one as what it was', async () => {
    await send({ from: 'victim3@sender.test', to: 'ok1@bounce.test', subject: 'untrusted success one', body: 'OK-BODY-1', notify: 'SUCCESS' })
    const [report] = await eventually(() => (dsnsTo('victim3@sender.test').length ? dsnsTo('victim3@sender.test') : undefined), 10_000, 'the success DSN')
    expect(text(report!)).toMatch(/Action: (delivered|relayed)/)
    await send({ from: 'victim3@sender.test', to: 'ok2@bounce.test', subject: 'untrusted success two', body: 'OK-BODY-2', notify: 'SUCCESS' })
    const dropped = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('DSN dropped') && l.to === 'victim3@sender.test', 10_000)
    expect(dropped.action).toBe('delivered')
    expect(dsnsTo('victim3@sender.test')).toHaveLength(1)
  })

  it('honours RET=FULL for a client in smtp.trustedNetworks, and does not limit its DSNs', async () => {
    await send({ from: 'friend@sender.test', to: 'nobody3@bounce.test', subject: 'trusted one', body: 'TRUSTED-BODY-1', localAddress: TRUSTED_CLIENT })
    await send({ from: 'friend@sender.test', to: 'nobody4@bounce.test', subject: 'trusted two', body: 'TRUSTED-BODY-2', localAddress: TRUSTED_CLIENT })
    const dsns = await eventually(() => (dsnsTo('friend@sender.test').length >= 2 ? dsnsTo('friend@sender.test') : undefined), 10_000, 'two DSNs to the trusted sender')
    const all = dsns.map(text).join('\n')
    expect(all).toContain('Content-Type: message/rfc822')
    expect(all).toContain('TRUSTED-BODY-1')
    expect(all).toContain('TRUSTED-BODY-2')
  })
})
