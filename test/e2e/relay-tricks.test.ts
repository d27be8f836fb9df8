// The relay-trick battery: every form of recipient address that could smuggle a foreign recipient
// past a local domain is refused (5xx, nothing queued, nothing reaches the foreign MX) when the
// client may not relay. The relay knows `local.test`; relay-acl trusts only 127.0.0.1/32, so a
// client connecting from 127.0.0.77 is untrusted. DNS and both MX hosts are real servers on
// loopback: 127.0.0.2 stands in for other.test's MX (and every other foreign domain's), 127.0.0.3
// for local.test's. The same battery from the trusted 127.0.0.1 shows what relay-acl changes
// (foreign recipients become relayable) and what the core refuses for everyone (bad syntax,
// routing in a local domain's local part).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff, type RawSmtp } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'

const TRUSTED = '127.0.0.1'
const UNTRUSTED = '127.0.0.77'

let dns: TestDns
let foreignMx: TestReceiver // 127.0.0.2: MX of other.test, x.test and every look-alike
let localMx: TestReceiver // 127.0.0.3: MX of local.test
let relay: RelayProcess // the defaults: routing in local parts refused
let routingRelay: RelayProcess // smtp.allowRoutingInLocalPart: true; postmaster: 'ops@other.test'
let noLocalRelay: RelayProcess // no localDomains at all
const clients = new Set<RawSmtp>()

/** Bad syntax: smtp-server's own check (501) or the relay's stricter one (553), status 5.1.3. */
const SYNTAX = /^5(01|53) 5\.1\.3 /
/** A foreign domain from a client that may not relay. */
const DENIED = /^550 5\.7\.1 Relaying denied/
/** Routing in a local domain's local part (the core, for every client). */
const ROUTING = /^550 5\.7\.1 Routing in the local part is not allowed/
/** From the trusted network: accepted for relaying. */
const OK = /^250 /

const long = 'a'.repeat(65)

/**
 * Each trick as the text inside `RCPT TO:`, what an untrusted client gets, and why it is a trick.
 * From the trusted network the expected reply is the same, except DENIED becomes OK (relay-acl).
 */
const TRICKS: [rcpt: string, untrusted: RegExp, why: string][] = [
  // the plain case, the baseline
  ['<user@other.test>', DENIED, 'a foreign domain'],
  ['<USER@OTHER.TEST>', DENIED, 'a foreign domain, upper case'],
  ['<postmaster@other.test>', DENIED, "a foreign domain's postmaster"],
  // percent hack: a mail store may deliver user%other.test@local.test to user@other.test
  ['<user%other.test@local.test>', ROUTING, 'percent hack'],
  ['<user%other.test@LOCAL.TEST>', ROUTING, 'percent hack, local domain upper case'],
  ['<USER%OTHER.TEST@Local.Test>', ROUTING, 'percent hack, mixed case'],
  ['<user%other.test%local.test@local.test>', ROUTING, 'percent hack, chained'],
  ['<user%25other.test@local.test>', ROUTING, 'percent hack, "URL-encoded"'],
  ['<"user%other.test"@local.test>', ROUTING, 'percent hack in a quoted local part'],
  ['<"USER%OTHER.TEST"@LOCAL.TEST>', ROUTING, 'percent hack in a quoted local part, upper case'],
  ['<user%local.test@other.test>', DENIED, 'percent hack the other way round'],
  // bang paths (UUCP)
  ['<other.test!user@local.test>', ROUTING, 'bang path'],
  ['<OTHER.TEST!User@LOCAL.test>', ROUTING, 'bang path, mixed case'],
  ['<"other.test!user"@local.test>', ROUTING, 'bang path in a quoted local part'],
  ['<other.test!user%x.test@local.test>', ROUTING, 'bang path and percent hack together'],
  ['<OTHER.TEST!USER%X.TEST@Local.Test>', ROUTING, 'bang path and percent hack, mixed case'],
  // an @ in the local part
  ['<"user@other.test"@local.test>', SYNTAX, 'quoted @ in the local part'],
  ['<"USER@OTHER.TEST"@Local.Test>', SYNTAX, 'quoted @ in the local part, mixed case'],
  ['<"user\\@other.test"@local.test>', SYNTAX, 'escaped @ in a quoted local part'],
  ['<user@other.test@local.test>', SYNTAX, 'two @, local domain last'],
  ['<user@local.test@other.test>', SYNTAX, 'two @, local domain first'],
  ['<"user@other.test">', SYNTAX, 'a quoted address with no domain'],
  ['<user\\%other.test@local.test>', SYNTAX, 'a backslash outside quotes'],
  // angle brackets inside quotes: valid RFC 5321, but no next hop could be given the address
  ['<"user<other.test>"@local.test>', SYNTAX, 'angle brackets in a quoted local part'],
  ['<"user>"@other.test>', SYNTAX, 'a closing angle bracket in a quoted local part'],
  // source routes: ignored (RFC 5321 appendix C), the mailbox after the colon is the recipient
  ['<@local.test:user@other.test>', DENIED, 'source route through the local domain'],
  ['<@LOCAL.TEST:user@OTHER.TEST>', DENIED, 'source route, upper case'],
  ['<@local.test,@other.test:user@x.test>', DENIED, 'source route with two hops'],
  ['<@local.test:user%other.test@local.test>', ROUTING, 'source route and percent hack'],
  ['<@:user@other.test>', SYNTAX, 'an empty source route'],
  // IP literals
  ['<user@[192.0.2.1]>', DENIED, 'IPv4 literal'],
  ['<user@[127.0.0.1]>', DENIED, "the relay's own address as a literal"],
  ['<user@[127.0.0.2]>', DENIED, "other.test's MX as a literal"],
  ['<user@[IPv6:::1]>', DENIED, 'IPv6 literal'],
  ['<user@[ipv6:::ffff:127.0.0.2]>', DENIED, 'IPv4-mapped IPv6 literal, lower-case tag'],
  ['<"user%other.test"@[127.0.0.1]>', DENIED, 'percent hack at an IP literal'],
  ['<user@[::1]>', SYNTAX, 'IPv6 literal without its tag'],
  ['<user@[local.test]>', SYNTAX, 'a domain in brackets'],
  ['<user@[IPv6:::1]:25>', SYNTAX, 'a literal with a port'],
  ['<user@127.0.0.2>', SYNTAX, 'a bare IP address'],
  // trailing dots, colons, unqualified names
  ['<user@local.test.>', SYNTAX, 'trailing dot'],
  ['<user@LOCAL.TEST.>', SYNTAX, 'trailing dot, upper case'],
  ['<user@other.test.>', SYNTAX, 'trailing dot, foreign'],
  ['<user@local.test..>', SYNTAX, 'two trailing dots'],
  ['<user@local.test:other.test>', SYNTAX, 'a colon after the local domain'],
  ['<user@other.test:local.test>', SYNTAX, 'a colon after the foreign domain'],
  ['<user>', SYNTAX, 'unqualified'],
  ['<USER>', SYNTAX, 'unqualified, upper case'],
  ['<"postmaster">', SYNTAX, 'quoted postmaster without a domain'],
  ['<postmaster%other.test>', SYNTAX, 'postmaster with a percent hack and no domain'],
  ['<user@local>', SYNTAX, 'a single-label domain'],
  ['<>', SYNTAX, 'the null address'],
  // lengths
  [`<${long}@local.test>`, SYNTAX, 'a 65-character local part'],
  [`<${long}%other.test@local.test>`, SYNTAX, 'a 65-character local part with a percent hack'],
  [`<user@${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}.local.test>`, SYNTAX, 'a domain over 253 characters'],
  // look-alikes of the local domain
  ['<user@local.test.other.test>', DENIED, 'the local domain as a prefix'],
  ['<user@xlocal.test>', DENIED, 'the local domain as a suffix'],
  ['<user@local.test-other.test>', DENIED, 'the local domain glued to another'],
  ['<user@sub.local.test>', DENIED, 'a subdomain of the local domain'],
  // An internationalized domain (RFC 5890) is another domain, whatever it looks like: local.xn--tst-rdd.
  ['<user@local.tеst>', DENIED, 'a Cyrillic е in the local domain (homograph)'],
]

/** Connects from `from` and says EHLO; the client is closed after the test. */
async function open(port: number, from: string): Promise<RawSmtp> {
  const { client, greeting } = await connectRaw(port, '127.0.0.1', 5000, undefined, from)
  clients.add(client)
  expect(greeting).toMatch(/^220 /)
  expect(await client.command('EHLO client.test')).toMatch(/^250 /m)
  return client
}

/** DATA on an open transaction; resolves with the reply to the final dot. */
async function data(client: RawSmtp, message: string): Promise<string> {
  expect(await client.command('DATA')).toMatch(/^354 /)
  const reply = client.read()
  client.send(dotStuff(message))
  return reply
}

const message = (tag: string) => `From: alice@sender.test\r\nTo: someone@local.test\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@sender.test>\r\n\r\nHello.\r\n`

/**
 * The battery over one session; returns the tricks whose reply was not the expected one. Every
 * expected reply is a 5xx refusal, except that a trusted client may relay to a foreign domain (250).
 */
async function battery(client: RawSmtp, trusted: boolean): Promise<string[]> {
  const mismatches: string[] = []
  expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
  for (const [rcpt, untrusted, why] of TRICKS) {
    const want = trusted && untrusted === DENIED ? OK : untrusted
    const reply = await client.command(`RCPT TO:${rcpt}`)
    if (!want.test(reply)) mismatches.push(`${rcpt} (${why}): got ${JSON.stringify(reply)}, want ${want}`)
  }
  return mismatches
}

beforeAll(async () => {
  foreignMx = await startReceiver({ host: '127.0.0.2' })
  localMx = await startReceiver({ host: '127.0.0.3', port: foreignMx.port })
  const foreign = { MX: [{ exchange: 'mx.other.test', priority: 10 }] }
  dns = await startDns({
    'other.test': foreign,
    'x.test': foreign,
    'local.test.other.test': foreign,
    'xlocal.test': foreign,
    'local.test-other.test': foreign,
    'sub.local.test': foreign,
    'mx.other.test': { A: ['127.0.0.2'] },
    'local.test': { MX: [{ exchange: 'mx.local.test', priority: 10 }] },
    'mx.local.test': { A: ['127.0.0.3'] },
    // the hostname of the relays (the harness's): its postmaster's mail goes to local.test's MX
    'relay.test': { MX: [{ exchange: 'mx.local.test', priority: 10 }] },
  })
  const config = (smtp: Record<string, unknown> = {}, localDomains = ['local.test'], more: Record<string, unknown> = {}) => ({
    localDomains,
    ...more,
    dns: { servers: [dns.server], timeout: '1s' },
    delivery: { port: foreignMx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
    // the battery is one session with many refusals: do not let the error limit end it
    smtp: { reverseLookup: false, maxErrors: 1000, ...smtp },
    plugins: [['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }]],
  })
  ;[relay, routingRelay, noLocalRelay] = await Promise.all([
    startRelay({ config: config() }),
    startRelay({ config: config({ allowRoutingInLocalPart: true }, ['local.test'], { postmaster: 'ops@other.test' }) }),
    startRelay({ config: config({}, []) }),
  ])
})

afterEach(() => {
  for (const c of clients) c.close()
  clients.clear()
})

afterAll(async () => {
  for (const c of clients) c.close()
  await Promise.all([relay?.stop(), routingRelay?.stop(), noLocalRelay?.stop()])
  await Promise.all([dns?.close(), foreignMx?.close(), localMx?.close()])
})

describe('relay tricks', () => {
  it('refuses every trick from an untrusted client with a 5xx; nothing is queued or leaves the relay', async () => {
    const client = await open(relay.port, UNTRUSTED)
    expect(await battery(client, false)).toEqual([])
    // not a single recipient was taken: there is no transaction to send data for
    expect(await client.command('DATA')).toMatch(/^503 /)
    expect(await client.command('QUIT')).toMatch(/^221 /)

    expect(await relay.listQueue()).toEqual([])
    // nothing went out: no connection to either MX, and no one asked DNS where other.test is
    await new Promise((r) => setTimeout(r, 300))
    expect(foreignMx.connections).toBe(0)
    expect(localMx.connections).toBe(0)
    expect(dns.queries).toEqual([])
    // every refusal is logged by the relay as a refused command, not a crash
    expect(relay.logs.filter((l) => l.level >= 50)).toEqual([])
  })

  it('from the trusted network, foreign recipients relay; syntax and local-part routing are still refused', async () => {
    const client = await open(relay.port, TRUSTED)
    expect(await battery(client, true)).toEqual([])
    // nothing was sent: the transaction is dropped
    expect(await client.command('RSET')).toMatch(/^250 /)
    expect(await relay.listQueue()).toEqual([])

    // the legitimate ones really relay: a plain foreign address, and one behind a source route
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<user@other.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<@local.test:second@OTHER.TEST>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<user%other.test@local.test>')).toMatch(ROUTING)
    expect(await data(client, message('trusted relays'))).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const [got] = await foreignMx.waitForMessages(1, 10_000)
    expect(got!.to.map((a) => a.toLowerCase())).toEqual(['user@other.test', 'second@other.test'])
    expect(got!.raw.toString()).toContain('Subject: trusted relays\r\n')
    expect(localMx.connections).toBe(0)
  })

  it('an untrusted client reaches local mailboxes, <postmaster> included, and nothing else', async () => {
    const before = foreignMx.messages.length
    const client = await open(relay.port, UNTRUSTED)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    // RFC 5321 4.1.1.3: <postmaster> without a domain must be accepted: the first local domain's
    expect(await client.command('RCPT TO:<Postmaster>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<postmaster@LOCAL.TEST>')).toMatch(/^250 /) // the same mailbox: one copy
    expect(await client.command('RCPT TO:<Carol@LOCAL.TEST>')).toMatch(/^250 /)
    // a source route is ignored: this is bob@local.test, whatever host it names
    expect(await client.command('RCPT TO:<@other.test:bob@local.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<"dave"@local.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<user@other.test>')).toMatch(DENIED)
    expect(await data(client, message('local only'))).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const [got] = await localMx.waitForMessages(1, 10_000)
    expect(got!.to.map((a) => a.toLowerCase()).sort()).toEqual(['"dave"@local.test', 'bob@local.test', 'carol@local.test', 'postmaster@local.test'])
    expect(got!.raw.toString()).toContain('Subject: local only\r\n')
    await new Promise((r) => setTimeout(r, 300))
    expect(foreignMx.messages.length).toBe(before)
    await eventually(async () => (await relay.listQueue()).length === 0, 5000, 'the queue to empty')
  })

  it('<postmaster> on a relay with no local domain is the postmaster of its hostname (RFC 5321 4.5.1, as Postfix appends $myorigin): taken and delivered', async () => {
    const before = localMx.messages.length
    const client = await open(noLocalRelay.port, UNTRUSTED)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<postmaster>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<PostMaster@Relay.Test>')).toMatch(/^250 /) // the same mailbox: one copy
    expect(await client.command('RCPT TO:<someone@relay.test>')).toMatch(DENIED) // only the postmaster of the hostname
    expect(await data(client, message('to the postmaster'))).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const all = await localMx.waitForMessages(before + 1, 10_000)
    expect(all.at(-1)!.to.map((a) => a.toLowerCase())).toEqual(['postmaster@relay.test'])
    expect(all.at(-1)!.raw.toString()).toContain('Subject: to the postmaster\r\n')
    await eventually(async () => (await noLocalRelay.listQueue()).length === 0, 5000, 'the queue to empty')
  })

  it('config postmaster: <postmaster> and <postmaster@hostname> go to that address; the address itself is no open door', async () => {
    const before = foreignMx.messages.length
    const client = await open(routingRelay.port, UNTRUSTED)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<ops@other.test>')).toMatch(DENIED)
    expect(await client.command('RCPT TO:<postmaster>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<postmaster@relay.test>')).toMatch(/^250 /)
    expect(await data(client, message('to the configured postmaster'))).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const all = await foreignMx.waitForMessages(before + 1, 10_000)
    expect(all.at(-1)!.to).toEqual(['ops@other.test'])
    await eventually(async () => (await routingRelay.listQueue()).length === 0, 5000, 'the queue to empty')
  })

  it('routing characters in their full-width and small forms (SMTPUTF8) are routing too: a store that maps widths (PRECIS, NFKC) reads them as % ! @', async () => {
    const client = await open(relay.port, UNTRUSTED)
    expect(await client.command('MAIL FROM:<alice@sender.test> SMTPUTF8')).toMatch(/^250 /)
    for (const rcpt of ['user％other.test@local.test', 'user﹪other.test@local.test', 'other.test！user@local.test', 'other.test﹗user@local.test', '"user＠other.test"@local.test', 'user﹫other.test@local.test']) {
      expect(await client.command(`RCPT TO:<${rcpt}>`), rcpt).toMatch(ROUTING)
    }
    // UTF-8 local parts without such characters are still taken
    expect(await client.command('RCPT TO:<jürgen@local.test>')).toMatch(/^250 /)
    expect(await client.command('RSET')).toMatch(/^250 /)
    expect(await relay.listQueue()).toEqual([])
  })

  it('an address no next hop could be given (< or > in a quoted local part) is refused at MAIL and RCPT, not queued to wait out its lifetime', async () => {
    const before = localMx.messages.length
    const client = await open(relay.port, UNTRUSTED)
    // As a sender it would hold every recipient of the message; as a recipient, the others of its transaction.
    expect(await client.command('MAIL FROM:<"x<y"@sender.test>')).toMatch(/^5\d\d 5\.1\.7 /)
    expect(await client.command('MAIL FROM:<"x>"@sender.test>')).toMatch(/^5\d\d 5\.1\.7 /)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<"x<y"@local.test>')).toMatch(SYNTAX)
    expect(await client.command('RCPT TO:<"<x>"@local.test>')).toMatch(SYNTAX)
    expect(await client.command('RCPT TO:<"x.y"@local.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<erin@local.test>')).toMatch(/^250 /)
    expect(await data(client, message('brackets'))).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const all = await localMx.waitForMessages(before + 1, 10_000)
    expect(all.at(-1)!.to).toEqual(['"x.y"@local.test', 'erin@local.test'])
    await eventually(async () => (await relay.listQueue()).length === 0, 5000, 'the queue to empty')
  })

  it('with smtp.allowRoutingInLocalPart, routing addresses reach the local domain as they are, never the foreign one', async () => {
    const before = foreignMx.connections
    const localBefore = localMx.messages.length
    const client = await open(routingRelay.port, UNTRUSTED)
    expect(await client.command('MAIL FROM:<alice@sender.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<user%other.test@local.test>')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<other.test!user@local.test>')).toMatch(/^250 /)
    // everything else in the battery is refused as before
    expect(await client.command('RCPT TO:<@local.test:user@other.test>')).toMatch(DENIED)
    expect(await client.command('RCPT TO:<"user@other.test"@local.test>')).toMatch(SYNTAX)
    expect(await data(client, message('routing allowed'))).toMatch(/^250 2\.0\.0 Ok: queued as \w+/)
    const all = await localMx.waitForMessages(localBefore + 1, 10_000)
    expect(all.at(-1)!.to).toEqual(['user%other.test@local.test', 'other.test!user@local.test'])
    await new Promise((r) => setTimeout(r, 300))
    expect(foreignMx.connections).toBe(before)
  })
})
