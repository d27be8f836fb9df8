// statusOf: the DSN Status of a recorded response. A remote reply's enhanced code of its own class;
// the relay's own results (no reply code) by their leading enhanced code.
import { describe, expect, it } from 'vitest'
import { statusOf } from '../../core/mail/dsn-params.js'

describe('statusOf', () => {
  it('takes the leading enhanced code of a local result', () => {
    expect(statusOf('4.4.1 Host mx.dest.test[192.0.2.1]:25 unreachable: ECONNREFUSED', '4.0.0')).toBe('4.4.1')
    expect(statusOf('4.4.3 DNS MX lookup for dest.test failed: ESERVFAIL', '4.0.0')).toBe('4.4.3')
    expect(statusOf('4.7.5 TLS required (encrypt) but the connection is not encrypted', '4.0.0')).toBe('4.7.5')
    expect(statusOf('5.1.2 Domain x.test does not exist (NXDOMAIN)', '5.0.0')).toBe('5.1.2')
    expect(statusOf('4.4.1', '4.0.0')).toBe('4.4.1')
  })

  it('keeps ignoring an enhanced code of another class than the reply code, and what only looks like one', () => {
    expect(statusOf('550 2.0.0 odd', '5.0.0')).toBe('5.0.0')
    expect(statusOf('451 4.3.0 later', '4.0.0')).toBe('4.3.0')
    expect(statusOf('4.4.1x not a code', '4.0.0')).toBe('4.0.0')
    expect(statusOf('connection refused', '4.0.0')).toBe('4.0.0')
  })
})
