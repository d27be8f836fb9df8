// core/delivery/route-check.ts: which routes a deliver hook may return. A typo or a wrong kind of
// value is named (and the attempt deferred) instead of the mail silently taking another way; the
// routes the routing plugin builds (keys left undefined) pass; no value is quoted back.
import { describe, expect, it } from 'vitest'
import { routeProblem } from '../../core/delivery/route-check.js'

describe('routeProblem', () => {
  it('passes the routes plugins build, undefined keys included', () => {
    expect(routeProblem({})).toBeUndefined()
    expect(routeProblem({ kind: 'mx', tls: 'verify', localAddress: undefined, helo: undefined, name: undefined, limits: undefined })).toBeUndefined()
    expect(routeProblem({ kind: 'smtp', hosts: ['smtp.sendgrid.net'], port: 587, implicitTls: false, tls: 'encrypt', auth: { user: 'apikey', pass: 'secret' }, name: 'sendgrid', limits: { perSecond: 10 } })).toBeUndefined()
    expect(routeProblem({ kind: 'lmtp', socketPath: '/run/dovecot/lmtp' })).toBeUndefined()
  })

  it('names a key no route has, in the route, its auth and its limits', () => {
    expect(routeProblem({ host: ['smtp.example'] })).toMatch(/^unknown key 'host' \(a route has: kind, hosts, port,/)
    expect(routeProblem({ hosts: ['smtp.example'], tsl: 'verify' })).toMatch(/^unknown key 'tsl'/)
    expect(routeProblem({ hosts: ['smtp.example'], auth: { user: 'u', pass: 'p', method: 'LOGIN' } })).toMatch(/^unknown key 'auth\.method' \(auth has: user, pass\)/)
    expect(routeProblem({ name: 'x', limits: { perHour: 10 } })).toMatch(/^unknown key 'limits\.perHour' \(limits has: concurrency, perSecond, perMinute\)/)
  })

  it('names a value of the wrong kind, never quoting it', () => {
    const cases: [unknown, RegExp][] = [
      [null, /takes an object/],
      [['smtp.example'], /takes an object/],
      [{ kind: 'smarthost' }, /^kind must be one of mx, smtp, lmtp$/],
      [{ tls: 'required' }, /^tls must be one of may, encrypt, verify$/],
      [{ hosts: 'smtp.example' }, /^hosts must be a list/],
      [{ hosts: ['smtp.example', ''] }, /^hosts must be a list/],
      [{ hosts: ['smtp.example'], port: '587' }, /^port must be a whole number from 1 to 65535$/],
      [{ hosts: ['smtp.example'], port: 70000 }, /^port must be/],
      [{ helo: '' }, /^helo must be a non-empty string$/],
      [{ implicitTls: 'yes' }, /^implicitTls must be true or false$/],
      [{ hosts: ['smtp.example'], auth: { user: 'u', pass: 12345678 } }, /^auth must be \{ user, pass \}, both strings$/],
      [{ name: 'x', limits: 5 }, /^limits must be an object$/],
      [{ limits: { perSecond: 1 } }, /needs a name/],
    ]
    for (const [route, problem] of cases) expect(routeProblem(route), JSON.stringify(route)).toMatch(problem)
    expect(routeProblem({ hosts: ['smtp.example'], auth: { user: 'u', pass: 99 } })).not.toContain('99')
  })
})
