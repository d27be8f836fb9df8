// The ARF (RFC 5965) parser on reports shaped like the big providers' ones, and on what is not a
// usable report: it must say why, never throw.
import { describe, expect, it } from 'vitest'
import { parseArf, type ArfResult } from '../../plugins/reputation/arf.js'
import { newQueueId } from '../../core/queue/id.js'
import { aolReport, microsoftReport, originalFromRelay, yahooReport } from './reports.js'

const queueId = newQueueId()
const original = originalFromRelay({ queueId, from: 'news@sender.test', to: 'user@mail.example.net', messageId: 'weekly-42@sender.test' })

function ok(r: ArfResult) {
  if (!r.ok) throw new Error(`expected a report, got: ${r.error}`)
  return r.report
}
function error(r: ArfResult): string {
  if (r.ok) throw new Error(`expected an error, got a report: ${JSON.stringify(r.report)}`)
  return r.error
}

describe('real-world-shaped reports', () => {
  it('Yahoo: fields, the original Message-ID and our queue id (not the provider MX id)', () => {
    const r = ok(parseArf(yahooReport({ original, mailFrom: 'bounce@sender.test', rcptTo: 'user@mail.example.net', to: 'fbl@relay.test' }), { hostname: 'relay.test' }))
    expect(r.feedbackType).toBe('abuse')
    expect(r.userAgent).toBe('Yahoo!-Mail-Feedback/2.0')
    expect(r.version).toBe('0.1')
    expect(r.originalMailFrom).toBe('bounce@sender.test')
    expect(r.originalRcptTo).toEqual(['user@mail.example.net'])
    expect(r.arrivalDate).toBe(Date.parse('Sat, 28 Nov 2026 06:02:11 +0000'))
    expect(r.reportedDomain).toEqual(['sender.test'])
    expect(r.original).toEqual({ messageId: 'weekly-42@sender.test', queueIds: [queueId], from: 'Newsletter <news@sender.test>', subject: 'Weekly news', headersOnly: false })
    expect(r.notes).toEqual([])
  })

  it('AOL: quoted report-type, preamble, headers only (text/rfc822-headers), no Original-Mail-From', () => {
    const r = ok(parseArf(aolReport({ original, rcptTo: 'redacted@aol.example', to: 'fbl@relay.test' })))
    expect(r.feedbackType).toBe('abuse')
    expect(r.userAgent).toBe('AOL SComp')
    expect(r.sourceIp).toBe('192.0.2.10')
    expect(r.originalMailFrom).toBeUndefined()
    expect(r.originalRcptTo).toEqual(['redacted@aol.example'])
    // No hostname given: our Received line is still known by its (Relay) mark.
    expect(r.original).toMatchObject({ messageId: 'weekly-42@sender.test', queueIds: [queueId], headersOnly: true })
  })

  it('Microsoft style: lower-case field names, base64-encoded original', () => {
    const r = ok(parseArf(microsoftReport({ original, mailFrom: 'bounce@sender.test', rcptTo: 'someone@hotmail.example', to: 'fbl@relay.test' })))
    expect(r.feedbackType).toBe('abuse')
    expect(r.userAgent).toBe('Microsoft Junk Mail Reporting Program')
    expect(r.arrivalDate).toBe(Date.parse('Sat, 28 Nov 2026 06:02:11 +0000'))
    expect(r.original).toMatchObject({ messageId: 'weekly-42@sender.test', queueIds: [queueId], headersOnly: false })
  })

  it('LF-only line ends and a Buffer input parse the same', () => {
    const text = yahooReport({ original, mailFrom: 'bounce@sender.test', rcptTo: 'user@mail.example.net', to: 'fbl@relay.test' })
    const a = ok(parseArf(Buffer.from(text, 'latin1')))
    const b = ok(parseArf(text.replace(/\r\n/g, '\n')))
    expect(b).toEqual(a)
  })

  it('a Received line by our host name without the (Relay) mark counts only when the host name is given', () => {
    const other = newQueueId()
    const headers = [...original.headers]
    headers.splice(0, 0, `Received: from edge.relay.test ([192.0.2.11])`, `\tby relay.test with ESMTP id ${other};`, `\tSat, 28 Nov 2026 06:02:00 +0000`)
    const report = yahooReport({ original: { headers }, mailFrom: 'b@sender.test', rcptTo: 'u@x.example', to: 'fbl@relay.test' })
    expect(ok(parseArf(report)).original!.queueIds).toEqual([queueId])
    expect(ok(parseArf(report, { hostname: 'relay.test' })).original!.queueIds).toEqual([other, queueId])
    // Ids that are not queue ids of ours (another MTA that says "Relay") are ignored.
    const foreign = yahooReport({ original: { headers: ['Received: from a by b.example (Relay) with SMTP id 12345;', '\tSat, 28 Nov 2026 06:02:00 +0000', 'Message-ID: <m@x>'] }, mailFrom: 'b@x', rcptTo: 'u@x', to: 'f@x' })
    expect(ok(parseArf(foreign)).original!.queueIds).toEqual([])
  })

  it('other feedback types and several Original-Rcpt-To', () => {
    const text = yahooReport({ original, mailFrom: 'bounce@sender.test', rcptTo: 'a@x.example', to: 'fbl@relay.test' })
      .replace('Feedback-Type: abuse', 'Feedback-Type: Not-Spam')
      .replace('Original-Rcpt-To: a@x.example', 'Original-Rcpt-To: <a@x.example>\r\nOriginal-Rcpt-To: b@x.example')
    const r = ok(parseArf(text))
    expect(r.feedbackType).toBe('not-spam')
    expect(r.originalRcptTo).toEqual(['a@x.example', 'b@x.example'])
  })

  it('a report cut off inside the original (no closing boundary) still gives the original headers', () => {
    const text = yahooReport({ original, mailFrom: 'bounce@sender.test', rcptTo: 'user@mail.example.net', to: 'fbl@relay.test' })
    const cut = text.slice(0, text.indexOf('Hello, here is'))
    expect(ok(parseArf(cut)).original).toMatchObject({ messageId: 'weekly-42@sender.test', queueIds: [queueId] })
  })

  it('missing third part: usable through Original-Mail-From, with a note', () => {
    const text = yahooReport({ original, mailFrom: 'bounce@sender.test', rcptTo: 'user@mail.example.net', to: 'fbl@relay.test' })
    const b = /boundary="([^"]+)"/.exec(text)![1]!
    const withoutOriginal = text.slice(0, text.lastIndexOf(`--${b}\r\nContent-Type: message/rfc822`)) + `--${b}--\r\n`
    const r = ok(parseArf(withoutOriginal))
    expect(r.original).toBeUndefined()
    expect(r.originalMailFrom).toBe('bounce@sender.test')
    expect(r.notes).toContain('the original message (third part) is missing')
  })
})

describe('what is not a usable report', () => {
  const yahoo = () => yahooReport({ original, mailFrom: 'bounce@sender.test', rcptTo: 'user@mail.example.net', to: 'fbl@relay.test' })

  it('an ordinary message', () => {
    expect(error(parseArf('From: a@b.test\r\nTo: fbl@relay.test\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nHello\r\n'))).toBe(
      'not a feedback report: Content-Type is text/plain (an ARF report is multipart/report; report-type=feedback-report)',
    )
    expect(error(parseArf('From: a@b.test\r\nSubject: hi\r\n\r\nHello\r\n'))).toMatch(/^not a feedback report: the message has no Content-Type/)
  })

  it('a bounce (report-type=delivery-status)', () => {
    const dsn = 'From: MAILER-DAEMON@x.test\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b--\r\n'
    expect(error(parseArf(dsn))).toBe('not a feedback report: report-type=delivery-status (a bounce)')
  })

  it('no feedback part, no Feedback-Type, no boundary, nothing to attribute', () => {
    expect(error(parseArf(yahoo().replace('Content-Type: message/feedback-report', 'Content-Type: text/plain')))).toBe('malformed report: no message/feedback-report part')
    expect(error(parseArf(yahoo().replace('Feedback-Type: abuse\r\n', '')))).toBe('malformed report: the message/feedback-report part has no Feedback-Type field')
    expect(error(parseArf(yahoo().replace(/;\r\n\tboundary="[^"]+"/, '')))).toBe('malformed report: multipart/report without a boundary parameter')
    expect(error(parseArf(yahoo().replace(/boundary="[^"]+"/, 'boundary="nope"')))).toBe('malformed report: no MIME parts found for boundary "nope"')
    const text = yahoo()
    const b = /boundary="([^"]+)"/.exec(text)![1]!
    const bare = text.slice(0, text.lastIndexOf(`--${b}\r\nContent-Type: message/rfc822`)).replace(/Original-Mail-From: .*\r\n/, '')
    expect(error(parseArf(bare))).toBe('malformed report: neither the original message (third part) nor Original-Mail-From: it cannot be matched to a sender')
  })

  it('garbage, empty input, binary, a huge single line: an error, no exception', () => {
    const inputs: (string | Buffer)[] = ['', '\r\n\r\n', Buffer.from([0, 1, 2, 255, 254, 10, 13, 0]), 'Content-Type: multipart/report; boundary=', 'x'.repeat(2_000_000), 'Content-Type: multipart/report; boundary="a\r\n\r\n--a\r\n']
    for (const input of inputs) {
      const r = parseArf(input)
      expect(r.ok).toBe(false)
      expect(typeof (r as { error: string }).error).toBe('string')
    }
  })
})

describe('reports shaped to cost (the parser runs on the event loop, for anyone who can mail the feedback address)', () => {
  const b = 'XYZ'
  const report = (originalPart: string) =>
    `Content-Type: multipart/report; report-type=feedback-report; boundary="${b}"\r\n\r\n--${b}\r\nContent-Type: text/plain\r\n\r\nhi\r\n--${b}\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: x\r\nVersion: 1\r\n\r\n--${b}\r\n${originalPart}\r\n--${b}--\r\n`
  /** Best of three runs, in ms: one slow run on a busy machine is not the parser. */
  const bestOf3 = (input: string) => {
    let best = Infinity
    let result: ArfResult | undefined
    for (let i = 0; i < 3; i++) {
      const t = performance.now()
      result = parseArf(input)
      best = Math.min(best, performance.now() - t)
    }
    return { result: result!, ms: best }
  }
  // Each ~2 MB (the intake reads the header section and 2 MB). They took 70–230 ms each, one line or one escape at a time.
  const shapes: [string, string, string][] = [
    ['one Received field folded over 350,000 lines', 'Content-Type: message/rfc822\r\n\r\nMessage-ID: <fold@x.test>\r\nReceived: from a\r\n' + ' by\r\n'.repeat(350_000), 'fold@x.test'],
    ['600,000 short body lines', 'Content-Type: message/rfc822\r\n\r\nMessage-ID: <lines@x.test>\r\n\r\n' + 'a\r\n'.repeat(600_000), 'lines@x.test'],
    ['a quoted-printable original of 600,000 escapes', 'Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nMessage-ID: <q=3D1@x.test>\r\n=\r\n' + '=41'.repeat(600_000), 'q=1@x.test'],
    ['a base64 original of 100,000 Received fields', 'Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n' + Buffer.from('Message-ID: <b64@x.test>\r\n' + 'Received: by a.test id 1\r\n'.repeat(60_000)).toString('base64').replace(/.{76}/g, '$&\r\n'), 'b64@x.test'],
  ]
  for (const [what, part, messageId] of shapes) {
    it(`${what}: parsed in one pass, the original found`, () => {
      const { result, ms } = bestOf3(report(part))
      expect(ok(result).original?.messageId).toBe(messageId)
      expect(ms).toBeLessThan(100)
    })
  }

  it('a field folded past 1,000 lines keeps its first 1,000 (the core limit for a message of its own); the fields after it are still read', () => {
    const original = 'Content-Type: text/rfc822-headers\r\n\r\nSubject: s\r\n' + ' w\r\n'.repeat(1500) + 'Message-ID: <after@x.test>\r\n'
    const r = ok(parseArf(report(original)))
    expect(r.original?.subject).toBe('s' + ' w'.repeat(1000))
    expect(r.original?.messageId).toBe('after@x.test')
  })
})
