// Route sending caps: the sliding-window arithmetic (throttle-window.ts), a route's slots in the
// in-memory throttle (key 'r:<name>'), the wait for a slot (route-throttle.ts), and the routing
// plugin's route names (default 'route-<index>', unique) and limits.
import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import type { RelayConfig } from '../../core/config/schema.js'
import { Throttle } from '../../core/delivery/throttle.js'
import { windowRetryAt } from '../../core/delivery/throttle-window.js'
import { admitRoute, checkRouteLimits } from '../../core/delivery/route-throttle.js'
import { options } from '../../plugins/routing/options.js'

const T0 = 1_700_000_000_000

function throttle(): Throttle {
  const config = { default: {}, domains: {}, hosts: {}, backoff: { base: 5_000, max: 20_000, recoverAfter: 2 }, hostWait: 30_000, keyPrefix: 'test:' } as RelayConfig['delivery']['throttle']
  return new Throttle(config, 10, pino({ level: 'silent' }))
}

describe('windowRetryAt', () => {
  it('under the limit: 0 (now)', () => {
    expect(windowRetryAt([], T0, 1000, 1)).toBe(0)
    expect(windowRetryAt([T0 - 500], T0, 1000, 2)).toBe(0)
  })

  it('at the limit: when the oldest start inside the window leaves it', () => {
    expect(windowRetryAt([T0 - 800, T0 - 300], T0, 1000, 2)).toBe(T0 + 200)
  })

  it('starts at or before now - window no longer count (as ZREMRANGEBYSCORE -inf now-window)', () => {
    expect(windowRetryAt([T0 - 1000, T0 - 10], T0, 1000, 2)).toBe(0)
    expect(windowRetryAt([T0 - 999, T0 - 10], T0, 1000, 2)).toBe(T0 + 1)
  })

  it('older starts outside the window are ignored; over the limit (a lowered cap) waits for enough to leave', () => {
    const starts = [T0 - 5000, T0 - 900, T0 - 600, T0 - 300]
    expect(windowRetryAt(starts, T0, 1000, 3)).toBe(T0 + 100)
    expect(windowRetryAt(starts, T0, 1000, 2)).toBe(T0 + 400)
    expect(windowRetryAt(starts, T0, 1000, 1)).toBe(T0 + 700)
  })
})

describe('route slots in the throttle (in memory)', () => {
  it('perSecond: 2 per sliding second, whatever the domains; retryAt is exact', async () => {
    const t = throttle()
    const limits = { perSecond: 2 }
    const a = await t.admitRoute('ses', limits)
    const b = await t.admitRoute('ses', limits)
    expect(a.ok && b.ok).toBe(true)
    const c = await t.admitRoute('ses', limits)
    expect(c.ok).toBe(false)
    if (!c.ok) {
      expect(c.retryAt).toBeGreaterThan(Date.now())
      expect(c.retryAt).toBeLessThanOrEqual(Date.now() + 1000)
    }
    // Another route has its own counters.
    expect((await t.admitRoute('other', limits)).ok).toBe(true)
  })

  it('concurrency: 1 in flight; the slot given back lets the next one in', async () => {
    const t = throttle()
    const a = await t.admitRoute('one', { concurrency: 1 })
    expect(a.ok).toBe(true)
    const b = await t.admitRoute('one', { concurrency: 1 })
    expect(b).toEqual({ ok: false, retryAt: 0 })
    if (a.ok) t.release(a.slot)
    expect((await t.admitRoute('one', { concurrency: 1 })).ok).toBe(true)
  })

  it('admitRoute waits for the next second within the wait, and defers at once past it', async () => {
    const t = throttle()
    const route = { name: 'ses', limits: { perSecond: 1 } }
    const first = await admitRoute(t, route, 5000)
    expect(first.ok).toBe(true)
    const t0 = Date.now()
    const second = await admitRoute(t, route, 5000)
    expect(second.ok).toBe(true)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900)
    // perMinute 1, used: the next slot is a minute away, far past a 2 s wait: deferred now.
    const minute = { name: 'minute', limits: { perMinute: 1 } }
    expect((await admitRoute(t, minute, 2000)).ok).toBe(true)
    const t1 = Date.now()
    const refused = await admitRoute(t, minute, 2000)
    expect(Date.now() - t1).toBeLessThan(500)
    expect(refused.ok).toBe(false)
    if (!refused.ok) {
      expect(refused.retryAt).toBeGreaterThan(Date.now() + 55_000)
      expect(refused.response).toMatch(/^4\.4\.5 Route minute is at its sending cap \(1\/min\)/)
    }
  })

  it('at most maxWaiters wait for a route; the next one is deferred at once, to about its turn', async () => {
    const t = throttle()
    const route = { name: 'busy', limits: { perSecond: 1 } }
    expect((await admitRoute(t, route, 5000, 1)).ok).toBe(true)
    const waiter = admitRoute(t, route, 5000, 1) // waits for the next second
    const t0 = Date.now()
    const overflow = await admitRoute(t, route, 5000, 1)
    expect(Date.now() - t0).toBeLessThan(500)
    expect(overflow.ok).toBe(false)
    // One waiter ahead at 1 per second: its turn is about a second away (and never sooner than 1 s).
    if (!overflow.ok) expect(overflow.retryAt).toBeGreaterThanOrEqual(t0 + 1000)
    expect((await waiter).ok).toBe(true)
  })

  it('no limits (or no name): open at once; limits need a name and positive integers', async () => {
    expect((await admitRoute(throttle(), { name: 'x' }, 1000)).ok).toBe(true)
    expect(checkRouteLimits({ limits: { perSecond: 1 } })).toMatch(/needs a name/)
    expect(checkRouteLimits({ name: 'x', limits: { perSecond: 0 } })).toMatch(/perSecond must be a positive integer/)
    expect(checkRouteLimits({ name: 'x', limits: { concurrency: 2, perMinute: 100 } })).toBeUndefined()
  })
})

describe('routing plugin: route names and limits', () => {
  it("default names 'route-<index>'; explicit names kept", () => {
    const o = options.parse({ routes: [{ kind: 'mx' }, { name: 'ses', kind: 'mx', limits: { perSecond: 14 } }] })
    expect(o.routes.map((r) => r.name)).toEqual(['route-0', 'ses'])
    expect(o.routes[1]!.limits).toEqual({ perSecond: 14 })
  })

  it('names must be unique (a default name counts) and fit a metric label', () => {
    const dup = options.safeParse({ routes: [{ name: 'ses' }, { name: 'ses' }] })
    expect(dup.error?.issues[0]?.message).toMatch(/route name 'ses' is already used by routes\[0\]/)
    const clash = options.safeParse({ routes: [{}, { name: 'route-0' }] })
    expect(clash.success).toBe(false)
    expect(options.safeParse({ routes: [{ name: 'has space' }] }).success).toBe(false)
    expect(options.safeParse({ routes: [{ name: 'ses', limits: { perSecond: 0 } }] }).success).toBe(false)
    expect(options.safeParse({ routes: [{ name: 'ses', limits: { perHour: 5 } }] }).success).toBe(false)
  })
})
