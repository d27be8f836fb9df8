// core/delivery/classify.ts: the category of a failure from representative replies, remote and our own.
import { describe, expect, it } from 'vitest'
import { BOUNCE_CATEGORIES, aboutSender, classify, isHardBounce, parseReply, slowsDestination } from '../../core/delivery/classify.js'

/** [reply as recorded, category] — remote replies with their code, local results as the relay writes them. */
const CASES: [string, string][] = [
  ['550 5.1.1 <bob@dest.test>: Recipient address rejected: User unknown in virtual mailbox table', 'bad-mailbox'],
  // The code decides on its own: a 5.1.1 whose text says "spam" is still a bad mailbox.
  ['550 5.1.1 spamtrap address, no such user', 'bad-mailbox'],
  ['550 No such user here', 'bad-mailbox'],
  ['550 5.2.1 The email account that you tried to reach is disabled', 'bad-mailbox'],
  // Microsoft 365's unknown recipient: 5.1.10 (RFC 7505 null MX) from a remote server that means "no such user".
  ['550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup', 'bad-mailbox'],
  // A refusal of the sender (Postfix smtpd_reject_unlisted_sender, 5.1.7, 5.1.8) is never the recipient's bad mailbox.
  ['550 5.1.0 <ghost@sender.test>: Sender address rejected: User unknown in local recipient table', 'other'],
  ['553 5.1.7 sender mailbox unavailable', 'other'],
  ['550 5.7.1 <ghost@sender.test>: Sender address rejected: undeliverable address', 'policy'],
  ['550 Unknown sender, no such user', 'other'],
  ['552 5.2.2 Mailbox full', 'mailbox-full'],
  ['452 4.2.2 The email account that you tried to reach is over quota', 'mailbox-full'],
  ['554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org', 'policy'],
  ['550 5.7.26 Unauthenticated email is not accepted due to the sender domain DMARC policy', 'policy'],
  ['554 Relay access denied', 'policy'],
  // A permanent "rate limit" is not a throttle: the *.7.* code makes it policy.
  ['550 5.7.1 Message rejected: rate limit exceeded', 'policy'],
  ['5.1.2 Domain nowhere.test does not exist', 'dns'],
  ['4.4.3 DNS lookup for dest.test failed: SERVFAIL', 'dns'],
  ['5.1.10 dest.test accepts no mail (null MX)', 'dns'],
  ['4.4.4 No address for the MX hosts of dest.test', 'dns'],
  ["4.7.5 TLS policy 'verify': mx.dest.test[192.0.2.7]:25: TLS certificate of mx.dest.test not verified: self-signed certificate", 'tls'],
  ['4.4.1 Host mx.dest.test[192.0.2.7]:25 unreachable: TLS negotiation failed: STARTTLS refused: 454 4.7.0 TLS not available', 'tls'],
  ['530 5.7.11 Encryption required for requested authentication mechanism', 'tls'],
  ['535 5.7.8 Authentication credentials invalid', 'auth'],
  // Our wording for a smarthost that refused our credentials: auth, although 454 4.7.0 alone reads as "slow down".
  ['4.7.0 smtp.example.net[192.0.2.9]:587: AUTH as relay failed: 454 4.7.0 Temporary authentication failure', 'auth'],
  ['421 4.7.0 Try again later, closing connection', 'throttled'],
  ['450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages', 'throttled'],
  ['451 4.7.1 Greylisted, please try again in 300 seconds', 'throttled'],
  ['421 mx.dest.test Service not available, closing transmission channel', 'throttled'],
  ['4.4.1 Host mx.dest.test[192.0.2.7]:25 unreachable: 421 4.7.0 too many connections from your IP', 'throttled'],
  ['552 5.3.4 Message size exceeds fixed limit', 'other'],
  // Too many recipients in one transaction (RFC 5321 §4.5.3.1.10): the rest go in another, no "slow down".
  ['452 4.5.3 Too many recipients', 'other'],
  ['452 Too many recipients', 'other'],
  ['451 4.3.0 Temporary local problem', 'other'],
  ['4.4.1 Host mx.dest.test[192.0.2.7]:25 unreachable: connect ECONNREFUSED 192.0.2.7:25', 'other'],
]

describe('classify', () => {
  it.each(CASES)('%s → %s', (response, category) => {
    expect(classify(response)).toBe(category)
  })

  it('covers every category', () => {
    expect(new Set(CASES.map(([, c]) => c))).toEqual(new Set(BOUNCE_CATEGORIES))
  })

  it('a status the relay derived counts when the text carries none', () => {
    expect(classify('connection dropped', '4.7.5')).toBe('tls')
    expect(classify('loops back to myself', '5.4.6')).toBe('other')
    expect(classify('mailbox unavailable', '5.0.0')).toBe('bad-mailbox')
  })

  it('text patterns marked temporary do not apply to permanent replies', () => {
    expect(classify('451 too many messages, slow down')).toBe('throttled')
    expect(classify('554 too many messages, slow down')).toBe('other')
  })
})

describe('parseReply', () => {
  it('reads the basic and enhanced codes, and the remote reply inside our 4.4.1 wrapper', () => {
    expect(parseReply('550 5.1.1 no such user')).toEqual({ code: 550, status: '5.1.1' })
    expect(parseReply('250-2.0.0 ok')).toEqual({ code: 250, status: '2.0.0' })
    expect(parseReply('5.1.2 Domain x does not exist')).toEqual({ code: undefined, status: '5.1.2' })
    expect(parseReply('4.4.1 Host h[192.0.2.1]:25 unreachable: 421 4.7.0 busy')).toEqual({ code: 421, status: '4.7.0' })
    expect(parseReply('4.4.1 Host h[192.0.2.1]:25 unreachable: 554 go away')).toEqual({ code: 554, status: '4.4.1' })
    // A port that looks like a reply code (587, 465) is not taken for one.
    expect(parseReply('4.4.1 Host smtp.x.test[192.0.2.1]:587 refused to talk to me: 421 4.7.0 busy')).toEqual({ code: 421, status: '4.7.0' })
    expect(parseReply('4.4.1 Host smtp.x.test[192.0.2.1]:465 unreachable: connect ECONNREFUSED')).toEqual({ code: undefined, status: '4.4.1' })
    expect(parseReply('connection lost')).toEqual({ code: undefined, status: undefined })
  })
})

describe('isHardBounce', () => {
  it('only a bad mailbox refused permanently', () => {
    expect(isHardBounce('bad-mailbox', '550 5.1.1 user unknown')).toBe(true)
    expect(isHardBounce('bad-mailbox', '450 4.1.1 user unknown, verify later')).toBe(false)
    expect(isHardBounce('bad-mailbox', '5.1.1 no such local user')).toBe(true)
    expect(isHardBounce('bad-mailbox', 'mailbox unavailable', '4.0.0')).toBe(false)
    expect(isHardBounce('bad-mailbox', 'mailbox unavailable', '5.0.0')).toBe(true)
    expect(isHardBounce('bad-mailbox', '4.4.1 Host h unreachable: 550 5.1.1 unknown')).toBe(true)
    expect(isHardBounce('mailbox-full', '552 5.2.2 Mailbox full')).toBe(false)
    expect(isHardBounce('policy', '550 5.7.1 blocked')).toBe(false)
  })

  it('never a reply about the sender, whatever category it was given', () => {
    expect(isHardBounce('bad-mailbox', '550 5.1.0 <s@x.test>: Sender address rejected: User unknown in local recipient table')).toBe(false)
    expect(isHardBounce('bad-mailbox', '553 5.1.7 mailbox unavailable')).toBe(false)
    expect(isHardBounce('bad-mailbox', 'mailbox unavailable', '5.1.8')).toBe(false)
    expect(isHardBounce(classify('550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'), '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup')).toBe(true)
  })
})

describe('aboutSender', () => {
  it('the sender codes (X.1.7, X.1.8) and texts that name the sender; not a recipient refusal', () => {
    expect(aboutSender('550 5.1.0 <s@x.test>: Sender address rejected: User unknown in local recipient table')).toBe(true)
    expect(aboutSender('550 5.7.1 <s@x.test>: Sender address rejected: undeliverable address')).toBe(true)
    expect(aboutSender('553 5.1.7 bad sender mailbox syntax')).toBe(true)
    expect(aboutSender('451 4.1.8 <s@x.test>: Sender address rejected: Domain not found')).toBe(true)
    expect(aboutSender('550 5.1.1 <bob@dest.test>: Recipient address rejected: User unknown')).toBe(false)
    expect(aboutSender('550 5.1.0 Address rejected')).toBe(false)
  })
})

describe('slowsDestination', () => {
  it('rate limits and 421s slow the destination; greylisting and one mailbox\'s 4.2.1 at RCPT do not', () => {
    expect(slowsDestination('421 4.7.0 Too many connections, slow down', undefined, undefined)).toBe(true)
    expect(slowsDestination('450 4.7.1 rate limited, try again later', undefined, 'rcpt')).toBe(true)
    expect(slowsDestination('451 4.7.1 greylisted, try again later', undefined, 'rcpt')).toBe(false)
    const gmail = '450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered'
    expect(slowsDestination(gmail, undefined, 'rcpt')).toBe(false)
    expect(slowsDestination(`450 ${gmail}`, undefined, 'rcpt')).toBe(false) // the code twice, as the throttle builds it
    expect(slowsDestination(gmail, undefined, 'mail')).toBe(true) // to MAIL FROM it speaks of the whole transaction
    expect(slowsDestination('550 5.1.1 no such user', undefined, 'rcpt')).toBe(false)
  })
})
