// core/mail/bounce.ts: every DSN the relay builds (failure, expiry, delay warning, operator bounce),
// called directly and read back part by part.
import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import {
  RET_FULL_MAX,
  buildDsn,
  delayDsn,
  expiredResponse,
  failureDsn,
  relayDsn,
  statusOf,
  wantsDsn,
  type DsnEnv,
} from '../../core/mail/bounce.js'
import type { DelayCandidate, NewMessage, QueuedMessage } from '../../core/queue/types.js'

interface Part {
  headers: string
  body: string
}

/** The top header section and the MIME parts of a multipart message (one level). */
function parse(raw: Buffer | string): { headers: string; parts: Part[] } {
  const text = raw.toString()
  const split = text.indexOf('\r\n\r\n')
  const headers = text.slice(0, split)
  const boundary = /boundary="([^"]+)"/.exec(headers)?.[1]
  if (!boundary) throw new Error('no boundary')
  const body = text.slice(split + 4)
  const chunks = body.split(`--${boundary}`)
  // chunks[0] is the preamble, the last one the epilogue after the closing "--".
  const parts = chunks.slice(1, -1).map((c) => {
    const part = c.replace(/^\r\n/, '')
    const end = part.indexOf('\r\n\r\n')
    return { headers: part.slice(0, end), body: part.slice(end + 4).replace(/\r\n$/, '') }
  })
  return { headers, parts }
}

const contentType = (p: Part) => /^Content-Type: ([^;\r\n]+)/im.exec(p.headers)?.[1]
/** Quoted-printable soft line breaks and escapes undone. */
const unQp = (s: string) => s.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)))
/** The per-recipient field groups of a message/delivery-status part (the first group is per message). */
const fieldGroups = (p: Part) => p.body.split('\r\n\r\n').map((g) => g.split('\r\n').filter(Boolean))
const dsnOf = (m: NewMessage) => Buffer.concat([m.headers, (m.body as { inline: Buffer }).inline])

const ids: string[] = []
const env: DsnEnv = {
  reportingMta: 'mx.relay.test',
  lifetime: 5 * 86_400_000,
  newId: () => {
    ids.push(`DSN${ids.length + 1}`)
    return ids[ids.length - 1]!
  },
}

const HEADERS = 'From: Alice <alice@sender.test>\r\nTo: bob@dest.test\r\nSubject: the original\r\n\r\n'
function queued(over: Partial<QueuedMessage> = {}): QueuedMessage {
  const body = Buffer.from('the body line\r\n')
  return {
    id: 'Q0000000000000001',
    sender: 'alice@sender.test',
    headers: Buffer.from(HEADERS),
    body: { inline: body },
    size: HEADERS.length + body.length,
    receivedAt: Date.UTC(2026, 0, 2, 3, 4, 5),
    expiresAt: Date.UTC(2026, 0, 7, 3, 4, 5),
    meta: {},
    ...over,
  }
}

describe('buildDsn', () => {
  it('is a multipart/report: the text, the delivery-status fields per recipient, the original headers', async () => {
    const raw = await buildDsn({
      reportingMta: 'mx.relay.test',
      queueId: 'Q1',
      sender: 'alice@sender.test',
      arrivalDate: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)),
      originalHeaders: Buffer.from(HEADERS),
      envid: 'ENV-42',
      recipients: [
        { address: 'bob@dest.test', status: '5.1.1', remoteHost: 'mx.dest.test[192.0.2.7]:25', diagnostic: '550 5.1.1 <bob@dest.test>: no such user', remote: true, orcpt: 'rfc822;bob@dest.test' },
        { address: 'carol@nowhere.test', status: '5.1.2', diagnostic: '5.1.2 Domain nowhere.test does not exist', remote: false },
      ],
    })
    const { headers, parts } = parse(raw)
    expect(headers).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status;/m)
    expect(headers).toMatch(/^From: Mail Delivery System <MAILER-DAEMON@mx\.relay\.test>$/m)
    expect(headers).toMatch(/^To: alice@sender\.test$/m)
    expect(headers).toMatch(/^Subject: Undelivered Mail Returned to Sender$/m)
    expect(headers).toMatch(/^Auto-Submitted: auto-replied$/m)
    expect(parts.map(contentType)).toEqual(['text/plain', 'message/delivery-status', 'text/rfc822-headers'])

    const text = unQp(parts[0]!.body)
    expect(text).toContain('This is the mail system at host mx.relay.test.')
    expect(text).toContain("I'm sorry to have to inform you that your message could not be delivered to one or more recipients.")
    expect(text).toContain('<bob@dest.test>: host mx.dest.test[192.0.2.7]:25 said: 550 5.1.1 <bob@dest.test>: no such user')
    expect(text).toContain('<carol@nowhere.test>: 5.1.2 Domain nowhere.test does not exist')

    expect(parts[1]!.headers).toMatch(/^Content-Transfer-Encoding: 7bit$/m)
    const [message, bob, carol] = fieldGroups(parts[1]!)
    expect(message).toEqual(['Reporting-MTA: dns; mx.relay.test', 'X-Relay-Queue-ID: Q1', 'Original-Envelope-Id: ENV-42', 'Arrival-Date: Fri, 02 Jan 2026 03:04:05 GMT'])
    expect(bob!.slice(0, 6)).toEqual([
      'Original-Recipient: rfc822;bob@dest.test',
      'Final-Recipient: rfc822; bob@dest.test',
      'Action: failed',
      'Status: 5.1.1',
      'Remote-MTA: dns; mx.dest.test',
      'Diagnostic-Code: smtp; 550 5.1.1 <bob@dest.test>: no such user',
    ])
    expect(bob![6]).toMatch(/^Last-Attempt-Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/)
    expect(bob).toHaveLength(7)
    // A local result: no Original-Recipient without ORCPT, no Remote-MTA, Diagnostic-Code type x-local.
    expect(carol!.slice(0, 4)).toEqual(['Final-Recipient: rfc822; carol@nowhere.test', 'Action: failed', 'Status: 5.1.2', 'Diagnostic-Code: x-local; 5.1.2 Domain nowhere.test does not exist'])
    expect(carol).toHaveLength(5)

    expect(unQp(parts[2]!.body)).toContain('Subject: the original')
    // 7-bit headers are labelled 7bit: a part labelled 8bit is turned into quoted-printable for a next
    // hop without 8BITMIME (a bounce parser then reads `Message-ID: <a=3Db@x>`).
    expect(parts[2]!.headers).toMatch(/^Content-Transfer-Encoding: 7bit$/m)
    expect(parts[2]!.body).toContain('Subject: the original')
  })

  it('returns 7-bit headers (or message) as they are; an internationalized message (UTF-8 headers, SMTPUTF8) in the global types of RFC 6533', async () => {
    const base = { reportingMta: 'mx.relay.test', queueId: 'Q1', sender: 'alice@sender.test', arrivalDate: new Date(), recipients: [{ address: 'bob@dest.test', status: '5.1.1', diagnostic: '550 no', remote: true }] }
    const full = parse(await buildDsn({ ...base, originalHeaders: Buffer.from(HEADERS), originalMessage: Buffer.from(`${HEADERS}plain body\r\n`) }))
    expect(full.headers).toMatch(/report-type=delivery-status/)
    expect(contentType(full.parts[1]!)).toBe('message/delivery-status')
    expect(contentType(full.parts[2]!)).toBe('message/rfc822')
    expect(full.parts[2]!.headers).toMatch(/^Content-Transfer-Encoding: 7bit$/m)

    // UTF-8 header fields: message/global-headers (RFC 6532 §3.7), as they are, in a global report.
    const utf8Headers = 'Subject: Gr\u00fc\u00dfe\r\nMessage-ID: <a=b@x.test>\r\n\r\n'
    const eight = parse(await buildDsn({ ...base, originalHeaders: Buffer.from(utf8Headers) }))
    expect(eight.headers).toMatch(/report-type=global-delivery-status/)
    expect(contentType(eight.parts[1]!)).toBe('message/global-delivery-status')
    expect(contentType(eight.parts[2]!)).toBe('message/global-headers')
    expect(eight.parts[2]!.headers).toMatch(/^Content-Transfer-Encoding: 8bit$/m)
    expect(eight.parts[2]!.body).toContain('Subject: Gr\u00fc\u00dfe\r\nMessage-ID: <a=b@x.test>')
    // RET=FULL: message/global; a line over 998 octets base64 (a global type may be encoded), not dropped.
    const long = `${utf8Headers}b\u00e4dy\r\n${'x'.repeat(1200)}\r\n`
    const whole = parse(await buildDsn({ ...base, originalHeaders: Buffer.from(utf8Headers), originalMessage: Buffer.from(long) }))
    expect(contentType(whole.parts[2]!)).toBe('message/global')
    expect(whole.parts[2]!.headers).toMatch(/^Content-Transfer-Encoding: base64$/m)
    expect(Buffer.from(whole.parts[2]!.body.replace(/\s+/g, ''), 'base64').toString('utf8')).toBe(long)

    // An SMTPUTF8 message with ASCII headers (its address is UTF-8): a global report too.
    const intl = parse(await buildDsn({ ...base, international: true, originalHeaders: Buffer.from(HEADERS) }))
    expect(intl.headers).toMatch(/report-type=global-delivery-status/)
    expect(contentType(intl.parts[1]!)).toBe('message/global-delivery-status')
    expect(contentType(intl.parts[2]!)).toBe('message/global-headers')
    expect(intl.parts[2]!.headers).toMatch(/^Content-Transfer-Encoding: 7bit$/m)
  })

  it('puts a reply with line breaks and control characters on one line', async () => {
    const raw = await buildDsn({
      reportingMta: 'mx.relay.test',
      queueId: 'Q1',
      sender: 'alice@sender.test',
      arrivalDate: new Date(0),
      originalHeaders: Buffer.from(HEADERS),
      recipients: [{ address: 'bob@dest.test', status: '5.0.0', diagnostic: '550-first line\r\n550 second\x00line', remote: true }],
    })
    const [, bob] = fieldGroups(parse(raw).parts[1]!)
    expect(bob).toContain('Diagnostic-Code: smtp; 550-first line 550 second line')
    // No ENVID: no Original-Envelope-Id.
    expect(raw.toString()).not.toContain('Original-Envelope-Id')
  })

  it('keeps the 7-bit delivery-status part 7-bit: a UTF-8 reply and an internationalized address are escaped (RFC 6533)', async () => {
    const raw = await buildDsn({
      reportingMta: 'mx.relay.test',
      queueId: 'Q1',
      sender: 'alice@sender.test',
      arrivalDate: new Date(0),
      originalHeaders: Buffer.from(HEADERS),
      recipients: [{ address: 'jörg+x@dest.test', status: '5.1.1', diagnostic: '550 5.1.1 Empfänger unbekannt ✉', remote: true }],
    })
    const part = parse(raw).parts[1]!
    expect(part.headers).toMatch(/^Content-Transfer-Encoding: 7bit$/m)
    expect(/[^\x00-\x7f]/.test(part.body)).toBe(false)
    const [, rcpt] = fieldGroups(part)
    expect(rcpt).toContain('Final-Recipient: utf-8; j\\x{F6}rg\\x{2B}x@dest.test')
    expect(rcpt).toContain('Diagnostic-Code: smtp; 550 5.1.1 Empf\\x{E4}nger unbekannt \\x{2709}')
    // The human-readable part says it as it was (charset=utf-8, encoded for transport).
    expect(parse(raw).parts[0]!.headers).toMatch(/charset=utf-8/)
    expect(Buffer.from(raw).every((b) => b < 0x80)).toBe(true)
  })

  it('names the remote host as the speaker only for its own replies, not for the relay\'s verdicts about it', async () => {
    const raw = await buildDsn({
      reportingMta: 'mx.relay.test',
      queueId: 'Q1',
      sender: 'alice@sender.test',
      arrivalDate: new Date(0),
      originalHeaders: Buffer.from(HEADERS),
      recipients: [
        { address: 'loop@dest.test', status: '5.4.6', remoteHost: 'mx.dest.test[192.0.2.7]:25', diagnostic: '5.4.6 mail for dest.test loops back to myself', remote: false },
        { address: 'bob@dest.test', status: '5.1.1', remoteHost: 'mx.dest.test[192.0.2.7]:25', diagnostic: '550 5.1.1 no such user', remote: true },
      ],
    })
    const text = unQp(parse(raw).parts[0]!.body)
    expect(text).toContain('<loop@dest.test>: 5.4.6 mail for dest.test loops back to myself')
    expect(text).toContain('<bob@dest.test>: host mx.dest.test[192.0.2.7]:25 said: 550 5.1.1 no such user')
    const [, loop] = fieldGroups(parse(raw).parts[1]!)
    expect(loop).toContain('Diagnostic-Code: x-local; 5.4.6 mail for dest.test loops back to myself')
  })

  it('a delay warning says so, gives Will-Retry-Until, and never returns the message', async () => {
    const until = new Date(Date.UTC(2026, 0, 7, 3, 4, 5))
    const raw = await buildDsn({
      action: 'delayed',
      reportingMta: 'mx.relay.test',
      queueId: 'Q1',
      sender: 'alice@sender.test',
      arrivalDate: new Date(0),
      originalHeaders: Buffer.from(HEADERS),
      originalMessage: Buffer.from(`${HEADERS}secret body\r\n`),
      willRetryUntil: until,
      recipients: [{ address: 'bob@dest.test', status: '4.2.1', diagnostic: '451 4.2.1 try later', remote: true }],
    })
    const { headers, parts } = parse(raw)
    expect(headers).toMatch(/^Subject: Delayed Mail \(still being retried\)$/m)
    expect(parts.map(contentType)).toEqual(['text/plain', 'message/delivery-status', 'text/rfc822-headers'])
    const text = unQp(parts[0]!.body)
    expect(text).toContain('####### THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE. #######')
    expect(text).toContain('delivery is still being retried until Wed, 07 Jan 2026 03:04:05 GMT.')
    const [, bob] = fieldGroups(parts[1]!)
    expect(bob).toContain('Action: delayed')
    expect(bob).toContain('Status: 4.2.1')
    expect(bob![bob!.length - 1]).toBe('Will-Retry-Until: Wed, 07 Jan 2026 03:04:05 GMT')
    expect(raw.toString()).not.toContain('secret body')
  })
})

describe('failureDsn', () => {
  const bob = { address: 'bob@dest.test', response: '550 5.1.1 no such user', remoteHost: 'mx.dest.test[192.0.2.7]:25', remote: true }

  it('is a message from the null sender to the sender, for the queue', async () => {
    const m = queued()
    const before = Date.now()
    const dsn = (await failureDsn(env, m, [bob]))!
    expect(dsn.sender).toBe('')
    expect(dsn.recipients).toEqual([{ address: 'alice@sender.test', domain: 'sender.test' }])
    expect(dsn.meta).toEqual({ dsnFor: m.id })
    expect(dsn.id).toBe(ids[ids.length - 1])
    expect(dsn.receivedAt).toBeGreaterThanOrEqual(before)
    expect(dsn.expiresAt - dsn.receivedAt).toBe(env.lifetime)
    expect(dsn.size).toBe(dsnOf(dsn).length)
    expect(dsn.headers.toString().endsWith('\r\n')).toBe(true)
    expect(dsn.messageId).toMatch(/^<[^>]+@mx\.relay\.test>$/)
    expect(dsn.headers.toString()).toContain(`Message-ID: ${dsn.messageId}`)
    // The status comes from the reply when delivery derived none.
    const [, fields] = fieldGroups(parse(dsnOf(dsn)).parts[1]!)
    expect(fields).toContain('Status: 5.1.1')
    expect(fields).toContain('Remote-MTA: dns; mx.dest.test')
  })

  it('NOTIFY=SUCCESS: a success report (relayed, delivered) with the headers only, alone or beside failures; none without SUCCESS', async () => {
    const relayed = { address: 'carol@dest.test', response: '250 2.0.0 Ok: queued as X1', remoteHost: 'mx.dest.test[192.0.2.7]:25', remote: true, args: { NOTIFY: 'SUCCESS,FAILURE' }, action: 'relayed' as const }
    const stored = { address: 'dave@local.test', response: '250 2.1.5 Saved', remoteHost: 'unix:/run/lmtp', remote: true, args: { NOTIFY: 'SUCCESS' }, action: 'delivered' as const }
    const full = queued({ senderArgs: { RET: 'FULL' } })
    const only = (await failureDsn(env, full, [], { succeeded: [relayed, stored], readBody: async () => Buffer.from('the body line\r\n') }))!
    const report = parse(dsnOf(only))
    expect(report.headers).toMatch(/^Subject: Successful Mail Delivery Report$/m)
    expect(report.parts.map(contentType)).toEqual(['text/plain', 'message/delivery-status', 'text/rfc822-headers'])
    expect(unQp(report.parts[0]!.body)).toContain('<carol@dest.test>: delivery via mx.dest.test[192.0.2.7]:25: 250 2.0.0 Ok: queued as X1')
    const [, carol, dave] = fieldGroups(report.parts[1]!)
    expect(carol).toEqual(expect.arrayContaining(['Final-Recipient: rfc822; carol@dest.test', 'Action: relayed', 'Status: 2.0.0']))
    expect(dave).toEqual(expect.arrayContaining(['Action: delivered', 'Status: 2.1.5']))
    // Beside a failure: one report, each recipient with its own Action, the message returned for the failure.
    const both = parse(dsnOf((await failureDsn(env, full, [bob], { succeeded: [relayed], readBody: async () => Buffer.from('the body line\r\n') }))!))
    expect(both.headers).toMatch(/^Subject: Undelivered Mail Returned to Sender$/m)
    expect(fieldGroups(both.parts[1]!).slice(1).map((g) => g.find((f) => f.startsWith('Action:')))).toEqual(['Action: failed', 'Action: relayed'])
    expect(contentType(both.parts[2]!)).toBe('message/rfc822')
    // No NOTIFY (failures and delays only), or NOTIFY without SUCCESS: nothing to report.
    expect(await failureDsn(env, full, [], { succeeded: [{ ...relayed, args: {} }, { ...stored, args: { NOTIFY: 'FAILURE' } }] })).toBeUndefined()
  })

  it('RET=HDRS (the default) returns the headers; RET=FULL the whole message, up to RET_FULL_MAX', async () => {
    const hdrs = parse(dsnOf((await failureDsn(env, queued({ senderArgs: { RET: 'HDRS' } }), [bob], { readBody: async () => Buffer.from('unused') }))!))
    expect(hdrs.parts.map(contentType)).toEqual(['text/plain', 'message/delivery-status', 'text/rfc822-headers'])
    expect(hdrs.parts[2]!.body).not.toContain('the body line')

    const full = parse(dsnOf((await failureDsn(env, queued({ senderArgs: { RET: 'full' } }), [bob], { readBody: async () => Buffer.from('unused') }))!))
    expect(full.parts.map(contentType)).toEqual(['text/plain', 'message/delivery-status', 'message/rfc822'])
    expect(unQp(full.parts[2]!.body)).toContain('Subject: the original\r\n\r\nthe body line')

    // A body not stored inline is read through the caller's reader.
    const spooled = queued({ senderArgs: { RET: 'FULL' }, body: { file: '/nonexistent' } })
    const read = parse(dsnOf((await failureDsn(env, spooled, [bob], { readBody: async (m) => Buffer.from(`spooled body of ${m.id}\r\n`) }))!))
    expect(unQp(read.parts[2]!.body)).toContain('spooled body of Q0000000000000001')

    const big = parse(dsnOf((await failureDsn(env, queued({ senderArgs: { RET: 'FULL' }, size: RET_FULL_MAX + 1 }), [bob], { readBody: async () => Buffer.from('') }))!))
    expect(contentType(big.parts[2]!)).toBe('text/rfc822-headers')

    // Without a reader (untrusted mail, dsn-policy.ts): headers whatever RET says.
    const none = parse(dsnOf((await failureDsn(env, queued({ senderArgs: { RET: 'FULL' } }), [bob]))!))
    expect(contentType(none.parts[2]!)).toBe('text/rfc822-headers')
  })

  it('a body that cannot be read gives the headers, and says so', async () => {
    const lines: string[] = []
    const log = pino(new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }))
    const m = queued({ senderArgs: { RET: 'FULL' }, body: { file: '/gone' } })
    const dsn = (await failureDsn({ ...env, log }, m, [bob], { readBody: async () => Promise.reject(new Error('ENOENT')) }))!
    expect(contentType(parse(dsnOf(dsn)).parts[2]!)).toBe('text/rfc822-headers')
    expect(lines.map((l) => JSON.parse(l))).toEqual([expect.objectContaining({ level: 40, queueId: m.id, msg: 'could not read the message for RET=FULL; returning its headers' })])
  })

  it('honours NOTIFY: only recipients that ask for failures (or give no NOTIFY) are reported', async () => {
    const r = (address: string, NOTIFY?: string) => ({ ...bob, address, args: NOTIFY ? { NOTIFY } : undefined })
    const failed = [r('never@dest.test', 'NEVER'), r('delay@dest.test', 'SUCCESS,DELAY'), r('failure@dest.test', 'delay,failure'), r('default@dest.test')]
    const dsn = (await failureDsn(env, queued(), failed))!
    const groups = fieldGroups(parse(dsnOf(dsn)).parts[1]!).slice(1)
    expect(groups.map((g) => g.find((f) => f.startsWith('Final-Recipient:')))).toEqual(['Final-Recipient: rfc822; failure@dest.test', 'Final-Recipient: rfc822; default@dest.test'])
    expect(await failureDsn(env, queued(), [r('never@dest.test', 'NEVER'), r('delay@dest.test', 'DELAY')])).toBeUndefined()
  })

  it('none to the null sender; the gate is asked only when one would go, and can drop it', async () => {
    let asked = 0
    const gate = (answer: boolean) => () => (asked++, answer)
    expect(await failureDsn(env, queued({ sender: '' }), [bob], { allow: gate(true) })).toBeUndefined()
    expect(await failureDsn(env, queued(), [{ ...bob, args: { NOTIFY: 'NEVER' } }], { allow: gate(true) })).toBeUndefined()
    expect(asked).toBe(0)
    expect(await failureDsn(env, queued(), [bob], { allow: gate(false) })).toBeUndefined()
    expect(asked).toBe(1)
    expect(await failureDsn(env, queued(), [bob], { allow: gate(true) })).toBeDefined()
    expect(asked).toBe(2)
  })

  it('carries ENVID and each ORCPT, on one line', async () => {
    const m = queued({ senderArgs: { ENVID: 'env\r\nid-7' } })
    const dsn = (await failureDsn(env, m, [{ ...bob, args: { ORCPT: 'rfc822;Bob@Dest.test' } }, { ...bob, address: 'x@dest.test' }]))!
    const [message, first, second] = fieldGroups(parse(dsnOf(dsn)).parts[1]!)
    expect(message).toContain('Original-Envelope-Id: env id-7')
    expect(first![0]).toBe('Original-Recipient: rfc822;Bob@Dest.test')
    expect(second![0]).toBe('Final-Recipient: rfc822; x@dest.test')
  })

  it('an expiry bounce says how long the message waited, with status 4.4.7 and the last error', async () => {
    const response = expiredResponse(0, 5 * 86_400_000, '451 4.3.0 try again')
    expect(response).toBe('4.4.7 Message expired after 5d in the queue; last error: 451 4.3.0 try again')
    expect(expiredResponse(0, 90_000, 'x')).toBe('4.4.7 Message expired after 90s in the queue; last error: x')
    const dsn = (await failureDsn(env, queued(), [{ address: 'bob@dest.test', response, status: '4.4.7', remote: false }]))!
    const [, fields] = fieldGroups(parse(dsnOf(dsn)).parts[1]!)
    expect(fields).toContain('Status: 4.4.7')
    expect(fields).toContain(`Diagnostic-Code: x-local; ${response}`)
  })
})

describe('delayDsn', () => {
  const candidate = (recipients: DelayCandidate['recipients'], over: Partial<QueuedMessage> = {}): DelayCandidate => {
    const { body: _, ...message } = queued(over)
    return { message, recipients }
  }

  it('reports each deferred recipient that asks for DELAY with a 4.x.x status (the reply\'s detail, a failed connection 4.4.x), until the expiry', async () => {
    const dsn = (await delayDsn(
      env,
      candidate([
        { rowId: 1, address: 'grey@dest.test', lastResponse: '451 4.7.1 greylisted, try again', remoteHost: 'mx.dest.test[192.0.2.7]:25', lastAttemptAt: Date.UTC(2026, 0, 3, 10, 20, 30) },
        { rowId: 2, address: 'new@dest.test' },
        { rowId: 3, address: 'odd@dest.test', lastResponse: '550 5.1.1 went away' },
        { rowId: 4, address: 'quiet@dest.test', args: { NOTIFY: 'FAILURE' } },
        { rowId: 5, address: 'slow@dest.test', lastResponse: 'connection lost: ETIMEDOUT', remoteHost: 'mx.dest.test[192.0.2.7]:25' },
        { rowId: 6, address: 'down@dest.test', lastResponse: 'connect ECONNREFUSED 192.0.2.7:25' },
      ]),
    ))!
    const { headers, parts } = parse(dsnOf(dsn))
    expect(headers).toMatch(/^Subject: Delayed Mail \(still being retried\)$/m)
    const [, grey, fresh, odd, slow, down, ...rest] = fieldGroups(parts[1]!)
    expect(rest).toEqual([])
    expect(grey!.slice(0, 5)).toEqual(['Final-Recipient: rfc822; grey@dest.test', 'Action: delayed', 'Status: 4.7.1', 'Remote-MTA: dns; mx.dest.test', 'Diagnostic-Code: smtp; 451 4.7.1 greylisted, try again'])
    expect(grey![grey!.length - 1]).toBe('Will-Retry-Until: Wed, 07 Jan 2026 03:04:05 GMT')
    // RFC 3464 §2.3.7: when the last attempt was, not when the warning was written; none for one never attempted.
    expect(grey).toContain('Last-Attempt-Date: Sat, 03 Jan 2026 10:20:30 GMT')
    expect(fresh!.some((f) => f.startsWith('Last-Attempt-Date:'))).toBe(false)
    expect(fresh!.slice(0, 4)).toEqual(['Final-Recipient: rfc822; new@dest.test', 'Action: delayed', 'Status: 4.0.0', 'Diagnostic-Code: x-local; 4.0.0 Delivery not yet attempted'])
    // A 5xx reply taken as temporary (552, say) keeps its detail in class 4, as Postfix's soft bounce; a failed connection says so.
    expect(odd).toContain('Status: 4.1.1')
    expect(slow).toContain('Status: 4.4.2')
    expect(down).toContain('Status: 4.4.1')
    expect(dsn.meta).toEqual({ dsnFor: 'Q0000000000000001' })
  })

  it('none when no recipient asks for DELAY; the gate can drop it', async () => {
    expect(await delayDsn(env, candidate([{ rowId: 1, address: 'a@dest.test', args: { NOTIFY: 'NEVER' } }]))).toBeUndefined()
    expect(await delayDsn(env, candidate([{ rowId: 1, address: 'a@dest.test' }]), { allow: () => false })).toBeUndefined()
    expect(await delayDsn(env, candidate([{ rowId: 1, address: 'a@dest.test' }], { sender: '' }))).toBeUndefined()
  })
})

describe('DSN parameters', () => {
  it('statusOf takes the enhanced code, else derives one from the basic code, else the fallback', () => {
    expect(statusOf('550 5.7.1 relaying denied', '5.0.0')).toBe('5.7.1')
    expect(statusOf('421-4.7.0 slow down', '5.0.0')).toBe('4.7.0')
    expect(statusOf('554 go away', '5.0.0')).toBe('5.0.0')
    expect(statusOf('452 too many', '5.0.0')).toBe('4.0.0')
    expect(statusOf('connection refused', '4.4.1')).toBe('4.4.1')
  })

  it('wantsDsn: no NOTIFY means failures and delays; a list means what it names', () => {
    expect([wantsDsn(undefined, 'FAILURE'), wantsDsn(undefined, 'DELAY'), wantsDsn(undefined, 'SUCCESS')]).toEqual([true, true, false])
    expect([wantsDsn({ NOTIFY: 'NEVER' }, 'FAILURE'), wantsDsn({ NOTIFY: 'success, delay' }, 'DELAY'), wantsDsn({ NOTIFY: 'SUCCESS' }, 'FAILURE')]).toEqual([false, true, false])
  })

  it("relayDsn passes on each recipient's own NOTIFY and ORCPT (RFC 3461 §4.1/§4.2), RET and ENVID of the message", () => {
    expect(relayDsn({ RET: 'full', ENVID: 'e1' }, [{ address: 'a@x', args: { NOTIFY: 'FAILURE', ORCPT: 'rfc822;a@x' } }])).toEqual({ ret: 'FULL', envid: 'e1', rcpt: new Map([['a@x', { notify: 'FAILURE', orcpt: 'rfc822;a@x' }]]) })
    expect(relayDsn(undefined, [{ address: 'b@x', args: { NOTIFY: 'FAILURE' } }, { address: 'c@x', args: { NOTIFY: 'NEVER' } }, { address: 'd@x' }])).toEqual({
      rcpt: new Map([['b@x', { notify: 'FAILURE' }], ['c@x', { notify: 'NEVER' }]]),
    })
    // NOTIFY is a set of flags: passed on in one order; ORCPT alone is passed on too.
    expect(relayDsn(undefined, [{ address: 'e@x', args: { NOTIFY: 'failure,success' } }, { address: 'f@x', args: { ORCPT: 'rfc822;o@x' } }])).toEqual({
      rcpt: new Map([['e@x', { notify: 'SUCCESS,FAILURE' }], ['f@x', { orcpt: 'rfc822;o@x' }]]),
    })
    expect(relayDsn(undefined, [{ address: 'g@x' }])).toBeUndefined()
  })
})

describe('line limits (RFC 5322 §2.1.1: at most 998 octets a line)', () => {
  const longest = (s: string) => Math.max(...s.split('\r\n').map((l) => Buffer.byteLength(l)))
  const unfold = (s: string) => s.replace(/\r\n(?=[ \t])/g, '')

  it('oneLineReply: multi-line replies joined (continuation codes dropped), control characters removed, capped with a marker', async () => {
    const { oneLineReply, REPLY_MAX } = await import('../../core/mail/reply.js')
    expect(oneLineReply('250-2.0.0 Ok: queued as X\n250-second line\r\n250 2.0.0 third\x00line')).toBe('250 2.0.0 Ok: queued as X second line third line')
    expect(oneLineReply('550-5.1.1 a\n550-5.7.1 b\n550 c')).toBe('550 5.1.1 a 5.7.1 b c')
    expect(oneLineReply('451 4.3.0 try\tagain\x1b[0m later')).toBe('451 4.3.0 try again [0m later')
    const long = oneLineReply(`550 5.1.1 ${'word '.repeat(30_000)}`)
    expect(long.length).toBe(REPLY_MAX)
    expect(long).toMatch(/^550 5\.1\.1 word word .* \[truncated\]$/)
    expect(oneLineReply(long)).toBe(long) // idempotent
  })

  it('folds a long Diagnostic-Code at spaces, breaks a run without spaces, and keeps the text part and the quoted headers within the limit', async () => {
    const headers = `From: alice@sender.test\r\nX-Long: ${'h'.repeat(3000)}\r\nSubject: ${'a long subject '.repeat(200)}\r\n\r\n`
    const raw = (
      await buildDsn({
        reportingMta: 'mx.relay.test',
        queueId: 'Q1',
        sender: 'alice@sender.test',
        arrivalDate: new Date(0),
        originalHeaders: Buffer.from(headers),
        recipients: [
          { address: 'bob@dest.test', status: '5.1.1', remoteHost: 'mx.dest.test[192.0.2.7]:25', diagnostic: `550 5.1.1 ${'lorem ipsum '.repeat(10_000)}`, remote: true },
          { address: 'carol@dest.test', status: '5.0.0', diagnostic: `550 ${'z'.repeat(5000)}`, remote: true },
        ],
      })
    ).toString()
    expect(longest(raw)).toBeLessThanOrEqual(998)
    const { parts } = parse(raw)
    const [, bob, carol] = unfold(parts[1]!.body).split('\r\n\r\n').map((g) => g.split('\r\n'))
    const bobDiag = bob!.find((l) => l.startsWith('Diagnostic-Code: '))!
    expect(bobDiag).toMatch(/^Diagnostic-Code: smtp; 550 5\.1\.1 lorem ipsum lorem /)
    expect(bobDiag.length).toBeLessThanOrEqual(1030)
    expect(carol!.find((l) => l.startsWith('Diagnostic-Code: '))).toMatch(/^Diagnostic-Code: smtp; 550 z+/)
    // Folded at spaces into lines of about 78 where the text has spaces.
    expect(parts[1]!.body.split('\r\n').filter((l) => l.includes('lorem')).every((l) => l.length <= 78)).toBe(true)
    // The human-readable part quotes the bounded reply too.
    expect(unQp(parts[0]!.body)).toMatch(/<bob@dest\.test>: host mx\.dest\.test\[192\.0\.2\.7\]:25 said: 550 5\.1\.1 lorem ipsum/)
    expect(unQp(parts[0]!.body).length).toBeLessThan(4000)
    // The original headers, folded: unfolded they hold what was sent (a long run broken with a space).
    const quoted = unfold(unQp(parts[2]!.body))
    expect(quoted).toContain(`Subject: ${'a long subject '.repeat(200).trimEnd()}`)
    expect(quoted.replace(/ /g, '')).toContain(`X-Long:${'h'.repeat(3000)}`)
  })

  it('RET=FULL with a line over 998 octets in the body returns the headers instead (message/rfc822 cannot be re-encoded)', async () => {
    const body = Buffer.from(`short line\r\n${'b'.repeat(2000)}\r\n`)
    const dsn = (await failureDsn(env, queued({ senderArgs: { RET: 'FULL' }, body: { inline: body }, size: HEADERS.length + body.length }), [{ address: 'bob@dest.test', response: '550 5.7.1 no', remote: true }], { readBody: async () => body }))!
    const raw = dsnOf(dsn).toString()
    expect(longest(raw)).toBeLessThanOrEqual(998)
    expect(parse(raw).parts.map(contentType)).toEqual(['text/plain', 'message/delivery-status', 'text/rfc822-headers'])
  })

  it('an expiry response stays within the cap', () => {
    const r = expiredResponse(0, 90_000, `451 4.3.0 ${'x'.repeat(990)}`)
    expect(r.length).toBeLessThanOrEqual(1000)
    expect(r).toMatch(/^4\.4\.7 Message expired after 90s in the queue; last error: 451 4\.3\.0 x+ \[truncated\]$/)
  })
})
