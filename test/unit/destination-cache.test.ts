// The MX answers delivery keeps (core/delivery/mx.ts): entries past their time leave the cache as
// new answers come, not only when the cap of 10,000 pushes the oldest out (a relay that mailed
// 10,000 domains once kept all of them, ~1 KB each, in every process).
import { describe, expect, it } from 'vitest'
import { dropExpired } from '../../core/delivery/mx.js'

describe('dropExpired', () => {
  it('drops the expired entries at the front and stops at the first live one', () => {
    const cache = new Map([['a.test', { until: 100 }], ['b.test', { until: 200 }], ['c.test', { until: 300 }]])
    dropExpired(cache, 200)
    expect([...cache.keys()]).toEqual(['c.test'])
    dropExpired(cache, 250)
    expect([...cache.keys()]).toEqual(['c.test'])
    dropExpired(cache, 300)
    expect(cache.size).toBe(0)
  })
})
