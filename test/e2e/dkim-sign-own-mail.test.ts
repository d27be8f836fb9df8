// The relay's own messages (DSNs from MAILER-DAEMON@<hostname>) go through the plugins' `generated`
// hook before they are queued: dkim-sign signs them with the key of the hostname's domain, so a
// receiver applying DMARC to their From: sees an aligned signature that verifies (mailauth's
// dkimVerify against the test DNS server). A policy plugin's `queue` hook never sees them, and a
// `generated` hook that fails leaves the DSN unsigned but queued.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { promises as dnsPromises } from 'node:dns'
import path from 'node:path'
import { dkimVerify } from 'mailauth/lib/dkim/verify.js'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { submit } from '../harness/dsn.js'
import { ROOT, eventually, runCli, runCliAsync, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const FIXTURE = path.join(ROOT, 'test/fixtures/generated-hooks.plugin.ts')

let dns: TestDns
let rx: TestReceiver
let relay: RelayProcess
let subRelay: RelayProcess // hostname mx.relay.test, a key for relay.test only
let verifyResolver: dnsPromises.Resolver

async function verify(raw: Buffer | string) {
  const resolver = async (name: string, type: string) => (type === 'TXT' ? verifyResolver.resolveTxt(name) : verifyResolver.resolve(name, type))
  return (await dkimVerify(raw, { resolver: resolver as never })).results
}

/** The DKIM-Signature fields' d= and s= tags. */
function signatures(raw: Buffer): { d?: string; s?: string }[] {
  const header = raw.toString('latin1').split('\r\n\r\n')[0]!
  return header
    .split(/\r\n(?![ \t])/)
    .filter((f) => /^DKIM-Signature:/i.test(f))
    .map((f) => {
      const v = f.replace(/\r\n[ \t]/g, '')
      return { d: /[; ]d=([^;\s]+)/.exec(v)?.[1], s: /[; ]s=([^;\s]+)/.exec(v)?.[1] }
    })
}

const headerOf = (m: ReceivedMessage) => m.raw.toString('latin1').split('\r\n\r\n')[0]!

/** Sends one message from someone@dsn.test (the DSN's recipient, delivered to the receiver); its queue id. */
const send = (to: string, subject: string, rcptArgs = '', via: RelayProcess = relay): Promise<string> => submit(via, 'someone@dsn.test', [to], subject, rcptArgs)

/** The DSN the receiver got for the message with this Subject (its headers are quoted in it). */
const dsnFor = (subject: string, own = /^Subject: /m, waitMs = 20_000) =>
  eventually(
    () => rx.messages.find((m) => m.from === '' && m.to.includes('someone@dsn.test') && own.test(headerOf(m)) && m.raw.toString('latin1').includes(`\r\nSubject: ${subject}\r\n`)),
    waitMs,
    `the DSN for '${subject}'`,
  )

beforeAll(async () => {
  const keyDir = tempDir('relay-dkim-own-')
  const k = runCli(['dkim', 'keygen', 'relay.test', '--selector', 'own', '--out', keyDir])
  expect(k.code, k.stderr).toBe(0)
  const file = /^private key: (.+)$/m.exec(k.stdout)![1]!
  const value = /^ {2}value: (v=DKIM1; .+)$/m.exec(k.stdout)![1]!

  // refuses…@dest.test is refused for good (each address once: it is suppressed then); slow…@dest.test for now (a delay warning after 1 s).
  rx = await startReceiver({
    host: '127.0.0.2',
    behaviour: {
      reply: {
        rcpt: ({ address }) =>
          address?.startsWith('refuses') ? { code: 550, message: `5.1.1 <${address}>: User unknown` } : address?.startsWith('slow') ? { code: 451, message: '4.3.0 Try again later' } : undefined,
      },
    },
  })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] }, 'dsn.test': { A: ['127.0.0.2'] }, 'own._domainkey.relay.test': { TXT: [value] } })
  verifyResolver = new dnsPromises.Resolver({ timeout: 1000, tries: 1 })
  verifyResolver.setServers([dns.server])
  const config = (hostname: string) => ({
    hostname,
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: { port: rx.port, delayWarning: '1s', retry: { base: '1h', factor: 1, max: '1h' } },
    log: { level: 'debug' },
    plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }], [FIXTURE, {}], ['dkim-sign', { keys: [{ domain: 'relay.test', selector: 'own', privateKey: file }] }]],
  })
  ;[relay, subRelay] = await Promise.all([startRelay({ config: config('relay.test') }), startRelay({ config: config('mx.relay.test') })])
}, 120_000)

afterAll(async () => {
  await Promise.all([relay?.stop(), subRelay?.stop()])
  await Promise.all([dns?.close(), rx?.close()])
})

describe("the relay's own messages are DKIM-signed (the generated hook)", () => {
  it('a bounce for a 5xx: signed d=relay.test, verifies; From aligned, Message-ID, Date, Auto-Submitted', async () => {
    const subject = 'bounced, DSN signed'
    const id = await send('refuses@dest.test', subject)
    const dsn = await dsnFor(subject)
    const head = headerOf(dsn)
    expect(head).toMatch(/^From: Mail Delivery System <MAILER-DAEMON@relay\.test>$/m)
    expect(head).toMatch(/^Message-ID: <[^>]+@relay\.test>$/im)
    expect(head).toMatch(/^Date: \w{3}, \d{2} \w{3} \d{4} /m)
    expect(head).toMatch(/^Auto-Submitted: auto-replied$/m)
    expect(signatures(dsn.raw)).toEqual([{ d: 'relay.test', s: 'own' }])
    expect((await verify(dsn.raw)).map((v) => v.status.result)).toEqual(['pass'])
    // The other plugin's generated hook saw it before dkim-sign (its field is signed over too).
    expect(head).toContain(`X-Generated-Seen: dsn for ${id} to someone@dsn.test`)
  })

  it('a hostname below the signed domain (mx.relay.test, a key for relay.test only): the bounce is signed d=relay.test, aligned under relaxed DMARC', async () => {
    const subject = 'bounced by a relay named below its signing domain'
    await send('refuses-sub@dest.test', subject, '', subRelay)
    const dsn = await dsnFor(subject)
    expect(headerOf(dsn)).toMatch(/^From: Mail Delivery System <MAILER-DAEMON@mx\.relay\.test>$/m)
    expect(signatures(dsn.raw)).toEqual([{ d: 'relay.test', s: 'own' }])
    expect((await verify(dsn.raw)).map((v) => v.status.result)).toEqual(['pass'])
  })

  it('a delay warning and a success DSN (NOTIFY=SUCCESS) are signed too', async () => {
    await send('slow@dest.test', 'delayed, warning signed')
    await send('fine@dest.test', 'delivered, success DSN signed', 'NOTIFY=SUCCESS')
    for (const subject of ['delayed, warning signed', 'delivered, success DSN signed']) {
      const dsn = await dsnFor(subject)
      expect(signatures(dsn.raw)).toEqual([{ d: 'relay.test', s: 'own' }])
      expect((await verify(dsn.raw)).map((v) => v.status.result)).toEqual(['pass'])
    }
  })

  it('an operator\'s bounce with `relay queue bounce` (the CLI queues the DSN) is signed too', async () => {
    const subject = 'bounced by the operator, DSN signed'
    const id = await send('slow-op@dest.test', subject)
    const b = await runCliAsync(['queue', 'bounce', id, '--config', relay.configFile])
    expect(b.stdout, b.stderr).toMatch(/DSN to the sender queued as \w+/)
    // The CLI tells the running relay to scan (SIGUSR2): the DSN goes now, not at the 30 s idle scan.
    const dsn = await dsnFor(subject, /^Subject: Undelivered Mail Returned to Sender$/m, 10_000)
    expect(signatures(dsn.raw)).toEqual([{ d: 'relay.test', s: 'own' }])
    expect((await verify(dsn.raw)).map((v) => v.status.result)).toEqual(['pass'])
  })

  it('a generated hook that throws or rejects: the DSN is still delivered, unsigned, with a log line', async () => {
    await send('refuses-throws@dest.test', 'generated-throws')
    await send('refuses-rejects@dest.test', 'generated-rejects')
    for (const subject of ['generated-throws', 'generated-rejects']) {
      const dsn = await dsnFor(subject)
      expect(signatures(dsn.raw)).toEqual([])
      expect(headerOf(dsn)).not.toContain('X-Generated-Seen')
    }
    await relay.waitForLog((l) => l.msg === 'plugin generated-hooks failed in hook generated')
    await relay.waitForLog((l) => /queued as built/.test(String(l.msg)) && l.plugin === 'generated-hooks' && l.verdict === 'reject')
  })
})
