// Failed implicit-TLS handshakes per client (core/smtp/tls-failures.ts): the count that refuses a
// client, and how the refusal ends (the end to end case is in test/e2e/client-connections.test.ts).
import { describe, expect, it } from 'vitest'
import { TlsFailures } from '../../core/smtp/tls-failures.js'

const PERIOD = 600_000

describe('TlsFailures', () => {
  it('refuses a client at its 3rd failure in a row (max 3) until the period has passed since the last one; others are not touched', () => {
    const f = new TlsFailures()
    f.failed('a', PERIOD, 0)
    f.failed('a', PERIOD, 1000)
    expect(f.over('a', 3, PERIOD, 1000)).toBeUndefined()
    f.failed('a', PERIOD, 2000)
    expect(f.over('a', 3, PERIOD, 2000)).toBe(3)
    expect(f.over('b', 3, PERIOD, 2000)).toBeUndefined()
    expect(f.over('a', 3, PERIOD, 2000 + PERIOD - 1)).toBe(3)
    expect(f.over('a', 3, PERIOD, 2000 + PERIOD)).toBeUndefined()
    // forgotten: the next failure starts a new count
    f.failed('a', PERIOD, 3000 + PERIOD)
    expect(f.over('a', 1, PERIOD, 3000 + PERIOD)).toBe(1)
    expect(f.over('a', 2, PERIOD, 3000 + PERIOD)).toBeUndefined()
  })

  it('failures further apart than the period do not add up; max 0 never refuses', () => {
    const f = new TlsFailures()
    for (let i = 0; i < 5; i++) f.failed('a', 1000, i * 1000)
    expect(f.over('a', 2, 1000, 4000)).toBeUndefined()
    for (let i = 0; i < 5; i++) f.failed('b', 1000, i)
    expect(f.over('b', 0, 1000, 5)).toBeUndefined()
    expect(f.over('b', 5, 1000, 5)).toBe(5)
  })
})
