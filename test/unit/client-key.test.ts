// core/net/client-key.ts (exported to plugins as `clientKey`): the key per-client limits count
// under. IPv6 by its prefix network (default /64, Postfix's smtpd_client_ipv6_prefix_length),
// written one canonical way whatever the spelling; IPv4 and IPv4-mapped IPv6 by the IPv4 address.
import { describe, expect, it } from 'vitest'
import { clientKey } from '../../core/index.js'

describe('clientKey', () => {
  it('an IPv6 address stands for its /64 by default', () => {
    for (let i = 1; i <= 6; i++) expect(clientKey(`2001:db8:1:2::${i}`)).toBe('2001:db8:1:2::/64')
    expect(clientKey('2001:db8:1:2:ffff:ffff:ffff:ffff', 64)).toBe('2001:db8:1:2::/64')
    expect(clientKey('2001:db8:1:3::1', 64)).toBe('2001:db8:1:3::/64')
  })

  it('one key whatever the spelling: upper case, leading zeros, no compression, a zone', () => {
    for (const a of ['2001:DB8:1:2::1', '2001:0db8:0001:0002:0000:0000:0000:0001', '2001:db8:1:2:0:0:0:1', '2001:db8:1:2::1%eth0']) expect(clientKey(a, 64), a).toBe('2001:db8:1:2::/64')
  })

  it('other prefix lengths; /128 is the address itself', () => {
    expect(clientKey('2001:db8:1:2::1', 128)).toBe('2001:db8:1:2::1/128')
    expect(clientKey('2001:db8:1:2::2', 128)).not.toBe(clientKey('2001:db8:1:2::1', 128))
    expect(clientKey('2001:db8:abcd:12ff::1', 48)).toBe('2001:db8:abcd::/48')
    expect(clientKey('2001:db8:abcd:12ff::1', 56)).toBe('2001:db8:abcd:1200::/56')
    expect(clientKey('2001:db8:1:2:3:4:5:6', 80)).toBe('2001:db8:1:2:3::/80')
    expect(clientKey('ffff:ffff::', 1)).toBe('8000::/1')
    expect(clientKey('::1', 64)).toBe('::/64')
  })

  it('IPv4 stays per address; IPv4-mapped IPv6 is its IPv4 address (dotted or hex)', () => {
    expect(clientKey('203.0.113.7', 64)).toBe('203.0.113.7')
    expect(clientKey('203.0.113.8', 1)).toBe('203.0.113.8')
    expect(clientKey('::ffff:203.0.113.7', 64)).toBe('203.0.113.7')
    expect(clientKey('::FFFF:cb00:7107', 128)).toBe('203.0.113.7')
    // Not IPv4-mapped (NAT64 prefix, IPv4-compatible): an IPv6 client.
    expect(clientKey('64:ff9b::203.0.113.7', 96)).toBe('64:ff9b::/96')
  })

  it('what is not an IP address comes back as it is; a bad prefix length throws', () => {
    expect(clientKey('', 64)).toBe('')
    expect(clientKey('not-an-ip', 64)).toBe('not-an-ip')
    expect(clientKey('2001:db8::1::2', 64)).toBe('2001:db8::1::2')
    for (const bad of [0, 129, 64.5, Number.NaN]) expect(() => clientKey('2001:db8::1', bad)).toThrow(RangeError)
  })
})
