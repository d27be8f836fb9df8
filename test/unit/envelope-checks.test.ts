// The core's own MAIL FROM / RCPT TO checks (core/smtp/envelope-checks.ts): which refusal each bad
// address or parameter gets, and the address form an accepted one is rewritten to.
import { describe, expect, it } from 'vitest'
import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server'
import { mailFromAllowed, recipientChecked, senderSyntax } from '../../core/smtp/envelope-checks.js'
import type { Listener } from '../../core/smtp/server.js'
import type { SessionInfo } from '../../core/hooks/types.js'

const address = (a: string, args: Record<string, string | boolean> = {}): SMTPServerAddress => ({ address: a, args }) as SMTPServerAddress
const session = (mailFrom: SMTPServerAddress | false = false, rcptTo: SMTPServerAddress[] = []) =>
  ({ envelope: { mailFrom, rcptTo }, openingCommand: 'EHLO', disabledCommands: [] }) as unknown as SMTPServerSession
const listener = (role: Listener['role'], tls: Listener['tls'] = 'starttls'): Listener => ({ host: '127.0.0.1', port: 587, role, tls, proxyProtocol: [] })
const info = (user?: string, secure = false) => ({ user, secure }) as SessionInfo

describe('MAIL FROM before the helo hook', () => {
  it('submission without AUTH: STARTTLS first before TLS, AUTH after it; a stage refusal', () => {
    expect(mailFromAllowed(address('a@x.example'), session(), listener('submission'), info())).toMatchObject({ kind: 'stage', reply: { code: 530, message: expect.stringMatching(/STARTTLS/) } })
    expect(mailFromAllowed(address('a@x.example'), session(), listener('submission'), info(undefined, true))).toMatchObject({ kind: 'stage', reply: { code: 530, message: 'Authentication required' } })
    expect(mailFromAllowed(address('a@x.example'), session(), listener('submission', 'implicit'), info(undefined, true))?.reply.message).toBe('Authentication required')
  })
  it('an authenticated submission or an mx listener passes; a bad ENVID is a protocol refusal', () => {
    expect(mailFromAllowed(address('a@x.example'), session(), listener('submission'), info('a@x.example', true))).toBeUndefined()
    expect(mailFromAllowed(address('a@x.example'), session(), listener('mx'), info())).toBeUndefined()
    expect(mailFromAllowed(address('a@x.example', { ENVID: 'has space' }), session(), listener('mx'), info())).toMatchObject({ kind: 'protocol', reply: { code: 501 } })
  })
})

describe('sender syntax', () => {
  it('takes the null sender and a plain address as they are', () => {
    for (const a of ['', 'user@example.com']) {
      const s = address(a)
      expect(senderSyntax(s)).toBeUndefined()
      expect(s.address).toBe(a)
    }
  })
  it('refuses what is not an address: 553 5.1.7', () => {
    for (const a of ['no-at-sign', 'a@', '@b.example']) expect(senderSyntax(address(a))).toMatchObject({ kind: 'protocol', reply: { code: 553, status: '5.1.7' } })
  })
  it('rewrites an IDN domain to its A-label; a UTF-8 local part needs SMTPUTF8 (553 5.6.7)', () => {
    const idn = address('user@bücher.example')
    expect(senderSyntax(idn)).toBeUndefined()
    expect(idn.address).toBe('user@xn--bcher-kva.example')
    expect(senderSyntax(address('jürgen@example.com'))).toMatchObject({ reply: { code: 553, status: '5.6.7' } })
    expect(senderSyntax(address('jürgen@example.com', { SMTPUTF8: true }))).toBeUndefined()
  })
})

describe('recipient checks', () => {
  const from = address('s@example.com')
  it("a bare postmaster, or the hostname's, becomes config postmaster, else the first local domain's, else the hostname's", () => {
    const pm = address('Postmaster')
    const cfg = (localDomains: string[], postmaster?: string) => ({ localDomains, postmaster, hostname: 'MX.Relay.Example' })
    expect(recipientChecked(pm, session(from), cfg(['local.example', 'other.example']), 100)).toMatchObject({ local: 'postmaster', domain: 'local.example', postmaster: true })
    expect(pm.address).toBe('postmaster@local.example')
    const bare = address('postmaster')
    expect(recipientChecked(bare, session(from), cfg([]), 100)).toMatchObject({ domain: 'mx.relay.example', postmaster: true })
    const atHost = address('postmaster@mx.relay.example')
    expect(recipientChecked(atHost, session(from), cfg(['local.example'], 'ops@elsewhere.example'), 100)).toMatchObject({ local: 'ops', domain: 'elsewhere.example', postmaster: true })
    expect(recipientChecked(address('postmaster@other.example'), session(from), cfg([]), 100)).toMatchObject({ postmaster: false })
  })
  it("postmaster at the literal of the address the client reached (a mapped IPv6 one too) is the relay's; another local part or address is not", () => {
    const cfg = { localDomains: ['local.example'], hostname: 'mx.relay.example' }
    const reached = (localAddress: string) => Object.assign(session(from), { localAddress })
    for (const [to, local] of [['PostMaster@[192.0.2.7]', '::ffff:192.0.2.7'], ['postmaster@[IPv6:::ffff:192.0.2.7]', '192.0.2.7'], ['postmaster@[IPv6:2001:DB8:0::1]', '2001:db8::1']] as const) {
      const pm = address(to)
      expect(recipientChecked(pm, reached(local), cfg, 100), to).toMatchObject({ domain: 'local.example', postmaster: true })
      expect(pm.address).toBe('postmaster@local.example')
    }
    expect(recipientChecked(address('user@[192.0.2.7]'), reached('192.0.2.7'), cfg, 100)).toMatchObject({ domain: '[192.0.2.7]', postmaster: false })
    expect(recipientChecked(address('postmaster@[192.0.2.8]'), reached('192.0.2.7'), cfg, 100)).toMatchObject({ domain: '[192.0.2.8]', postmaster: false })
    expect(recipientChecked(address('postmaster@[192.0.2.7]'), session(from), cfg, 100)).toMatchObject({ postmaster: false })
  })
  it('bad syntax 553 5.1.3, UTF-8 without SMTPUTF8 553 5.6.7, a bad ORCPT 501, one recipient too many 452 4.5.3', () => {
    expect(recipientChecked(address('nobody'), session(from), { localDomains: [], hostname: 'relay.example' }, 100)).toMatchObject({ kind: 'protocol', reply: { code: 553, status: '5.1.3' } })
    expect(recipientChecked(address('jürgen@example.com'), session(from), { localDomains: [], hostname: 'relay.example' }, 100)).toMatchObject({ reply: { code: 553, status: '5.6.7' } })
    expect(recipientChecked(address('jürgen@example.com'), session(address('s@example.com', { SMTPUTF8: true })), { localDomains: [], hostname: 'relay.example' }, 100)).toMatchObject({ local: 'jürgen' })
    expect(recipientChecked(address('r@example.com', { ORCPT: 'rfc822;has space' }), session(from), { localDomains: [], hostname: 'relay.example' }, 100)).toMatchObject({ reply: { code: 501 } })
    const full = session(from, [address('a@example.com'), address('b@example.com')])
    expect(recipientChecked(address('c@example.com'), full, { localDomains: [], hostname: 'relay.example' }, 2)).toMatchObject({ kind: 'protocol', reply: { code: 452, status: '4.5.3' } })
    expect(recipientChecked(address('c@example.com'), full, { localDomains: [], hostname: 'relay.example' }, 3)).toMatchObject({ local: 'c', domain: 'example.com' })
  })
})
