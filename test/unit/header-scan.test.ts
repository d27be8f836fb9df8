// The header section as readMessage (core/smtp/data.ts) finds it and MessageHeaders
// (core/mail/headers.ts) keeps it, pinned against a plain model of the rules (the way the relay
// did it before reading became linear): where the header ends, whatever the chunks the data comes
// in (a CRLF or a field name split across chunks); folded fields; the size, line and field-line
// limits at their exact bounds; bare CR / LF; and that toBuffer follows every change to `fields`.
import { afterAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { BareLineEndingError, HeaderTooLargeError, readMessage, type HeaderLimits } from '../../core/smtp/data.js'
import { MessageHeaders } from '../../core/mail/headers.js'
import { Spool } from '../../core/queue/spool.js'
import { hopCount, hopCountOf } from '../../core/mail/received.js'
import { stripForged } from '../../plugins/mail-auth/auth-results.js'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'header-scan-'))
const spool = new Spool(dir)
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
let n = 0

const BIG: HeaderLimits = { maxBytes: 1024 * 1024, maxLines: 10_000, maxFieldLines: 1_000 }

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

type Outcome = { raws: string[]; body: string } | { error: string }

/** What readMessage makes of `data` in chunks of `size`: the fields' raw text and the body, or the error. */
async function read(data: Buffer, size: number | number[], limits: HeaderLimits, lineEndings: 'reject' | 'normalize' = 'reject'): Promise<Outcome> {
  try {
    const got = await readMessage(Readable.from(chunked(data, size)), { spool, id: `h${n++}`, lineEndings, headerLimits: limits, wrap: false })
    if (!('inline' in got.body)) throw new Error('expected an inline body')
    const raws = got.headers.fields.map((f) => f.raw)
    expect(got.headers.toBuffer().toString('latin1')).toBe(raws.join(''))
    return { raws, body: got.body.inline.toString('latin1') }
  } catch (err) {
    if (err instanceof HeaderTooLargeError) return { error: `too large: ${err.limit}` }
    if (err instanceof BareLineEndingError) return { error: 'bare' }
    throw err
  }
}

const FIELD_LINE = /^[\x21-\x39\x3b-\x7e]+[ \t]*:/

/** The rules, written plainly (no lines over 998 octets here: their folding has its own tests). */
function model(data: Buffer, limits: HeaderLimits, lineEndings: 'reject' | 'normalize'): Outcome {
  let text = data.toString('latin1')
  if (/\r(?!\n)|(?<!\r)\n/.test(text)) {
    if (lineEndings === 'reject') return { error: 'bare' }
    text = text.replace(/\r\n|\r|\n/g, '\r\n')
  }
  const raws: string[] = []
  let pos = 0
  let lines = 0
  let fieldLines = 0
  let end: { at: number; separator: boolean } | undefined
  while (!end) {
    const eol = text.indexOf('\r\n', pos)
    const isHeader = (line: string) => ((line[0] === ' ' || line[0] === '\t') && raws.length > 0) || FIELD_LINE.test(line.slice(0, 200))
    if (eol < 0) {
      // An unterminated last line: over the size limit it fails if it is header text, else it is body.
      if (pos < text.length && text.length > limits.maxBytes && isHeader(text.slice(pos))) return { error: 'too large: size' }
      end = { at: pos, separator: pos < text.length }
    } else if (eol === pos) end = { at: pos, separator: false }
    else if (!isHeader(text.slice(pos, eol))) end = { at: pos, separator: true }
    else {
      const continuation = text[pos] === ' ' || text[pos] === '\t'
      fieldLines = continuation ? fieldLines + 1 : 1
      lines++
      if (eol + 2 > limits.maxBytes) return { error: 'too large: size' }
      if (lines > limits.maxLines) return { error: 'too large: lines' }
      if (fieldLines > limits.maxFieldLines) return { error: 'too large: fieldLines' }
      const line = text.slice(pos, eol + 2)
      if (continuation) raws[raws.length - 1] += line
      else raws.push(line)
      pos = eol + 2
    }
  }
  return { raws, body: (end.separator ? '\r\n' : '') + text.slice(end.at) }
}

/** Every way of cutting `data` into two chunks, plus 1-, 2- and 3-byte chunks and uneven ones. */
function cuts(data: Buffer): (number | number[])[] {
  const out: (number | number[])[] = [data.length || 1, 1, 2, 3, [5, 1, 9, 2]]
  for (let i = 1; i < data.length; i++) out.push([i, data.length])
  return out
}

async function expectAsModel(data: Buffer, limits: HeaderLimits, lineEndings: 'reject' | 'normalize' = 'reject') {
  const want = model(data, limits, lineEndings)
  for (const size of cuts(data)) expect(await read(data, size, limits, lineEndings), `${JSON.stringify(data.toString('latin1'))} in chunks ${JSON.stringify(size)}`).toEqual(want)
  return want
}

describe('where the header section ends, whatever the chunks', () => {
  it('at the blank line, the CRLFs split across chunks or not; folded fields kept whole', async () => {
    const msg = Buffer.from('From: a@b.test\r\nSubject: one\r\n two\r\n\tthree\r\nX-Empty:\r\nX-Sp  \t: v\r\n\r\nbody\r\n\r\nmore: x\r\n')
    expect(await expectAsModel(msg, BIG)).toEqual({
      raws: ['From: a@b.test\r\n', 'Subject: one\r\n two\r\n\tthree\r\n', 'X-Empty:\r\n', 'X-Sp  \t: v\r\n'],
      body: '\r\nbody\r\n\r\nmore: x\r\n',
    })
    const h = (await readMessage(Readable.from([msg]), { spool, id: `h${n++}`, lineEndings: 'reject', headerLimits: BIG })).headers
    expect(h.get('subject')).toBe('one two\tthree')
    expect(h.fields.map((f) => f.name)).toEqual(['From', 'Subject', 'X-Empty', 'X-Sp'])
  })

  it('at a line that is no field (a blank line put in front of it), or an unterminated one; none at all', async () => {
    expect(await expectAsModel(Buffer.from('A: 1\r\nnot a field\r\nB: 2\r\n'), BIG)).toEqual({ raws: ['A: 1\r\n'], body: '\r\nnot a field\r\nB: 2\r\n' })
    expect(await expectAsModel(Buffer.from('A: 1\r\n:no name\r\n'), BIG)).toEqual({ raws: ['A: 1\r\n'], body: '\r\n:no name\r\n' })
    expect(await expectAsModel(Buffer.from('A: 1\r\nB: unterminated'), BIG)).toEqual({ raws: ['A: 1\r\n'], body: '\r\nB: unterminated' })
    expect(await expectAsModel(Buffer.from(' starts with space\r\nA: 1\r\n\r\nb\r\n'), BIG)).toEqual({ raws: [], body: '\r\n starts with space\r\nA: 1\r\n\r\nb\r\n' })
    expect(await expectAsModel(Buffer.from('A: 1\r\n'), BIG)).toEqual({ raws: ['A: 1\r\n'], body: '' })
    expect(await expectAsModel(Buffer.from('\r\nbody'), BIG)).toEqual({ raws: [], body: '\r\nbody' })
    expect(await read(Buffer.alloc(0), 1, BIG)).toEqual({ raws: [], body: '' })
  })

  it('a field name is looked for in the first 200 octets of a line only', async () => {
    const name199 = `X${'n'.repeat(198)}`
    expect(await expectAsModel(Buffer.from(`A: 1\r\n${name199}:v\r\n\r\nb\r\n`), BIG)).toEqual({ raws: ['A: 1\r\n', `${name199}:v\r\n`], body: '\r\nb\r\n' })
    expect(await expectAsModel(Buffer.from(`A: 1\r\n${name199}n:v\r\n\r\nb\r\n`), BIG)).toEqual({ raws: ['A: 1\r\n'], body: `\r\n${name199}n:v\r\n\r\nb\r\n` })
    expect(await expectAsModel(Buffer.from(`A: 1\r\nB${' '.repeat(198)}:v\r\nC${' '.repeat(199)}:v\r\n`), BIG)).toEqual({ raws: ['A: 1\r\n', `B${' '.repeat(198)}:v\r\n`], body: `\r\nC${' '.repeat(199)}:v\r\n` })
  })

  it('8-bit bytes stay as they came; a bare CR or LF is refused, or made a CRLF, wherever the chunks split', async () => {
    expect(await expectAsModel(Buffer.from('Subject: caf\xe9 \xc3\xa9\r\n\r\nb\r\n', 'latin1'), BIG)).toEqual({ raws: ['Subject: caf\xe9 \xc3\xa9\r\n'], body: '\r\nb\r\n' })
    for (const msg of ['A: 1\nB: 2\r\n\r\nb\r\n', 'A: 1\r\rB: 2\r\n\r\nb\r\n', 'A: 1\r\n\r\nb\r', 'A: 1\r\n\r\nb\n', '\nA: 1\r\n', 'A\r: 1\r\n\r\n']) {
      expect(await expectAsModel(Buffer.from(msg), BIG, 'reject')).toEqual({ error: 'bare' })
      await expectAsModel(Buffer.from(msg), BIG, 'normalize')
    }
    expect(await expectAsModel(Buffer.from('A: 1\nB: 2\r\r\nb\r'), BIG, 'normalize')).toEqual({ raws: ['A: 1\r\n', 'B: 2\r\n'], body: '\r\nb\r\n' })
  })
})

describe('header limits at their exact bounds, whatever the chunks', () => {
  const msg = Buffer.from('A: 1\r\nB: 2\r\n x\r\n y\r\nC: 3\r\n\r\nbody\r\n')
  it('maxFieldLines, maxLines and maxBytes (fields with their CRLFs, not the blank line)', async () => {
    const ok = { raws: ['A: 1\r\n', 'B: 2\r\n x\r\n y\r\n', 'C: 3\r\n'], body: '\r\nbody\r\n' }
    expect(await expectAsModel(msg, { ...BIG, maxFieldLines: 3 })).toEqual(ok)
    expect(await expectAsModel(msg, { ...BIG, maxFieldLines: 2 })).toEqual({ error: 'too large: fieldLines' })
    expect(await expectAsModel(msg, { ...BIG, maxLines: 5 })).toEqual(ok)
    expect(await expectAsModel(msg, { ...BIG, maxLines: 4 })).toEqual({ error: 'too large: lines' })
    // The header is 26 bytes. (At exactly maxBytes, a chunk that ends in the blank line's CR is a
    // case of its own, the same before and after the rewrite: not pinned here.)
    for (const size of [msg.length, 1000, [26, 100], [28, 100]]) expect(await read(msg, size, { ...BIG, maxBytes: 26 })).toEqual(ok)
    expect(await expectAsModel(msg, { ...BIG, maxBytes: 27 })).toEqual(ok)
    expect(await expectAsModel(msg, { ...BIG, maxBytes: 25 })).toEqual({ error: 'too large: size' })
  })

  it('an unterminated line over maxBytes: refused when it is header text, else it is body', async () => {
    const limits = { ...BIG, maxBytes: 20 }
    expect(await expectAsModel(Buffer.from(`A: 1\r\nB: ${'x'.repeat(30)}`), limits)).toEqual({ error: 'too large: size' })
    expect(await expectAsModel(Buffer.from(`A: 1\r\n${'x'.repeat(30)}`), limits)).toEqual({ raws: ['A: 1\r\n'], body: `\r\n${'x'.repeat(30)}` })
    expect(await expectAsModel(Buffer.from(`A: 1\r\nB: ${'x'.repeat(5)}`), limits)).toEqual({ raws: ['A: 1\r\n'], body: `\r\nB: ${'x'.repeat(5)}` })
  })
})

describe('many fields', () => {
  it('9,900 fields (about 1 MB) in 16 KiB chunks: every field, in order; the header given back byte for byte', async () => {
    const head = Array.from({ length: 9900 }, (_, i) => `X-H${i}: ${'v'.repeat(90)}\r\n`).join('')
    const data = Buffer.from(`${head}\r\nbody\r\n`)
    const got = await read(data, 16384, BIG)
    expect(got).toEqual(model(data, BIG, 'reject'))
    expect('raws' in got && got.raws.length).toBe(9900)
    // the limits still count every line
    expect(await read(data, 16384, { ...BIG, maxLines: 9899 })).toEqual({ error: 'too large: lines' })
    expect(await read(data, 16384, { ...BIG, maxBytes: head.length - 1 })).toEqual({ error: 'too large: size' })
  })
})

/** MessageHeaders.parse as it was (a split at every CRLF and a regex per line). */
function parseModel(block: string): { name: string; raw: string }[] {
  const fields: { name: string; raw: string }[] = []
  for (const line of block.split(/(?<=\r\n)/)) {
    if (!line) continue
    const last = fields[fields.length - 1]
    if ((line[0] === ' ' || line[0] === '\t') && last) last.raw += line
    else fields.push({ name: /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/.exec(line)?.[1] ?? '', raw: line })
  }
  return fields
}

describe('MessageHeaders', () => {
  it('parse: names, folded fields, lines that are no field, a last line without CRLF', () => {
    const blocks = ['', 'A: 1\r\n', ' lead\r\n\tmore\r\nA: 1\r\n', 'A : 1\r\n\t x\r\n y\r\nno field\r\n:x\r\nB\t:2\r\nC:3', 'Bad Name: 1\r\nX-\xe9: 2\r\nD: \xff\r\n', 'A: 1\r\n\r\n', 'A: 1\r\n \r\n']
    for (const block of blocks) expect(MessageHeaders.parse(block).fields, JSON.stringify(block)).toEqual(parseModel(block))
  })

  it('toBuffer follows every change to fields: replaced, edited in place, added, removed', () => {
    const h = MessageHeaders.parse('A: 1\r\nB: 2\r\nC: 3\r\nB: 4\r\n')
    const bytes = () => h.toBuffer().toString('latin1')
    const join = () => h.fields.map((f) => f.raw).join('')
    expect(bytes()).toBe('A: 1\r\nB: 2\r\nC: 3\r\nB: 4\r\n')
    h.prepend('Received', 'from x by y; now')
    expect(bytes()).toBe(`Received: from x by y; now\r\n${'A: 1\r\nB: 2\r\nC: 3\r\nB: 4\r\n'}`)
    expect(h.remove('b')).toBe(2)
    expect(bytes()).toBe('Received: from x by y; now\r\nA: 1\r\nC: 3\r\n')
    h.fields[1]!.raw = 'A: changed\r\n'
    expect(bytes()).toBe(join())
    h.fields.push({ name: 'Z', raw: 'Z: \xe9\r\n' })
    expect(h.toBuffer().equals(Buffer.from(join(), 'latin1'))).toBe(true)
    h.fields.splice(0, 2)
    expect(bytes()).toBe('C: 3\r\nZ: \xe9\r\n')
    h.set('C', 'new')
    h.append('D', 'd')
    expect(bytes()).toBe('C: new\r\nZ: \xe9\r\nD: d\r\n')
    h.fields = [{ name: 'Q', raw: 'Q: q\r\n' }]
    expect(bytes()).toBe('Q: q\r\n')
    h.fields = []
    expect(h.toBuffer().length).toBe(0)
  })

  it('hopCountOf counts the Received fields as hopCount does on the header text', () => {
    const block = 'Received: a\r\nreceived : b\r\n c\r\nX-Received: d\r\nRECEIVED:e\r\nReceived-SPF: f\r\nReceived\t: g\r\nSubject: Received: h\r\n Received: i\r\n'
    expect(hopCountOf(MessageHeaders.parse(block))).toBe(4)
    expect(hopCount(block)).toBe(4)
  })

  it('names match in any case; get, getAll, has, remove', () => {
    const h = MessageHeaders.parse('Subject: a\r\nSUBJECT: b\r\nsubject2: c\r\nX: d\r\n')
    expect(h.getAll('subject')).toEqual(['a', 'b'])
    expect(h.get('SuBjEcT')).toBe('a')
    expect(h.has('subject2')).toBe(true)
    expect(h.has('subjec')).toBe(false)
    expect(h.remove('SUBJECT')).toBe(2)
    expect(h.fields.map((f) => f.name)).toEqual(['subject2', 'X'])
  })
})

describe('stripForged (mail-auth)', () => {
  it('removes the fields of our authserv-id, whatever their case, comments, quoting, folding or 8-bit text', () => {
    const h = MessageHeaders.parse(
      [
        'Authentication-Results: mx.local.test; spf=pass\r\n',
        'authentication-results: (c (nested)) MX.Local.Test 1; dkim=pass\r\n',
        'Authentication-Results: "mx.local.test"; x=1\r\n',
        'Authentication-Results:\r\n mx.local.test;\r\n\tdmarc=pass caf\xc3\xa9\r\n',
        'Authentication-Results: other.test; spf=pass\r\n',
        'Authentication-Results: mx.local.test.evil; spf=pass\r\n',
        'ARC-Authentication-Results: i=1; mx.local.test; spf=pass\r\n',
        'Authentication-Results-X: mx.local.test\r\n',
        'Authentication-Results: ;\r\n',
      ].join(''),
    )
    expect(stripForged(h, ['mx.local.test'])).toEqual(['mx.local.test; spf=pass', '(c (nested)) MX.Local.Test 1; dkim=pass', '"mx.local.test"; x=1', 'mx.local.test;\tdmarc=pass café'])
    expect(h.fields.map((f) => f.raw.split(';')[0])).toEqual([
      'Authentication-Results: other.test',
      'Authentication-Results: mx.local.test.evil',
      'ARC-Authentication-Results: i=1',
      'Authentication-Results-X: mx.local.test\r\n',
      'Authentication-Results: ',
    ])
  })
})
