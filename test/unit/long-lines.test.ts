// Lines over 998 octets (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1) as readMessage (core/smtp/data.ts)
// reads a message: body lines broken with CRLF, header lines folded, never inside a UTF-8 sequence,
// whatever the chunks the data comes in; and a message whose first line is no header field gets
// the blank line in front of it, so that it can never continue a field the relay puts on top.
import { afterAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { HeaderTooLargeError, readMessage, type HeaderLimits } from '../../core/smtp/data.js'
import { MessageHeaders } from '../../core/mail/headers.js'
import { Spool } from '../../core/queue/spool.js'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'long-lines-'))
const spool = new Spool(dir)
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const LIMITS: HeaderLimits = { maxBytes: 1024 * 1024, maxLines: 10_000, maxFieldLines: 1_000 }
let n = 0

/** `data` cut into chunks of `size` bytes (or of the sizes in turn). */
function chunked(data: Buffer, size: number | number[]): Buffer[] {
  const sizes = Array.isArray(size) ? size : [size]
  const out: Buffer[] = []
  for (let i = 0, k = 0; i < data.length; k++) {
    const s = sizes[k % sizes.length]!
    out.push(data.subarray(i, i + s))
    i += s
  }
  return out
}

/** The message as readMessage leaves it: header fields, then the body. */
async function read(data: Buffer | string, size: number | number[] = 65536, o: { lineEndings?: 'reject' | 'normalize'; limits?: HeaderLimits } = {}) {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data
  const got = await readMessage(Readable.from(chunked(buf, size)), { spool, id: `m${n++}`, lineEndings: o.lineEndings ?? 'normalize', headerLimits: o.limits ?? LIMITS })
  let body: Buffer
  if ('inline' in got.body) body = got.body.inline
  else {
    await got.body.file.flushPending()
    body = fs.readFileSync(got.body.file.path)
    await got.body.file.discard()
  }
  expect(body.length).toBe(got.bodySize)
  return { headers: got.headers, header: got.headers.toBuffer(), body, all: Buffer.concat([got.headers.toBuffer(), body]) }
}

/** Lines of `buf` (split at CRLF; no empty last one after a final CRLF). */
function lines(buf: Buffer): Buffer[] {
  const out: Buffer[] = []
  let pos = 0
  while (pos < buf.length) {
    const eol = buf.indexOf('\r\n', pos)
    if (eol < 0) {
      out.push(buf.subarray(pos))
      break
    }
    out.push(buf.subarray(pos, eol))
    pos = eol + 2
  }
  return out
}

function expectShortLines(buf: Buffer): void {
  expect(buf.toString('latin1').match(/(?<!\r)\n|\r(?!\n)/), 'bare CR or LF').toBeNull()
  const longest = Math.max(...lines(buf).map((l) => l.length))
  expect(longest).toBeLessThanOrEqual(998)
}

/** Every line is whole UTF-8 (no sequence split by a break). */
function expectWholeUtf8(buf: Buffer): void {
  for (const l of lines(buf)) expect(Buffer.from(l.toString('utf8'), 'utf8').equals(l)).toBe(true)
}

const HEAD = 'From: a@b.test\r\nTo: c@d.test\r\nSubject: long\r\n'
/** A string of `octets` UTF-8 octets mixing 1-, 2-, 3- and 4-byte characters. */
function utf8Text(octets: number): string {
  const chars = ['a', 'é', '€', '𝄞', 'z', ' ', 'ü', '中']
  let s = ''
  let len = 0
  for (let i = 0; len < octets; i++) {
    const c = chars[(i * i + (i >> 3)) % chars.length]!
    s += c
    len += Buffer.byteLength(c)
  }
  return s
}

describe('body lines over 998 octets', () => {
  it('breaks a 200,000-octet line into lines of 998 that put together give the line back, whatever the chunks', async () => {
    const line = Array.from({ length: 200_000 }, (_, i) => String.fromCharCode(0x21 + (i % 90))).join('')
    const msg = `${HEAD}\r\nbefore\r\n${line}\r\nafter\r\n`
    for (const size of [65536, 1000, 999, 998, 997, [1, 7, 998, 2, 1001], 4096]) {
      const { header, body } = await read(msg, size)
      expect(header.toString()).toBe(HEAD)
      expectShortLines(body)
      const got = lines(body)
      expect(got[0]!.toString()).toBe('')
      expect(got[1]!.toString()).toBe('before')
      expect(got.at(-1)!.toString()).toBe('after')
      const pieces = got.slice(2, -1)
      expect(pieces.length).toBe(Math.ceil(200_000 / 998))
      expect(pieces.slice(0, -1).every((p) => p.length === 998)).toBe(true)
      expect(Buffer.concat(pieces).toString()).toBe(line)
    }
  })

  it('leaves lines of 998 octets alone (the chunk passed on as it came), breaks 999 into 998 + 1, CRLF split across chunks or not', async () => {
    const ok = `${HEAD}\r\n${'x'.repeat(998)}\r\n${'y'.repeat(998)}\r\n`
    for (const size of [65536, 1, 2, 1000, 1001, 1002]) expect((await read(ok, size)).all.toString()).toBe(ok)
    const over = `${HEAD}\r\n${'x'.repeat(999)}\r\n${'y'.repeat(1996)}\r\n`
    const want = `${HEAD}\r\n${'x'.repeat(998)}\r\nx\r\n${'y'.repeat(998)}\r\n${'y'.repeat(998)}\r\n`
    for (const size of [65536, 1, 3, 998, 999, 1000, 1001, 1002, 1003]) expect((await read(over, size)).all.toString(), `chunks of ${size}`).toBe(want)
    // bare LF line ends normalized first, then broken
    expect((await read(`${HEAD}\n${'x'.repeat(999)}\n`, 500)).all.toString()).toBe(`${HEAD}\r\n${'x'.repeat(998)}\r\nx\r\n`)
  })

  it('never breaks inside a UTF-8 sequence, also when the break point falls on a chunk boundary', async () => {
    const line = utf8Text(20_000)
    const msg = Buffer.from(`${HEAD}\r\n${line}\r\nend\r\n`)
    for (const size of [65536, 1, 2, 3, 5, 997, 998, 999, 1000, 1001, [996, 3, 1], [995, 1, 1, 1, 2]]) {
      const { body } = await read(msg, size)
      expectShortLines(body)
      expectWholeUtf8(body)
      const got = lines(body)
      expect(got.slice(1, -2).every((p) => p.length >= 995)).toBe(true)
      expect(Buffer.concat(got.slice(1, -1)).toString()).toBe(line)
      expect(got.at(-1)!.toString()).toBe('end')
    }
  })

  it('breaks an unterminated last line too, and a long line of a message with no header section', async () => {
    expect((await read(`${HEAD}\r\n${'x'.repeat(1500)}`, 100)).body.toString()).toBe(`\r\n${'x'.repeat(998)}\r\n${'x'.repeat(502)}`)
    const { header, body } = await read(`${'x'.repeat(1500)}\r\n`, 100)
    expect(header.length).toBe(0)
    expect(body.toString()).toBe(`\r\n${'x'.repeat(998)}\r\n${'x'.repeat(502)}\r\n`)
  })
})

describe('header lines over 998 octets', () => {
  it('folds at whitespace the line has: unfolding gives the field back exactly', async () => {
    const words = Array.from({ length: 600 }, (_, i) => `w${i}@example.test`).join(', ')
    const msg = `${HEAD}To: ${words}\r\nX-After: 1\r\n\r\nbody\r\n`
    for (const size of [65536, 1, 999, 4096]) {
      const { headers, header, body } = await read(msg, size)
      expectShortLines(header)
      expect(header.toString().replace(/\r\n(?=[ \t])/g, '')).toBe(`${HEAD}To: ${words}\r\nX-After: 1\r\n`)
      expect(headers.getAll('To')[1]).toBe(words)
      expect(headers.get('X-After')).toBe('1')
      expect(body.toString()).toBe('\r\nbody\r\n')
    }
  })

  it('breaks a run with no whitespace (CRLF and a space), never inside a UTF-8 sequence', async () => {
    const token = 'A'.repeat(5000)
    const text = utf8Text(5000).replace(/ /g, '')
    const msg = `${HEAD}X-Token: ${token}\r\nX-Utf8: ${text}\r\n\r\nbody\r\n`
    for (const size of [65536, 1, 1000, 997]) {
      const { headers, header } = await read(msg, size)
      expectShortLines(header)
      expectWholeUtf8(header)
      const fields = header.toString().split(/\r\n(?![ \t])/)
      // a folding space added at each break: the field's text is there in full, in order
      expect(fields.find((f) => f.startsWith('X-Token:'))!.replace(/\r\n /g, '')).toBe(`X-Token: ${token}`)
      expect(fields.find((f) => f.startsWith('X-Utf8:'))!.replace(/\r\n /g, '')).toBe(`X-Utf8: ${text}`)
      expect(headers.fields.map((f) => f.name)).toEqual(['From', 'To', 'Subject', 'X-Token', 'X-Utf8'])
    }
  })

  it('counts the header limits on the folded lines', async () => {
    const msg = `${HEAD}X-Token: ${'A'.repeat(3000)}\r\n\r\nbody\r\n`
    // X-Token folds into 4 lines
    await expect(read(msg, 65536, { limits: { ...LIMITS, maxFieldLines: 3 } })).rejects.toBeInstanceOf(HeaderTooLargeError)
    expect((await read(msg, 65536, { limits: { ...LIMITS, maxFieldLines: 4 } })).headers.has('X-Token')).toBe(true)
    await expect(read(msg, 65536, { limits: { ...LIMITS, maxLines: 6 } })).rejects.toBeInstanceOf(HeaderTooLargeError)
    expect((await read(msg, 65536, { limits: { ...LIMITS, maxLines: 7 } })).headers.has('X-Token')).toBe(true)
  })

  it('folds a long field a plugin or the relay adds', () => {
    const h = new MessageHeaders()
    h.append('X-Plugin', Array.from({ length: 500 }, (_, i) => `word${i}`).join(' '))
    h.prepend('X-Token', 'B'.repeat(3000))
    expectShortLines(h.toBuffer())
    expect(h.get('X-Plugin')).toBe(Array.from({ length: 500 }, (_, i) => `word${i}`).join(' '))
    expect(h.toBuffer().toString().split(/\r\n(?![ \t])/)[0]!.replace(/\r\n /g, '')).toBe(`X-Token: ${'B'.repeat(3000)}`)
  })
})

describe('a message that does not start with a header field', () => {
  it('gets the blank line in front: a line starting with whitespace can never continue a field put on top', async () => {
    const msg = '\tby mx.trusted.example (Postfix) with ESMTPS id ABC;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\nSubject: x\r\n\r\nbody\r\n'
    for (const size of [65536, 1, 10]) {
      const { headers, body } = await read(msg, size)
      expect(headers.fields).toEqual([])
      expect(body.toString()).toBe(`\r\n${msg}`)
      headers.prepend('Received', 'from x by relay.test; Mon, 1 Jan 2024 00:00:00 +0000')
      const out = Buffer.concat([headers.toBuffer(), body]).toString()
      expect(out.split('\r\n\r\n')[0]).toBe('Received: from x by relay.test; Mon, 1 Jan 2024 00:00:00 +0000')
    }
    // unterminated, or not whitespace but no field either: the same
    expect((await read(' by evil.example', 4)).body.toString()).toBe('\r\n by evil.example')
    expect((await read('hello\r\nSubject: x\r\n\r\nbody\r\n', 4)).body.toString()).toBe('\r\nhello\r\nSubject: x\r\n\r\nbody\r\n')
    // a message with no header section (blank first line) stays as it is
    expect((await read('\r\nbody\r\n', 4)).body.toString()).toBe('\r\nbody\r\n')
  })
})
