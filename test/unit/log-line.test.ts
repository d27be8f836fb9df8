// The audit log's pure parts: reply codes out of a response, and the Postfix-like line format.
import { describe, expect, it } from 'vitest'
import { replyCodes } from '../../core/events/log.js'
import { toMaillogLine } from '../../core/log-line.js'

const json = (o: Record<string, unknown>) => `${JSON.stringify({ level: 30, time: '2026-12-03T07:00:00.000Z', pid: 7, ...o })}\n`
const text = (o: Record<string, unknown>) => toMaillogLine(json(o)).replace(/^\S+ \S+ /, '')

describe('replyCodes', () => {
  it('splits the code and the enhanced status; a reply without one gets X.0.0, a local decision no code', () => {
    expect(replyCodes('250 2.0.0 Ok: queued as X')).toEqual({ code: 250, dsn: '2.0.0' })
    expect(replyCodes('250 OK')).toEqual({ code: 250, dsn: '2.0.0' })
    expect(replyCodes('550-5.1.1 no such user')).toEqual({ code: 550, dsn: '5.1.1' })
    expect(replyCodes('4.4.1 Host mx.test[192.0.2.1]:25 unreachable: ECONNREFUSED')).toEqual({ code: undefined, dsn: '4.4.1' })
    expect(replyCodes('connection closed')).toEqual({ code: undefined, dsn: undefined })
  })
})

describe("log.format 'line'", () => {
  it('a refusal: the NOQUEUE reject shape, unknown[ip] without a reverse name', () => {
    const line = { event: 'rejected', stage: 'rcpt', code: 550, dsn: '5.7.1', text: 'Relaying denied for <v@x.test>', rule: 'core:closed-relay', sender: 's@y.test', recipient: 'v@x.test', proto: 'ESMTP', client: '192.0.2.9', clientHostname: '[192.0.2.9]', helo: 'h.test', msg: 'refused' }
    expect(text(line)).toBe('relay/smtpd[7]: NOQUEUE: reject: RCPT from unknown[192.0.2.9]: 550 5.7.1 Relaying denied for <v@x.test>; from=<s@y.test> to=<v@x.test> proto=ESMTP helo=<h.test> by=core:closed-relay\n')
    expect(text({ ...line, clientHostname: 'mail.y.test', sender: '' })).toContain('from mail.y.test[192.0.2.9]: 550 5.7.1 Relaying denied for <v@x.test>; from=<> ')
    // A refusal at DATA with no recipient accepted names none (not `to=<>`, which reads as the null address).
    const data = { ...line, stage: 'data', recipient: undefined, recipients: [], code: 554, dsn: '5.5.1', text: 'No valid recipients' }
    expect(text(data)).toBe('relay/smtpd[7]: NOQUEUE: reject: DATA from unknown[192.0.2.9]: 554 5.5.1 No valid recipients; from=<s@y.test> proto=ESMTP helo=<h.test> by=core:closed-relay\n')
  })

  it('a delivery: to, relay, delay in seconds, dsn, status with the response', () => {
    const d = { event: 'delivered', queueId: 'Q1', recipient: 'b@x.test', route: 'mx', remoteHost: 'mx.x.test[192.0.2.2]:25', code: 250, dsn: '2.0.0', response: '250 2.0.0 Ok', attempts: 1, queuedMs: 1234, msg: 'delivered' }
    expect(text(d)).toBe('relay/smtp[7]: Q1: to=<b@x.test>, relay=mx.x.test[192.0.2.2]:25, delay=1.23, dsn=2.0.0, attempts=1, status=sent (250 2.0.0 Ok)\n')
    expect(text({ ...d, event: 'bounced', route: 'lmtp', remoteHost: undefined, response: '5.4.4 no route' , dsn: '5.4.4' })).toBe('relay/lmtp[7]: Q1: to=<b@x.test>, relay=none, delay=1.23, dsn=5.4.4, attempts=1, status=bounced (5.4.4 no route)\n')
  })

  it('any other line: level word, message, fields; nothing a client sent can break the line', () => {
    expect(text({ level: 40, msg: 'throttle: slow', domain: 'x.test', err: { message: 'boom\nsecond line' } })).toBe('relay[7]: warning: throttle: slow (domain=x.test, err=boom second line)\n')
    expect(text({ event: 'rejected', stage: 'helo', code: 550, dsn: '5.7.1', text: 'no', helo: 'evil\r\n2026-01-01T00:00:00Z x relay/smtpd[1]: NOQUEUE: reject: RCPT from x[203.0.113.1]: 550 5.7.1', client: '192.0.2.9', plugin: 'p' })).not.toContain('\n2026')
    expect(toMaillogLine('not json\n')).toBe('not json\n')
  })
})
