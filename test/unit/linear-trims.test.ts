// Trimming a run of characters at the end of client-supplied text with a regular expression
// (`/[ \t]+$/`, `/\.+$/`) takes time quadratic in a long run that is not at the end: V8 tries the
// run again from each of its positions. A line of "--" and 60,000 spaces in a multipart message
// took 3.6 s to scan for 8-bit parts, a From: address with 300,000 dots over a minute. These read
// such texts whole, in time linear in their size.
import { describe, expect, it } from 'vitest'
import { Readable } from 'node:stream'
import { scan8bit, sevenBitStream } from '../../core/mail/downgrade.js'
import { headerAddresses } from '../../core/mail/header-addresses.js'

const read = async (r: Readable) => {
  const chunks: Buffer[] = []
  for await (const c of r) chunks.push(Buffer.from(c as Buffer))
  return Buffer.concat(chunks).toString('latin1')
}

describe('texts with long runs that are not at their end', () => {
  it('a multipart with 20 lines of "--" and 60,000 spaces is scanned and converted to 7-bit; its real boundaries still count', async () => {
    const spaced = `--${' '.repeat(60_000)}x\r\n`
    const message = Buffer.from(
      `MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n--b0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\u00e9\r\n--b0 \t\r\nContent-Type: text/plain\r\n\r\n${spaced.repeat(20)}--b0--\r\n`,
      'utf8',
    )
    const scan = await scan8bit(Readable.from([message]))
    expect(scan.eightBit).toBe(true)
    expect(scan.unconvertible).toBeUndefined()
    expect(scan.convert.size).toBe(1)
    const out = await read(sevenBitStream(Readable.from([message]), scan))
    expect(out).toContain('caf=C3=A9')
    expect(out).not.toMatch(/[\x80-\xff]/)
    // The second part (after a boundary line with trailing white space) stays as it was.
    expect(out).toContain(`--b0 \t\r\nContent-Type: text/plain\r\n\r\n${spaced.repeat(20)}--b0--\r\n`)
  })

  it('a From: field holding an address with 300,000 dots before its end is read: its addresses found, the trailing dot of a sentence dropped', () => {
    const dots = `a${'.'.repeat(300_000)}b@example.com`
    expect(headerAddresses(`${dots}`)).toEqual([dots])
    expect(headerAddresses('Bob <bob@example.com>, see carol@example.net...')).toEqual(['bob@example.com', 'carol@example.net'])
  })
})
