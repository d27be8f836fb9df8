// core/delivery/throttle.ts, in memory (no Redis): per-domain room, the one-minute rate window,
// slots taken and given back, backoff and pause after "slow down", recovery, per-host throttling.
import { describe, expect, it } from 'vitest'
import { pino } from 'pino'
import type { RelayConfig } from '../../core/config/schema.js'
import { Throttle, throughHost, type Limits } from '../../core/delivery/throttle.js'
import type { Outcome } from '../../core/delivery/smtp-session.js'

type ThrottleConfig = RelayConfig['delivery']['throttle']
const log = pino({ level: 'silent' })
const T0 = 1_700_000_000_000

function throttle(over: { default?: Limits; domains?: Record<string, Limits>; hosts?: Record<string, Limits>; backoff?: Partial<ThrottleConfig['backoff']> } = {}, perDomain = 10): Throttle {
  const config: ThrottleConfig = {
    default: over.default ?? {},
    domains: over.domains ?? {},
    hosts: over.hosts ?? {},
    backoff: { base: 5_000, max: 20_000, recoverAfter: 2, ...over.backoff },
    hostWait: 30_000,
    keyPrefix: 'test:',
  } as ThrottleConfig
  return new Throttle(config, perDomain, log)
}

const slot = (t: Throttle, domain: string, now: number) => {
  const a = t.admitLocal(domain, now)
  if (!a.ok) throw new Error(`refused: retry at ${a.retryAt}`)
  return a.slot
}

describe('room and slots', () => {
  it('no limit and no state: undefined (only perDomain limits the domain)', () => {
    const t = throttle()
    expect(t.room('free.test', T0)).toBeUndefined()
    expect(t.active).toBe(false)
    expect(t.shared).toBe(false)
  })

  it('concurrency: each admitted job takes a slot, release gives it back', () => {
    const t = throttle({ domains: { 'dest.test': { concurrency: 2 } } })
    expect(t.active).toBe(true)
    expect(t.room('dest.test', T0)).toBe(2)
    const a = slot(t, 'dest.test', T0)
    expect(t.room('dest.test', T0)).toBe(1)
    slot(t, 'dest.test', T0)
    expect(t.room('dest.test', T0)).toBe(0)
    expect(t.admitLocal('dest.test', T0)).toEqual({ ok: false, retryAt: 0 })
    t.release(a)
    expect(t.room('dest.test', T0)).toBe(1)
    expect(t.admitLocal('dest.test', T0).ok).toBe(true)
  })

  it('never more than perDomain, whatever the rule says', () => {
    const t = throttle({ default: { concurrency: 50 } }, 3)
    expect(t.room('any.test', T0)).toBe(3)
  })

  it('rules: exact domain first, else the longest matching wildcard, over the default', () => {
    const t = throttle({ default: { perMinute: 100, concurrency: 9 }, domains: { '*.example.net': { concurrency: 4 }, '*.mx.example.net': { concurrency: 2 }, 'example.net': { concurrency: 7 } } })
    expect(t.domainLimits('example.net')).toEqual({ perMinute: 100, concurrency: 7 })
    expect(t.domainLimits('a.example.net')).toEqual({ perMinute: 100, concurrency: 4 })
    expect(t.domainLimits('b.mx.example.net')).toEqual({ perMinute: 100, concurrency: 2 })
    expect(t.domainLimits('EXAMPLE.NET.')).toEqual({ perMinute: 100, concurrency: 7 })
    expect(t.domainLimits('other.test')).toEqual({ perMinute: 100, concurrency: 9 })
  })

  it('messages per connection: the host rule, else the domain rule, else the default', () => {
    const t = throttle({ default: { messagesPerConnection: 50 }, domains: { 'dest.test': { messagesPerConnection: 20 } }, hosts: { 'mx1.dest.test': { messagesPerConnection: 5 }, '192.0.2.9': { messagesPerConnection: 3 } } })
    expect(t.messagesPerConnection('dest.test', 'mx1.dest.test', '192.0.2.1')).toBe(5)
    expect(t.messagesPerConnection('dest.test', 'mx2.dest.test', '192.0.2.9')).toBe(3)
    expect(t.messagesPerConnection('dest.test', 'mx2.dest.test', '192.0.2.2')).toBe(20)
    expect(t.messagesPerConnection('other.test', 'mx.other.test', '192.0.2.3')).toBe(50)
  })
})

describe('rate window', () => {
  it('perMinute counts starts over a sliding minute, released or not', () => {
    const t = throttle({ domains: { 'dest.test': { perMinute: 3 } } })
    t.release(slot(t, 'dest.test', T0))
    t.release(slot(t, 'dest.test', T0 + 1_000))
    t.release(slot(t, 'dest.test', T0 + 2_000))
    expect(t.room('dest.test', T0 + 3_000)).toBe(0)
    // Refused until the oldest start leaves the window.
    expect(t.admitLocal('dest.test', T0 + 3_000)).toEqual({ ok: false, retryAt: T0 + 60_000 })
    expect(t.room('dest.test', T0 + 59_999)).toBe(0)
    expect(t.room('dest.test', T0 + 60_000)).toBe(1)
    expect(t.room('dest.test', T0 + 62_000)).toBe(3)
    expect(t.admitLocal('dest.test', T0 + 60_000).ok).toBe(true)
  })

  it('room is the lower of the free concurrency and what the minute has left', () => {
    const t = throttle({ domains: { 'dest.test': { perMinute: 5, concurrency: 4 } } })
    slot(t, 'dest.test', T0)
    expect(t.room('dest.test', T0)).toBe(3)
    t.release(slot(t, 'dest.test', T0))
    t.release(slot(t, 'dest.test', T0))
    // 3 started in this minute (5 - 3 = 2 left), 1 in flight (4 - 1 = 3 free).
    expect(t.room('dest.test', T0 + 1)).toBe(2)
  })

  it('forgets a domain with nothing to remember', () => {
    const t = throttle({ domains: { 'dest.test': { perMinute: 5 } } })
    const s = slot(t, 'dest.test', T0)
    expect(t.domains(T0)).toEqual(['dest.test'])
    t.release(s)
    expect(t.domains(T0 + 1)).toEqual(['dest.test'])
    expect(t.domains(T0 + 60_001)).toEqual([])
  })
})

describe('backoff after "slow down"', () => {
  it('halves what was in use, pauses base then doubling to max; a running pause is kept', () => {
    const t = throttle({ domains: { 'dest.test': { concurrency: 8 } } })
    for (let i = 0; i < 4; i++) slot(t, 'dest.test', T0)
    const key = Throttle.domainKey('dest.test')
    expect(t.backoffDomain('dest.test', T0)).toEqual({ pauseMs: 5_000, concurrency: 2 })
    expect(t.pausedUntil(key, T0 + 1)).toBe(T0 + 5_000)
    expect(t.room('dest.test', T0 + 1)).toBe(0)
    expect(t.admitLocal('dest.test', T0 + 1)).toEqual({ ok: false, retryAt: T0 + 5_000 })
    // Several replies of one burst count once.
    expect(t.backoffDomain('dest.test', T0 + 2)).toBeUndefined()
    expect(t.pausedUntil(key, T0 + 5_000)).toBe(0)
    // After the pause: the reduced concurrency (2) less the 4 still in flight.
    expect(t.room('dest.test', T0 + 5_000)).toBe(0)
    expect(t.backoffDomain('dest.test', T0 + 5_000)).toEqual({ pauseMs: 10_000, concurrency: 1 })
    expect(t.backoffDomain('dest.test', T0 + 15_000)).toEqual({ pauseMs: 20_000, concurrency: 1 })
    expect(t.backoffDomain('dest.test', T0 + 35_000)).toEqual({ pauseMs: 20_000, concurrency: 1 })
  })

  it('forgets destinations that slowed it down once and got no mail since: its state stays bounded', () => {
    // Destinations are whatever recipients (and bounced senders) name: each one that ever answered
    // 421 kept its pause and reduced concurrency in memory for good. Forgotten as Redis forgets its
    // shared copy: max(4 × backoff.max, 1 minute) after the pause ended (here 80 s).
    const t = throttle()
    for (let i = 0; i < 1000; i++) {
      t.backoffDomain(`d${i}.test`, T0)
      t.backoff(Throttle.hostKey(`192.0.2.${i % 250}`, 2500 + i), {}, Number.MAX_SAFE_INTEGER, T0)
    }
    expect(t.domains(T0 + 30_000)).toHaveLength(1000)
    expect(t.size).toBe(2000)
    // Still remembered within the window: a new 421 doubles the pause.
    expect(t.backoffDomain('d0.test', T0 + 30_000)).toEqual({ pauseMs: 10_000, concurrency: 1 })
    expect(t.domains(T0 + 40_000 + 80_001)).toEqual([])
    expect(t.size).toBe(0)
    // Back at base once forgotten.
    expect(t.backoffDomain('d0.test', T0 + 200_000)).toEqual({ pauseMs: 5_000, concurrency: 1 })
  })

  it('recovers one connection per `recoverAfter` deliveries; the next backoff starts at base', () => {
    const t = throttle({ domains: { 'dest.test': { concurrency: 4 } }, backoff: { recoverAfter: 2 } })
    const slots = [0, 1, 2, 3].map(() => slot(t, 'dest.test', T0))
    expect(t.backoffDomain('dest.test', T0)).toEqual({ pauseMs: 5_000, concurrency: 2 })
    for (const s of slots) t.release(s)
    const after = T0 + 5_000
    expect(t.room('dest.test', after)).toBe(2)
    t.successDomain('dest.test')
    expect(t.room('dest.test', after)).toBe(2)
    t.successDomain('dest.test')
    expect(t.room('dest.test', after)).toBe(3)
    t.successDomain('dest.test')
    t.successDomain('dest.test')
    // Back at the configured limit.
    expect(t.room('dest.test', after)).toBe(4)
    expect(t.backoffDomain('dest.test', after)).toEqual({ pauseMs: 5_000, concurrency: 1 })
  })
})

describe('throughHost', () => {
  const host = { name: 'mx.dest.test', address: '192.0.2.7' }
  const done = (code: number, response: string): Outcome => ({ kind: 'done', replies: new Map([['bob@dest.test', { ok: code < 300, code, response }]]), remoteHost: 'mx.dest.test[192.0.2.7]:25', tls: false })

  it('a 421 / 4.7.x "slow down" pauses the host; greylisting and success do not', async () => {
    const key = Throttle.hostKey(host.address, 25)
    const t = throttle()
    await throughHost(t, host, 25, 1000, async () => done(451, '4.7.1 Greylisted, try again in 300 seconds'))
    expect(t.pausedUntil(key)).toBe(0)
    await throughHost(t, host, 25, 1000, async () => done(250, '2.0.0 ok'))
    expect(t.pausedUntil(key)).toBe(0)
    const before = Date.now()
    await throughHost(t, host, 25, 1000, async () => ({ kind: 'unreachable', code: 421, response: '421 4.7.0 too many connections', remoteHost: 'mx.dest.test[192.0.2.7]:25' }))
    expect(t.pausedUntil(key)).toBeGreaterThanOrEqual(before + 5_000)
    // Paused: no slot within the wait, the host counts as unreachable for this attempt.
    let ran = false
    const outcome = await throughHost(t, host, 25, 50, async () => ((ran = true), done(250, 'ok')))
    expect(ran).toBe(false)
    expect(outcome).toEqual({ kind: 'unreachable', response: 'local throttle: no slot for this host within 50 ms (limit or backoff pause)', remoteHost: 'mx.dest.test[192.0.2.7]:25', notTried: true })
  })

  it('holds the host slot while the transaction runs and gives it back after', async () => {
    const t = throttle({ hosts: { 'mx.dest.test': { concurrency: 1 } } })
    let release!: () => void
    const first = throughHost(t, host, 25, 1000, () => new Promise<Outcome>((resolve) => (release = () => resolve(done(250, 'ok')))))
    await new Promise((r) => setTimeout(r, 10))
    const waiting = await throughHost(t, host, 25, 30, async () => done(250, 'ok'))
    expect(waiting.kind).toBe('unreachable')
    release()
    await first
    const after = await throughHost(t, host, 25, 30, async () => done(250, 'ok'))
    expect(after.kind).toBe('done')
  })

  it('without a throttle it just runs', async () => {
    expect((await throughHost(undefined, host, 25, 0, async () => done(250, 'ok'))).kind).toBe('done')
  })
})
