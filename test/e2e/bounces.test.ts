// Bounce intelligence: failure categories (in events and the queue), the suppression list (hard
// bounces refused at RCPT, `relay suppression`), delay warnings, and the DSN extension (RFC 3461:
// NOTIFY, RET, ENVID, ORCPT honoured in our DSNs and passed on to a next hop that offers DSN).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff } from '../harness/smtp-client.js'
import { eventually, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'
import { classify, isHardBounce } from '../../core/delivery/classify.js'

let dns: TestDns
let rx: TestReceiver // 127.0.0.2 dest.test: replies per recipient from `rcptReplies`; no DSN offered
let dsnRx: TestReceiver // 127.0.0.3 dsn.test: offers DSN (hideDSN: false)
let slowRx: TestReceiver // 127.0.0.4 slow.test: 451 to every RCPT until told otherwise
let senderRx: TestReceiver // 127.0.0.6 sender.test: where DSNs go
let busyRx: TestReceiver // 127.0.0.5 busy.test: 421 4.7.0 at the greeting until told otherwise
let busy = true
let relay: RelayProcess

const rcptReplies: Record<string, { code: number; message: string }> = {}
let slowAccepts = false

const message = (subject: string, body = 'Hello.\r\n') =>
  `From: Alice <alice@sender.test>\r\nTo: someone@dest.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\n\r\n${body}`

/** One SMTP transaction with ESMTP parameters on MAIL and RCPT, as raw commands. */
async function submit(opts: { from?: string; mailArgs?: string; rcpts: (string | [string, string])[]; data: string }) {
  const { client } = await connectRaw(relay.port)
  try {
    expect(await client.command('EHLO client.test')).toMatch(/^250[ -]/)
    const mail = await client.command(`MAIL FROM:<${opts.from ?? 'alice@sender.test'}>${opts.mailArgs ? ` ${opts.mailArgs}` : ''}`)
    expect(mail).toMatch(/^250 /)
    const rcpt: string[] = []
    for (const r of opts.rcpts) {
      const [address, args] = typeof r === 'string' ? [r, ''] : r
      rcpt.push(await client.command(`RCPT TO:<${address}>${args ? ` ${args}` : ''}`))
    }
    expect(await client.command('DATA')).toMatch(/^354 /)
    const end = client.read(10_000)
    client.send(dotStuff(opts.data))
    const reply = await end
    expect(reply).toMatch(/^250 /)
    await client.command('QUIT', 1000).catch(() => undefined)
    return { rcpt, reply, id: /queued as (\w+)/.exec(reply)![1]! }
  } finally {
    client.close()
  }
}

/** RCPT alone (then RSET): how the relay answers a recipient now. */
async function rcptReply(address: string): Promise<string> {
  const { client } = await connectRaw(relay.port)
  try {
    await client.command('EHLO client.test')
    await client.command('MAIL FROM:<alice@sender.test>')
    return await client.command(`RCPT TO:<${address}>`)
  } finally {
    await client.command('QUIT', 1000).catch(() => undefined)
    client.close()
  }
}

const text = (m: ReceivedMessage) => m.raw.toString('latin1')
/** DSNs at the sender's MX that report on `address` ('failed' or 'delayed'). */
const dsnsFor = (address: string, action: 'failed' | 'delayed') =>
  senderRx.messages.filter((m) => text(m).includes(`Final-Recipient: rfc822; ${address}\r\n`) && text(m).includes(`Action: ${action}\r\n`))
const deliveryStatus = (m: ReceivedMessage) => {
  const t = text(m)
  const start = t.indexOf('Content-Type: message/delivery-status')
  return t.slice(start, t.indexOf('\r\n--', start))
}
/** The CLI on the running relay's config; async, so runs that do not depend on each other go at once. */
const cli = (...args: string[]) => runCliAsync([...args, '--config', relay.configFile])
type Listed = { id: string; recipients: { address: string; state: string; category?: string }[] }[]
const queueList = async () => {
  const r = await cli('queue', 'list', '--json')
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout) as Listed
}

beforeAll(async () => {
  rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true, reply: { rcpt: ({ address }) => rcptReplies[address!] } } })
  const port = rx.port
  dsnRx = await startReceiver({ host: '127.0.0.3', port, behaviour: { noStartTls: true }, serverOptions: { hideDSN: false } })
  slowRx = await startReceiver({
    host: '127.0.0.4',
    port,
    behaviour: { noStartTls: true, reply: { rcpt: () => (slowAccepts ? undefined : { code: 451, message: '4.3.0 Temporary local problem, try again' }) } },
  })
  senderRx = await startReceiver({ host: '127.0.0.6', port, behaviour: { noStartTls: true } })
  busyRx = await startReceiver({
    host: '127.0.0.5',
    port,
    behaviour: { noStartTls: true, reply: { connect: () => (busy ? { code: 421, message: '4.7.0 Too many connections, slow down' } : undefined) } },
  })
  dns = await startDns({
    'dest.test': { A: ['127.0.0.2'] },
    'dsn.test': { A: ['127.0.0.3'] },
    'slow.test': { A: ['127.0.0.4'] },
    'busy.test': { A: ['127.0.0.5'] },
    'sender.test': { A: ['127.0.0.6'] },
    'nowhere.test': 'NXDOMAIN',
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      // Clients here are trusted (smtp.trustedNetworks): DSNs to their senders follow RET and are not limited.
      smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.0/8'] },
      // A "slow down" (421 4.7.0, 451 4.7.0) pauses its domain 1 s, not the default 5 s.
      delivery: { port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s', delayWarning: '1s', suppression: { enabled: true, ttl: '30d' }, throttle: { backoff: { base: '1s', max: '1s' } } },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, rx, dsnRx, slowRx, senderRx, busyRx].map((x) => x?.close()))
})

describe('failure categories', () => {
  it('classifies a table of replies and local results', () => {
    const table: [string, string, string?][] = [
      ['550 5.1.1 <a@b.test>: Recipient address rejected: User unknown in virtual mailbox table', 'bad-mailbox'],
      ['550 5.1.0 Address rejected', 'bad-mailbox'],
      ['550 5.1.1 spamtrap@b.test: no such user', 'bad-mailbox'], // the code wins over "spam" in the text
      ['550 Requested action not taken: mailbox unavailable', 'bad-mailbox'],
      ['550 5.7.1 User unknown', 'bad-mailbox'],
      ['552 5.2.2 The email account that you tried to reach is over quota', 'mailbox-full'],
      ['452 4.2.2 Mailbox full', 'mailbox-full'],
      ['550 5.7.1 Message rejected as spam', 'policy'],
      ['554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org', 'policy'],
      ['550 5.7.26 Unauthenticated email from b.test is not accepted due to DMARC policy', 'policy'],
      ['550 Your IP is on our blacklist', 'policy'],
      ['421 4.7.0 Try again later, closing connection', 'throttled'],
      ['451 4.7.0 Temporary deferral', 'throttled'],
      ['421 Too many concurrent connections from your host', 'throttled'],
      ['450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages', 'throttled'],
      ['451 4.7.1 Greylisted, please try again in 300 seconds', 'throttled'],
      ['4.4.3 DNS MX lookup for x.test failed: queryMx ESERVFAIL x.test', 'dns'],
      ['5.1.2 Domain x.test does not exist (NXDOMAIN)', 'dns'],
      ['5.1.10 Domain x.test does not accept mail (null MX)', 'dns'],
      ['4.4.4 No address found for the MX hosts of x.test (mx.x.test)', 'dns'],
      ['4.4.1 Host mx.x.test[192.0.2.1]:25 unreachable: ETLS: Client network socket disconnected before secure TLS connection was established', 'tls'],
      ['454 4.7.5 TLS not available due to local problem', 'tls'],
      ['530 5.7.0 Must issue a STARTTLS command first', 'tls'],
      ['4.4.1 Host mx.x.test[192.0.2.1]:25 unreachable: 421 4.7.0 mx.x.test too many connections', 'throttled'],
      ['4.4.1 Host mx.x.test[192.0.2.1]:25 unreachable: connect ECONNREFUSED 192.0.2.1:25', 'other'],
      ['451 4.3.0 Temporary local problem, try again', 'other'],
      ['554 5.0.0 Refused by some-plugin', 'other'],
    ]
    for (const [reply, category] of table) expect([reply, classify(reply)]).toEqual([reply, category])
    // Only a permanent "no such mailbox" is a hard bounce (suppressed).
    expect(isHardBounce('bad-mailbox', '550 5.1.1 <a@b.test>: User unknown')).toBe(true)
    expect(isHardBounce('bad-mailbox', '450 4.1.1 <a@b.test>: Recipient address lookup failed')).toBe(false)
    expect(isHardBounce('mailbox-full', '552 5.2.2 over quota')).toBe(false)
    expect(isHardBounce('policy', '550 5.7.1 spam')).toBe(false)
  })

  it('records the category in events and in `relay queue list`: mailbox full, policy, throttled (421 4.7.0 greeting, 451 4.7.0), DNS', async () => {
    rcptReplies['full@dest.test'] = { code: 552, message: '5.2.2 <full@dest.test>: Mailbox full' }
    rcptReplies['spam@dest.test'] = { code: 550, message: '5.7.1 Message rejected as spam' }
    rcptReplies['busy451@dest.test'] = { code: 451, message: '4.7.0 Try again later' }
    const a = await submit({ rcpts: ['full@dest.test', 'spam@dest.test', 'x@nowhere.test'], data: message('categories') })
    const b = await submit({ rcpts: ['someone@busy.test'], data: message('busy 421') })
    const c = await submit({ rcpts: ['busy451@dest.test'], data: message('busy 451') })

    const bounced = async (to: string) => relay.waitForLog((l) => l.event === 'bounced' && l.recipient === to)
    const deferred = async (to: string) => relay.waitForLog((l) => l.event === 'deferred' && l.recipient === to)
    // 552 to RCPT is taken as 452 (RFC 5321 §4.5.3.1.10, as Postfix does): deferred, not bounced.
    expect(await deferred('full@dest.test')).toMatchObject({ category: 'mailbox-full', response: expect.stringMatching(/^552 5\.2\.2 /) })
    expect(await bounced('spam@dest.test')).toMatchObject({ category: 'policy' })
    expect(await bounced('x@nowhere.test')).toMatchObject({ category: 'dns', response: expect.stringMatching(/^5\.1\.2 /) })
    expect(await deferred('someone@busy.test')).toMatchObject({ category: 'throttled', response: expect.stringMatching(/refused to talk to me: 421 4\.7\.0 Too many connections/) })
    expect(await deferred('busy451@dest.test')).toMatchObject({ category: 'throttled', response: expect.stringMatching(/^451 4\.7\.0 /) })

    // The queue keeps the category with each deferred recipient.
    const [entries, plain, suppressed] = await Promise.all([queueList(), cli('queue', 'list'), cli('suppression', 'list', '--json')])
    expect(entries.find((e) => e.id === b.id)?.recipients[0]).toMatchObject({ address: 'someone@busy.test', state: 'deferred', category: 'throttled' })
    expect(entries.find((e) => e.id === c.id)?.recipients[0]).toMatchObject({ address: 'busy451@dest.test', state: 'deferred', category: 'throttled' })
    expect(entries.find((e) => e.id === a.id)?.recipients.find((r) => r.address === 'full@dest.test')).toMatchObject({ state: 'deferred', category: 'mailbox-full' })
    expect(plain.stdout).toMatch(/deferred +<busy451@dest\.test> .*last: 451 4\.7\.0 Try again later {2}category: throttled$/m)

    // None of these is a hard bounce: nothing was suppressed.
    const list = JSON.parse(suppressed.stdout) as { address: string }[]
    expect(list.map((s) => s.address)).not.toContain('full@dest.test')
    expect(list.map((s) => s.address)).not.toContain('spam@dest.test')

    // Let the throttled ones through so they leave the queue.
    busy = false
    delete rcptReplies['busy451@dest.test']
    delete rcptReplies['full@dest.test']
    await eventually(
      () => busyRx.messages.some((m) => m.to.includes('someone@busy.test')) && ['busy451@dest.test', 'full@dest.test'].every((to) => rx.messages.some((m) => m.to.includes(to))),
      10_000,
      'deferred recipients delivered',
    )
  })
})

describe('suppression list', () => {
  it('suppresses a 550 5.1.1 address (category bad-mailbox in event and queue), refuses it at RCPT, and `relay suppression` manages the list while the relay runs', async () => {
    rcptReplies['gone@dest.test'] = { code: 550, message: '5.1.1 <gone@dest.test>: User unknown' }
    rcptReplies['later@dest.test'] = { code: 451, message: '4.3.0 Try again' }
    const before = Date.now()
    const { id } = await submit({ rcpts: ['gone@dest.test', 'later@dest.test'], data: message('hard bounce') })

    const ev = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'gone@dest.test')
    expect(ev).toMatchObject({ category: 'bad-mailbox', queueId: id, response: '550 5.1.1 <gone@dest.test>: User unknown' })
    const entry = await eventually(async () => (await queueList()).find((e) => e.id === id))
    expect(entry.recipients).toEqual([
      expect.objectContaining({ address: 'gone@dest.test', state: 'bounced', category: 'bad-mailbox' }),
      expect.objectContaining({ address: 'later@dest.test', state: 'deferred', category: 'other' }),
    ])
    await relay.waitForLog((l) => l.msg === 'suppressed gone@dest.test')

    // Listed with reason, source queue id and an expiry of about 30 days.
    const [listedJson, listedText] = await Promise.all([cli('suppression', 'list', '--json'), cli('suppression', 'list')])
    const listed = JSON.parse(listedJson.stdout) as { address: string; reason: string; source: string; createdAt: number; expiresAt: number }[]
    const s = listed.find((x) => x.address === 'gone@dest.test')!
    expect(s).toMatchObject({ reason: '550 5.1.1 <gone@dest.test>: User unknown', source: id })
    expect(s.expiresAt - s.createdAt).toBe(30 * 86_400_000)
    expect(s.createdAt).toBeGreaterThanOrEqual(before)
    expect(listedText.stdout).toMatch(/^gone@dest\.test .*source \w+ .*reason: 550 5\.1\.1/m)

    // A new RCPT to it (any case) is refused with the reason.
    expect(await rcptReply('gone@dest.test')).toBe('550 5.1.1 <gone@dest.test>: recipient suppressed (550 5.1.1 <gone@dest.test>: User unknown)')
    expect(await rcptReply('Gone@Dest.test')).toMatch(/^550 5\.1\.1 <Gone@Dest\.test>: recipient suppressed/)

    // Removed with the CLI: the running relay accepts it again at once.
    const removed = await cli('suppression', 'remove', 'gone@dest.test')
    expect(removed.code).toBe(0)
    expect(removed.stdout).toContain('removed gone@dest.test')
    const [again, removedAgain] = await Promise.all([rcptReply('gone@dest.test'), cli('suppression', 'remove', 'gone@dest.test')])
    expect(again).toMatch(/^250 /)
    expect(removedAgain.code).toBe(1)

    // Added by hand, with a reason and a TTL.
    const added = await cli('suppression', 'add', 'complainer@dest.test', '--reason', 'asked to stop', '--ttl', '1h')
    expect(added.code, added.stderr).toBe(0)
    expect(await rcptReply('complainer@dest.test')).toBe('550 5.1.1 <complainer@dest.test>: recipient suppressed (asked to stop)')
    const [manualList, addedBad] = await Promise.all([cli('suppression', 'list', '--json'), cli('suppression', 'add', 'not-an-address', '--config', relay.configFile)])
    const manual = (JSON.parse(manualList.stdout) as { address: string; source: string; createdAt: number; expiresAt: number }[]).find((x) => x.address === 'complainer@dest.test')!
    expect(manual.source).toBe('cli')
    expect(manual.expiresAt - manual.createdAt).toBe(3_600_000)
    expect(addedBad.code).toBe(2)
    expect((await cli('suppression', 'remove', 'complainer@dest.test')).code).toBe(0)
    expect(await rcptReply('complainer@dest.test')).toMatch(/^250 /)

    delete rcptReplies['later@dest.test']
  })
})

describe('long remote replies', () => {
  /** Every line of a message, CRLF excluded, in octets. */
  const longestLine = (m: ReceivedMessage) => Math.max(...m.raw.toString('latin1').split('\r\n').map((l) => l.length))
  /** A delivery-status field, unfolded. */
  const field = (status: string, name: string) => new RegExp(`^${name}: (.*(?:\r\n[ \t].*)*)`, 'm').exec(status)?.[1]?.replace(/\r\n(?=[ \t])/g, '')

  it('a 100 KB 550 at RCPT and a 100 KB 451: the DSN and the delay warning keep every line within 998 octets; events, logs, the queue and the suppression list a bounded line', async () => {
    const filler = 'this reply goes on and on '.repeat(4000) // ~104 KB
    rcptReplies['huge@dest.test'] = { code: 550, message: `5.1.1 <huge@dest.test>: HUGE-REFUSAL-START ${filler}HUGE-REFUSAL-END` }
    rcptReplies['huge-later@dest.test'] = { code: 451, message: `4.3.0 HUGE-DEFERRAL-START ${'x'.repeat(100_000)} HUGE-DEFERRAL-END` }
    const { id } = await submit({ rcpts: ['huge@dest.test', 'huge-later@dest.test'], data: message('huge replies') })

    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'huge@dest.test')
    const deferred = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'huge-later@dest.test')
    for (const [ev, start] of [[bounced, '550 5.1.1 <huge@dest.test>: HUGE-REFUSAL-START this reply goes on'], [deferred, '451 4.3.0 HUGE-DEFERRAL-START xxxx']] as const) {
      const response = ev.response as string
      expect(response.startsWith(start), response.slice(0, 100)).toBe(true)
      expect(response.length).toBeLessThanOrEqual(1000)
      expect(response).toMatch(/ \[truncated\]$/)
    }
    // No log line carries the whole reply.
    expect(relay.logs.filter((l) => /HUGE-(REFUSAL|DEFERRAL)-END/.test(JSON.stringify(l)))).toEqual([])

    // The failure DSN: every line within the limit, a Diagnostic-Code (folded) with the start of the reply.
    const [dsn] = await eventually(() => (dsnsFor('huge@dest.test', 'failed').length ? dsnsFor('huge@dest.test', 'failed') : undefined), 10_000, 'failure DSN')
    expect(longestLine(dsn!)).toBeLessThanOrEqual(998)
    const diagnostic = field(deliveryStatus(dsn!), 'Diagnostic-Code')!
    expect(diagnostic).toMatch(/^smtp; 550 5\.1\.1 <huge@dest\.test>: HUGE-REFUSAL-START this reply goes on/)
    expect(diagnostic.length).toBeLessThan(1100)
    expect(text(dsn!)).not.toContain('HUGE-REFUSAL-END')

    // The delay warning for the one still deferred: the same.
    const [warning] = await eventually(() => (dsnsFor('huge-later@dest.test', 'delayed').length ? dsnsFor('huge-later@dest.test', 'delayed') : undefined), 10_000, 'delay warning')
    expect(longestLine(warning!)).toBeLessThanOrEqual(998)
    expect(field(deliveryStatus(warning!), 'Diagnostic-Code')).toMatch(/^smtp; 451 4\.3\.0 HUGE-DEFERRAL-START x+/)
    expect(text(warning!)).not.toContain('HUGE-DEFERRAL-END')

    // The queue keeps the bounded form: `queue show` (text and --json), `queue list`.
    const [show, showJson, listText] = await Promise.all([cli('queue', 'show', id), cli('queue', 'show', id, '--json'), cli('queue', 'list')])
    expect(show.code, show.stderr).toBe(0)
    expect(show.stdout).toMatch(/\n {2}huge@dest\.test +bounced +1 +\S+ +550 5\.1\.1 <huge@dest\.test>: HUGE-REFUSAL-START /)
    for (const line of show.stdout.split('\n')) expect(line.length).toBeLessThan(1200)
    const detail = JSON.parse(showJson.stdout) as { recipients: { address: string; lastResponse?: string; history: { response: string }[] }[] }
    for (const r of detail.recipients) {
      expect(r.lastResponse!.length).toBeLessThanOrEqual(1000)
      for (const h of r.history) expect(h.response.length).toBeLessThanOrEqual(1000)
    }
    for (const line of listText.stdout.split('\n')) expect(line.length).toBeLessThan(1200)

    // A hard bounce: suppressed, with a bounded reason.
    await relay.waitForLog((l) => l.msg === 'suppressed huge@dest.test')
    const listed = (JSON.parse((await cli('suppression', 'list', '--json')).stdout) as { address: string; reason: string }[]).find((x) => x.address === 'huge@dest.test')!
    expect(listed.reason).toMatch(/^550 5\.1\.1 <huge@dest\.test>: HUGE-REFUSAL-START /)
    expect(listed.reason.length).toBeLessThanOrEqual(1000)

    expect((await cli('suppression', 'remove', 'huge@dest.test')).code).toBe(0)
    // huge-later is retried every second: a delete during an attempt is refused (exit 1), so until one falls between attempts.
    await eventually(async () => (await cli('queue', 'delete', id)).code === 0, 15_000, 'deleted between attempts')
    delete rcptReplies['huge@dest.test']
    delete rcptReplies['huge-later@dest.test']
  })
})

describe('delay warnings', () => {
  it('sends one DSN with Action: delayed after delayWarning, only for recipients that asked for DELAY (or gave no NOTIFY), never for the null sender', async () => {
    const nullSender = await submit({ from: '', rcpts: ['bounce-wait@slow.test'], data: message('slow bounce') })
    const { id } = await submit({
      rcpts: ['wait@slow.test', ['nodelay@slow.test', 'NOTIFY=FAILURE']],
      data: message('slow one'),
    })
    const [warning] = await eventually(() => (dsnsFor('wait@slow.test', 'delayed').length ? dsnsFor('wait@slow.test', 'delayed') : undefined), 10_000, 'delay warning')
    const t = text(warning!)
    expect(warning!.from).toBe('')
    expect(warning!.to).toEqual(['alice@sender.test'])
    expect(t).toMatch(/^Subject: Delayed Mail \(still being retried\)$/m)
    const status = deliveryStatus(warning!)
    expect(status).toMatch(/^Action: delayed$/m)
    expect(status).toMatch(/^Status: 4\.3\.0$/m)
    expect(status).toMatch(/^Will-Retry-Until: /m)
    expect(status).toMatch(/^Diagnostic-Code: smtp; 451 4\.3\.0 Temporary local problem, try again$/m)
    expect(status).not.toContain('nodelay@slow.test')
    expect(t).toContain('Content-Type: text/rfc822-headers')
    expect(t).toContain(`id ${id}`)
    // Once per message: more retries (and delay checks) go by without a second warning.
    // Both messages go through two more attempts (1 s apart, past delayWarning), read from the relay's own 'deferred' lines.
    const attemptsSoFar = (rcpt: string) => Math.max(0, ...relay.logs.filter((l) => l.event === 'deferred' && l.recipient === rcpt).map((l) => l.attempts as number))
    const twoMore = (rcpt: string, past = attemptsSoFar(rcpt)) => relay.waitForLog((l) => l.event === 'deferred' && l.recipient === rcpt && (l.attempts as number) >= Math.max(3, past + 2), 10_000)
    await Promise.all([twoMore('wait@slow.test'), twoMore('bounce-wait@slow.test')])
    expect(dsnsFor('wait@slow.test', 'delayed')).toHaveLength(1)
    expect(dsnsFor('nodelay@slow.test', 'delayed')).toHaveLength(0)
    await relay.waitForLog((l) => l.msg === 'delay warning queued' && l.dsnFor === id, 5000)
    expect(relay.logs.filter((l) => l.msg === 'delay warning queued' && l.dsnFor === id)).toHaveLength(1)
    expect(relay.logs.some((l) => l.msg === 'delay warning queued' && l.dsnFor === nullSender.id)).toBe(false)
    slowAccepts = true
    await eventually(() => slowRx.messages.some((m) => m.to.includes('wait@slow.test')), 10_000, 'slow message delivered')
  })
})

describe('DSN extension (RFC 3461)', () => {
  it('advertises DSN', async () => {
    const { client } = await connectRaw(relay.port)
    expect(await client.command('EHLO client.test')).toMatch(/^250[ -]DSN$/m)
    client.close()
  })

  it('honours NOTIFY: NEVER and SUCCESS,DELAY get no failure DSN; the default does', async () => {
    for (const a of ['never@dest.test', 'succdelay@dest.test', 'failme@dest.test']) rcptReplies[a] = { code: 550, message: '5.7.1 Not wanted here' }
    await submit({
      rcpts: [['never@dest.test', 'NOTIFY=NEVER'], ['succdelay@dest.test', 'NOTIFY=SUCCESS,DELAY'], 'failme@dest.test'],
      data: message('notify'),
    })
    const [dsn] = await eventually(() => (dsnsFor('failme@dest.test', 'failed').length ? dsnsFor('failme@dest.test', 'failed') : undefined), 10_000, 'failure DSN')
    await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'never@dest.test')
    await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'succdelay@dest.test')
    await new Promise((r) => setTimeout(r, 500))
    const status = deliveryStatus(dsn!)
    expect(status).not.toContain('never@dest.test')
    expect(status).not.toContain('succdelay@dest.test')
    expect(senderRx.messages.filter((m) => /never@dest\.test|succdelay@dest\.test/.test(text(m)))).toHaveLength(0)
    // RET absent: headers only.
    expect(text(dsn!)).toContain('Content-Type: text/rfc822-headers')
    expect(text(dsn!)).not.toContain('Content-Type: message/rfc822')
  })

  it('RET=FULL returns the whole message (message/rfc822); ENVID and ORCPT appear in the DSN; a message over 1 MB comes back as headers', async () => {
    rcptReplies['ret@dest.test'] = { code: 550, message: '5.7.1 Not wanted here' }
    rcptReplies['big@dest.test'] = { code: 550, message: '5.7.1 Not wanted here' }
    await submit({
      mailArgs: 'RET=FULL ENVID=env+2B123',
      rcpts: [['ret@dest.test', 'ORCPT=rfc822;original@sender.test']],
      data: message('full return', 'The body token QX-BODY-7781 comes back.\r\n'),
    })
    const [dsn] = await eventually(() => (dsnsFor('ret@dest.test', 'failed').length ? dsnsFor('ret@dest.test', 'failed') : undefined), 10_000, 'failure DSN')
    const t = text(dsn!)
    expect(t).toContain('Content-Type: message/rfc822')
    expect(t).not.toContain('Content-Type: text/rfc822-headers')
    expect(t).toContain('The body token QX-BODY-7781 comes back.')
    expect(t).toContain('Subject: full return')
    const status = deliveryStatus(dsn!)
    expect(status).toMatch(/^Original-Envelope-Id: env\+123$/m) // xtext-decoded
    expect(status).toMatch(/^Original-Recipient: rfc822;original@sender\.test\r\nFinal-Recipient: rfc822; ret@dest\.test$/m)

    const line = 'y'.repeat(76) + '\r\n'
    await submit({ mailArgs: 'RET=FULL', rcpts: ['big@dest.test'], data: message('too big to return', 'BIG-BODY-START\r\n' + line.repeat(15_000)) })
    const [big] = await eventually(() => (dsnsFor('big@dest.test', 'failed').length ? dsnsFor('big@dest.test', 'failed') : undefined), 15_000, 'failure DSN (big)')
    expect(text(big!)).toContain('Content-Type: text/rfc822-headers')
    expect(text(big!)).toContain('Subject: too big to return')
    expect(text(big!)).not.toContain('BIG-BODY-START')
  })

  it('passes RET, ENVID, NOTIFY and ORCPT on to a next hop that offers DSN, and none to one that does not', async () => {
    await submit({
      mailArgs: 'RET=HDRS ENVID=relay-env-1',
      rcpts: [['one@dsn.test', 'NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;first@sender.test']],
      data: message('dsn relayed'),
    })
    const [m] = await dsnRx.waitForMessages(1, 10_000)
    expect(m!.mailParams).toMatchObject({ RET: 'HDRS', ENVID: 'relay-env-1' })
    expect(m!.rcptParams).toEqual([{ NOTIFY: 'SUCCESS,FAILURE', ORCPT: 'rfc822;first@sender.test' }])

    // Each RCPT carries its own recipient's NOTIFY and ORCPT (RFC 3461 §4.1/§4.2), one transaction for both.
    await submit({
      mailArgs: 'ENVID=relay-env-2',
      rcpts: [
        ['two@dsn.test', 'NOTIFY=FAILURE ORCPT=rfc822;second@sender.test'],
        ['three@dsn.test', 'NOTIFY=FAILURE ORCPT=rfc822;third@sender.test'],
      ],
      data: message('dsn relayed twice'),
    })
    const two = (await dsnRx.waitForMessages(2, 10_000))[1]!
    expect(two.to).toEqual(['two@dsn.test', 'three@dsn.test'])
    expect(two.mailParams).toMatchObject({ ENVID: 'relay-env-2' })
    expect(two.mailParams.RET).toBeUndefined()
    expect(two.rcptParams).toEqual([
      { NOTIFY: 'FAILURE', ORCPT: 'rfc822;second@sender.test' },
      { NOTIFY: 'FAILURE', ORCPT: 'rfc822;third@sender.test' },
    ])

    // A next hop without DSN gets plain MAIL/RCPT.
    const before = rx.messages.length
    await submit({ mailArgs: 'RET=FULL ENVID=relay-env-3', rcpts: [['plain@dest.test', 'NOTIFY=FAILURE ORCPT=rfc822;p@sender.test']], data: message('no dsn next hop') })
    const plain = (await rx.waitForMessages(before + 1, 10_000)).find((x) => x.to.includes('plain@dest.test'))!
    expect(plain.mailParams.ENVID).toBeUndefined()
    expect(plain.mailParams.RET).toBeUndefined()
    expect(plain.rcptParams).toEqual([{}])
  })
})
