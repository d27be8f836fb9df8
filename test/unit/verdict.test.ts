// The verdict table (core/hooks/verdict.ts): what SMTP reply each plugin verdict becomes at each
// stage, and what replyFor guarantees about a plugin's own code, status and text.
import { describe, expect, it } from 'vitest'
import { accept, reject, replyError, replyFor, STAGE_REPLIES, tempfail, type Reply } from '../../core/hooks/verdict.js'

type Stage = keyof typeof STAGE_REPLIES
type Action = 'accept' | 'reject' | 'tempfail'

/** The documented defaults, written out: a change to the table must be a change to this test too. */
const DEFAULTS: Record<Stage, Record<Action, Reply>> = {
  connect: {
    accept: { code: 220, status: '', message: '' },
    reject: { code: 554, status: '5.7.1', message: 'Service refused' },
    tempfail: { code: 421, status: '4.7.0', message: 'Service temporarily unavailable, try again later' },
  },
  helo: {
    accept: { code: 250, status: '', message: '' },
    reject: { code: 550, status: '5.7.1', message: 'HELO/EHLO name refused' },
    tempfail: { code: 450, status: '4.7.1', message: 'HELO/EHLO name temporarily refused' },
  },
  auth: {
    accept: { code: 235, status: '2.7.0', message: 'Authentication successful' },
    reject: { code: 535, status: '5.7.8', message: 'Authentication credentials invalid' },
    tempfail: { code: 454, status: '4.7.0', message: 'Temporary authentication failure' },
  },
  mail: {
    accept: { code: 250, status: '2.1.0', message: 'Ok' },
    reject: { code: 550, status: '5.7.1', message: 'Sender refused' },
    tempfail: { code: 451, status: '4.7.1', message: 'Sender temporarily refused, try again later' },
  },
  rcpt: {
    accept: { code: 250, status: '2.1.5', message: 'Ok' },
    reject: { code: 550, status: '5.7.1', message: 'Recipient refused' },
    tempfail: { code: 450, status: '4.7.1', message: 'Recipient temporarily refused, try again later' },
  },
  data: {
    accept: { code: 250, status: '2.0.0', message: 'Ok' },
    reject: { code: 550, status: '5.7.1', message: 'Message refused' },
    tempfail: { code: 451, status: '4.7.1', message: 'Message temporarily refused, try again later' },
  },
  queue: {
    accept: { code: 250, status: '2.0.0', message: 'Ok' },
    reject: { code: 554, status: '5.7.1', message: 'Message refused' },
    tempfail: { code: 451, status: '4.3.0', message: 'Message could not be queued, try again later' },
  },
}

const STAGES = Object.keys(DEFAULTS) as Stage[]
const ACTIONS: Action[] = ['accept', 'reject', 'tempfail']
const CLASS: Record<Action, number> = { accept: 2, reject: 5, tempfail: 4 }

describe('replyFor: the defaults of every stage', () => {
  it('covers exactly the hook stages that answer the client (every stage but deliver)', () => {
    expect(Object.keys(STAGE_REPLIES).sort()).toEqual([...STAGES].sort())
  })

  for (const stage of STAGES) {
    for (const action of ACTIONS) {
      it(`${stage} × ${action}: ${DEFAULTS[stage][action].code} ${DEFAULTS[stage][action].status || '(no status)'}`, () => {
        const reply = replyFor(stage, { action })
        expect(reply).toEqual(DEFAULTS[stage][action])
        // The code's class is the action's, and so is the enhanced status's (when there is one).
        expect(Math.floor(reply.code / 100)).toBe(CLASS[action])
        if (reply.status) expect(reply.status).toMatch(new RegExp(`^${CLASS[action]}\\.\\d{1,3}\\.\\d{1,3}$`))
      })
    }
  }

  it('only the connect and helo accepts go without an enhanced status code', () => {
    const without = STAGES.flatMap((stage) => ACTIONS.filter((a) => replyFor(stage, { action: a }).status === '').map((a) => `${stage}.${a}`))
    expect(without).toEqual(['connect.accept', 'helo.accept'])
  })
})

describe("replyFor: a plugin's own code, status and text", () => {
  it('keeps all three when their class fits the action', () => {
    expect(replyFor('rcpt', { action: 'reject', code: 553, status: '5.1.3', message: 'No such mailbox here' })).toEqual({
      code: 553,
      status: '5.1.3',
      message: 'No such mailbox here',
    })
    expect(replyFor('mail', { action: 'tempfail', code: 452, status: '4.3.1', message: 'Mailbox full, later' })).toEqual({
      code: 452,
      status: '4.3.1',
      message: 'Mailbox full, later',
    })
    expect(replyFor('rcpt', { action: 'accept', code: 251, status: '2.1.5', message: 'User not local; will forward' })).toEqual({
      code: 251,
      status: '2.1.5',
      message: 'User not local; will forward',
    })
  })

  it("takes the stage's default for what the plugin leaves out", () => {
    expect(replyFor('data', { action: 'reject', message: 'Spam' })).toEqual({ code: 550, status: '5.7.1', message: 'Spam' })
    expect(replyFor('queue', { action: 'tempfail', status: '4.4.5' })).toEqual({
      code: 451,
      status: '4.4.5',
      message: 'Message could not be queued, try again later',
    })
    expect(replyFor('connect', { action: 'reject', code: 521 })).toEqual({ code: 521, status: '5.7.1', message: 'Service refused' })
  })

  it('replaces a code of the wrong class with the stage default, keeping a fitting status and the text', () => {
    // A 4xx on a reject would let the client retry what was meant to be refused for good.
    expect(replyFor('rcpt', { action: 'reject', code: 450, status: '5.1.1', message: 'No such user' })).toEqual({
      code: 550,
      status: '5.1.1',
      message: 'No such user',
    })
    // A 5xx on a tempfail would bounce mail that should have been retried.
    expect(replyFor('data', { action: 'tempfail', code: 554, message: 'Greylisted' })).toEqual({ code: 451, status: '4.7.1', message: 'Greylisted' })
    // A refusal code on an accept does not turn it into a refusal.
    expect(replyFor('mail', { action: 'accept', code: 550 })).toEqual({ code: 250, status: '2.1.0', message: 'Ok' })
  })

  it('replaces a status of the wrong class with the stage default, keeping a fitting code', () => {
    expect(replyFor('rcpt', { action: 'reject', code: 551, status: '4.7.1' })).toEqual({ code: 551, status: '5.7.1', message: 'Recipient refused' })
    expect(replyFor('mail', { action: 'tempfail', code: 421, status: '5.7.1' })).toEqual({
      code: 421,
      status: '4.7.1',
      message: 'Sender temporarily refused, try again later',
    })
    expect(replyFor('auth', { action: 'accept', status: '5.7.8' })).toEqual({ code: 235, status: '2.7.0', message: 'Authentication successful' })
  })

  it('replaces codes that are not three-digit codes of the class (0, two or four digits)', () => {
    expect(replyFor('rcpt', { action: 'reject', code: 0 }).code).toBe(550)
    expect(replyFor('rcpt', { action: 'reject', code: 55 }).code).toBe(550)
    expect(replyFor('rcpt', { action: 'reject', code: 5500 }).code).toBe(550)
    expect(replyFor('rcpt', { action: 'tempfail', code: 45 }).code).toBe(450)
  })
})

describe('the verdict helpers: a mistaken first argument', () => {
  it("keeps the text when the status is no x.y.z; a reply code there is the code (reject('550', 'User unknown'))", () => {
    expect(replyFor('rcpt', reject('550', 'User unknown'))).toEqual({ code: 550, status: '5.7.1', message: 'User unknown' })
    expect(replyFor('rcpt', reject('553', 'Bad sender'))).toEqual({ code: 553, status: '5.7.1', message: 'Bad sender' })
    for (const bad of ['9.9.9', 'abc', '5.7', '5.7.1 x', ''])
      expect(replyFor('rcpt', reject(bad, 'the text')), bad).toEqual({ code: 550, status: '5.7.1', message: 'the text' })
    expect(replyFor('rcpt', tempfail('4.7', 'greylisted'))).toEqual({ code: 450, status: '4.7.1', message: 'greylisted' })
    expect(replyFor('rcpt', tempfail('550', 'not a 4xx'))).toEqual({ code: 450, status: '4.7.1', message: 'not a 4xx' })
    // One argument that is no status is the text.
    expect(replyFor('mail', reject('go away'))).toEqual({ code: 550, status: '5.7.1', message: 'go away' })
  })
})

describe('replyFor: plugin text becomes one safe line', () => {
  it('turns CR LF into a space, so a plugin cannot add reply lines of its own', () => {
    const reply = replyFor('rcpt', { action: 'reject', message: 'Go away\r\n250 2.1.5 Ok' })
    expect(reply.message).toBe('Go away 250 2.1.5 Ok')
    expect(reply.message).not.toMatch(/[\r\n]/)
  })

  it('collapses each run of control characters (NUL, tab, bare CR or LF, ESC, DEL) into one space', () => {
    expect(replyFor('data', { action: 'tempfail', message: 'a\x00b\tc\rd\ne\x1b[31mf\x7fg' }).message).toBe('a b c d e [31mf g')
    expect(replyFor('data', { action: 'reject', message: 'line one\n\n\r\n\tline two' }).message).toBe('line one line two')
    expect(replyFor('helo', { action: 'reject', message: '\r\nleading and trailing\r\n' }).message).toBe(' leading and trailing ')
  })

  it('leaves printable text, non-ASCII included, as it is', () => {
    const text = 'Rejected: <bob@example.com> "quoted" [1.2.3.4] – grüße 100%'
    expect(replyFor('rcpt', { action: 'reject', message: text }).message).toBe(text)
  })

  it('applies to accepts and tempfails as well as rejects', () => {
    expect(replyFor('auth', { action: 'accept', message: 'Welcome\r\nback' }).message).toBe('Welcome back')
    expect(replyFor('connect', { action: 'tempfail', message: 'Busy\n421 bye' }).message).toBe('Busy 421 bye')
  })
})

describe('accept, reject and tempfail', () => {
  it('take an enhanced status code and a text', () => {
    expect(reject('5.7.1', 'not allowed')).toEqual({ action: 'reject', status: '5.7.1', message: 'not allowed' })
    expect(tempfail('4.2.2', 'full')).toEqual({ action: 'tempfail', status: '4.2.2', message: 'full' })
    expect(accept('2.1.5', 'ok')).toEqual({ action: 'accept', status: '2.1.5', message: 'ok' })
  })

  it('take a text alone when the first argument is no status code', () => {
    expect(reject('not allowed')).toEqual({ action: 'reject', message: 'not allowed' })
    // Not a status, with a text after it: the text is the second (the reply check drops the bad status).
    expect(reject('5.7.1 not allowed', 'the text')).toEqual({ action: 'reject', status: '5.7.1 not allowed', message: 'the text' })
    expect(reject('550', 'the text')).toEqual({ action: 'reject', code: 550, message: 'the text' })
  })

  it('take an options object with a code', () => {
    expect(reject({ code: 553, status: '5.1.3', message: 'bad address' })).toEqual({ action: 'reject', code: 553, status: '5.1.3', message: 'bad address' })
    expect(accept({ senders: ['alice@example.com'] })).toEqual({ action: 'accept', senders: ['alice@example.com'] })
  })

  it('with nothing given, are the bare action (the stage supplies the reply)', () => {
    expect(accept()).toEqual({ action: 'accept', status: undefined, message: undefined })
    expect(replyFor('rcpt', tempfail())).toEqual(DEFAULTS.rcpt.tempfail)
  })
})

describe('replyError', () => {
  it('carries the code, and the status before the text', () => {
    const err = replyError(replyFor('rcpt', reject('5.1.1', 'No such user')))
    expect(err.responseCode).toBe(550)
    expect(err.message).toBe('5.1.1 No such user')
  })

  it('has only the text when the reply has no status', () => {
    const err = replyError(replyFor('helo', { action: 'accept', message: 'Hello' }))
    expect(err.responseCode).toBe(250)
    expect(err.message).toBe('Hello')
  })
})

describe('plugin-given code and status must be well-formed', () => {
  it('a status carrying a line break or junk falls back to the stage default', async () => {
    const r = replyFor('rcpt', { action: 'reject', status: '5.1.1\r\n250 2.1.5 Ok', message: 'no' })
    expect(r).toEqual({ code: 550, status: STAGE_REPLIES.rcpt.reject.status, message: 'no' })
    expect(r.status).not.toContain('\n')
    expect(replyFor('mail', { action: 'tempfail', status: '4.x.1' }).status).toBe(STAGE_REPLIES.mail.tempfail.status)
    expect(replyFor('mail', { action: 'tempfail', status: '4.2.1' }).status).toBe('4.2.1')
  })
  it('a code that is not a whole number falls back to the stage default', async () => {
    expect(replyFor('rcpt', { action: 'reject', code: 550.7 }).code).toBe(550)
    expect(replyFor('rcpt', { action: 'reject', code: 554 }).code).toBe(554)
  })
})
