// Which errors of the spool write or the queue commit mean "no room": those get 452 4.3.1
// Insufficient system storage (RFC 3463, Postfix's wording) instead of "error reading message".
import { describe, expect, it } from 'vitest'
import fs from 'node:fs'
import { outOfStorage } from '../../core/smtp/accept.js'
import { CORE_REPLIES } from '../../core/hooks/verdict.js'

describe('outOfStorage', () => {
  it('a write to a full device (ENOSPC, from /dev/full), a quota (EDQUOT) and SQLite\'s SQLITE_FULL are out of storage', () => {
    let err: unknown
    try {
      fs.writeFileSync('/dev/full', 'x')
    } catch (e) {
      err = e
    }
    expect(outOfStorage(err)).toBe(true)
    expect(outOfStorage(Object.assign(new Error('quota'), { code: 'EDQUOT' }))).toBe(true)
    expect(outOfStorage(Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' }))).toBe(true)
  })
  it('other failures are not', () => {
    for (const e of [new Error('x'), Object.assign(new Error('x'), { code: 'EIO' }), undefined, null, 'ENOSPC']) expect(outOfStorage(e)).toBe(false)
    expect(CORE_REPLIES.noStorage).toEqual({ code: 452, status: '4.3.1', message: 'Insufficient system storage' })
  })
})
