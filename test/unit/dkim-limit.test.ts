// Which DKIM signatures mail-auth hides from mailauth, and the Authentication-Results entries it
// writes for them: bounded however many a message carries.
import { describe, expect, it } from 'vitest'
import { MessageHeaders } from '../../core/mail/headers.js'
import { MAX_SIGNED_FIELDS, limitSignatures } from '../../plugins/mail-auth/dkim-limit.js'

const signature = (d: string, s: string, fields: number) => `DKIM-Signature: v=1; a=rsa-sha256; d=${d}; s=${s}; h=${Array.from({ length: fields }, () => 'from').join(':')}; bh=AAAA; b=AAAA\r\n`
const headers = (sigs: string[]) => MessageHeaders.parse(`${sigs.join('')}From: <a@author.test>\r\nSubject: x\r\n`)

describe('limitSignatures', () => {
  it('a few signatures under every limit: nothing hidden, no entry', () => {
    expect(limitSignatures(headers([signature('author.test', 's1', 5), signature('other.test', 's2', 5)]), 10)).toEqual({ entries: [] })
  })

  it('over maxSignatures: those of the author domain first; ten skipped ones listed, then a count', () => {
    const sigs = [...Array.from({ length: 14 }, (_, i) => signature('other.test', `x${i}`, 3)), signature('author.test', 'mine', 3)]
    const r = limitSignatures(headers(sigs), 2)
    expect(r.entries).toHaveLength(11)
    expect(r.entries.slice(0, 10).every((e) => e.startsWith('dkim=neutral (not verified: limit) header.d=other.test'))).toBe(true)
    expect(r.entries[10]).toBe('dkim=neutral (not verified: limit, 3 more signatures)')
    // The author's signature is verified: it stays in the header mailauth gets.
    expect(r.header!.toString('latin1')).toContain('s=mine;')
  })

  it(`signatures whose h= names more than ${MAX_SIGNED_FIELDS} fields: hidden, ten listed, then one entry for the rest (1,800 made a 180 KB field)`, () => {
    const sigs = Array.from({ length: 1800 }, (_, i) => signature('big.test', `s${i}`, MAX_SIGNED_FIELDS + 1))
    const r = limitSignatures(headers([...sigs, signature('author.test', 'ok', 4)]), 10)
    expect(r.entries).toHaveLength(11)
    expect(r.entries[0]).toBe(`dkim=neutral (not verified: h= names ${MAX_SIGNED_FIELDS + 1} fields, more than ${MAX_SIGNED_FIELDS}) header.d=big.test header.s=s0`)
    expect(r.entries[10]).toBe(`dkim=neutral (not verified: h= over ${MAX_SIGNED_FIELDS} fields, 1790 more signatures)`)
    expect(r.entries.join('; ').length).toBeLessThan(2000)
    const kept = r.header!.toString('latin1')
    expect(kept).toContain('s=ok;')
    expect(kept).not.toContain('d=big.test')
  })
})
