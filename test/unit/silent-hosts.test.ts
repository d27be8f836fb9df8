// The memory of hosts that did not answer: they go last for a minute, twice as long at each further
// silence (at most ten minutes), and take their place again once they answer.
import { describe, expect, it } from 'vitest'
import { SilentHosts } from '../../core/delivery/silent-hosts.js'

const hosts = [{ address: '10.0.0.1' }, { address: '10.0.0.2' }, { address: '10.0.0.3' }]
const order = (m: SilentHosts, port = 25) => m.order(hosts, port).map((h) => h.address)

describe('SilentHosts', () => {
  it('moves a silent host last, keeps the others in their order, and only on that port', () => {
    let now = 1_000_000
    const m = new SilentHosts(() => now)
    m.silent('10.0.0.1', 25)
    expect(order(m)).toEqual(['10.0.0.2', '10.0.0.3', '10.0.0.1'])
    expect(order(m, 587)).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3'])
    m.silent('10.0.0.2', 25)
    expect(order(m)).toEqual(['10.0.0.3', '10.0.0.1', '10.0.0.2'])
    // Every host silent: all are still tried, in their own order.
    m.silent('10.0.0.3', 25)
    expect(order(m)).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3'])
  })

  it('forgets after a minute, then twice as long at each further silence, at most ten minutes', () => {
    let now = 0
    const m = new SilentHosts(() => now)
    const periods: number[] = []
    for (let i = 0; i < 6; i++) {
      const from = now
      m.silent('10.0.0.1', 25)
      while (order(m)[0] !== '10.0.0.1') now += 1_000
      periods.push(now - from)
    }
    expect(periods).toEqual([60_000, 120_000, 240_000, 480_000, 600_000, 600_000])
    // Silent again long after the last period: a fresh start.
    now += 3_600_000
    m.silent('10.0.0.1', 25)
    now += 60_000
    expect(order(m)[0]).toBe('10.0.0.1')
  })

  it('an answer (whatever it said) puts the host back at once', () => {
    const m = new SilentHosts(() => 0)
    m.silent('10.0.0.1', 25)
    m.answered('10.0.0.1', 25)
    expect(order(m)).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3'])
  })

  it('holds at most 10,000 hosts, forgetting the oldest first', () => {
    const m = new SilentHosts(() => 0)
    m.silent('10.0.0.1', 25)
    for (let i = 0; i < 10_000; i++) m.silent(`192.0.2.${i}`, i + 1000)
    expect(order(m)[0]).toBe('10.0.0.1')
  })
})
