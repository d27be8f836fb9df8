// The routing plugin's match patterns are normalised as the relay keeps domains (lower case, an
// internationalized one in A-labels): a U-label pattern fits; one that is no domain is refused.
import { describe, expect, it } from 'vitest'
import { options } from '../../plugins/routing/options.js'
import { compileMatch } from '../../plugins/routing/match.js'

const route = (match: Record<string, unknown>) => options.parse({ routes: [{ kind: 'mx', match }] }).routes[0]!
const issues = (match: Record<string, unknown>) => {
  const r = options.safeParse({ routes: [{ kind: 'mx', match }] })
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`)
}

describe('routing match patterns', () => {
  it('domains in U-labels, upper case, with a trailing dot or a wildcard become A-labels', () => {
    expect(route({ domain: ['Bücher.Test.', '*.BÜCHER.test', '[IPv6:2001:DB8::1]'], sender: ['münchen.test', 'Chef@Köln.test', '<>'] }).match).toEqual({
      domain: ['xn--bcher-kva.test', '*.xn--bcher-kva.test', '[ipv6:2001:db8::1]'],
      sender: ['xn--mnchen-3ya.test', 'chef@xn--kln-sna.test', '<>'],
    })
  })

  it('fit the domains and senders as the relay gives them', () => {
    const m = compileMatch(route({ domain: ['bücher.test', '*.bücher.test'] }))
    expect(['xn--bcher-kva.test', 'a.xn--bcher-kva.test', 'XN--BCHER-KVA.TEST.'].map((d) => m(d, ''))).toEqual([true, true, true])
    expect(m('bucher.test', '')).toBe(false)
    const s = compileMatch(route({ sender: ['münchen.test', 'chef@köln.test'] }))
    expect(['k@xn--mnchen-3ya.test', 'jösé@münchen.test', 'Chef@xn--kln-sna.test', 'chef@köln.test'].map((a) => s('dest.test', a))).toEqual([true, true, true, true])
    expect(s('dest.test', 'other@xn--kln-sna.test')).toBe(false)
  })

  it('a pattern that is no domain is refused naming it', () => {
    expect(issues({ domain: 'a..b' })).toEqual([expect.stringMatching(/^routes\.0\.match\.domain\.0: 'a\.\.b' is not a domain name/)])
    expect(issues({ domain: '.example.com' })).toEqual(["routes.0.match.domain.0: '.example.com' is not a domain: for the subdomains of example.com write '*.example.com'"])
    expect(issues({ domain: '*' })).toHaveLength(1)
    expect(issues({ domain: '*.[192.0.2.1]' })).toHaveLength(1)
    expect(issues({ sender: 'x@' })).toEqual([expect.stringMatching(/^routes\.0\.match\.sender\.0: 'x@' is not an address/)])
    expect(issues({ domain: '/(/' })).toEqual([expect.stringMatching(/^routes\.0\.match\.domain\.0: invalid regular expression/)])
  })
})

describe('routing match regexes', () => {
  it("a regex written with the 'g' or 'y' flag fits every message, not every other one", () => {
    const m = compileMatch(route({ domain: '/example\\.com$/gi', sender: '/^bulk-/y' }))
    expect([1, 2, 3, 4].map(() => m('example.com', 'bulk-a@sender.test'))).toEqual([true, true, true, true])
  })
})
