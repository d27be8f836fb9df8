// The domains a mail reader shows for a From: field (plugins/mail-auth/reader-domains.ts): what
// DMARC must evaluate beside what mailauth's address parser takes.
import { describe, expect, it } from 'vitest'
import { readerAddresses } from '../../core/mail/reader-addresses.js'
import { readerDomains } from '../../plugins/mail-auth/reader-domains.js'

describe('readerDomains', () => {
  it('joins the atoms of a domain split by white space or comments (RFC 5322 §4.4 obs-domain)', () => {
    for (const from of ['Foo <a@bank .example>', 'a@bank. example', 'a@bank(x).example', '<a@bank.(x)example>', 'a@bank . example (Foo)', 'a @ bank.example', 'Foo <a@bank\r\n .example>'])
      expect(readerDomains([from]), from).toEqual(['bank.example'])
  })

  it('reads every mailbox of a list and of a group, not the display names, quoted strings or comments', () => {
    expect(readerDomains(['"a@quoted.example, b@x.example" <c@one.example>, d@two.example (e@comment.example)'])).toEqual(['one.example', 'two.example'])
    expect(readerDomains(['Team: a@one.example, "B" <b@two.example>;'])).toEqual(['one.example', 'two.example'])
    expect(readerDomains(['<@route.example:a@one.example>'])).toEqual(['one.example'])
    expect(readerDomains(['"a@b" <c@one.example>', 'x@two.example'])).toEqual(['one.example', 'two.example'])
  })

  it('gives A-labels in lower case without the trailing dot, and nothing for a name alone, a literal or a lone @', () => {
    expect(readerDomains(['<A@Exämple.TEST.>'])).toEqual(['xn--exmple-cua.test'])
    expect(readerDomains(['"The CEO"', 'Undisclosed:;', '<a@[127.0.0.1]>', '<b@>'])).toEqual([])
  })

  it('readerAddresses: the whole address, words that stand apart from it left out', () => {
    expect(readerAddresses(['Bob <bob @ example.com>, see carol@example.net...'])).toEqual(['bob@example.com', 'carol@example.net'])
    expect(readerAddresses(['Alice Smith alice@corp.test', '"a b"@corp . test', 'first . last@corp.test'])).toEqual(['alice@corp.test', '"a b"@corp.test', 'first.last@corp.test'])
  })

  it('reads a hostile field only so far (bounded)', () => {
    expect(readerDomains([`${'('.repeat(100_000)}a@x.example`])).toEqual([])
    expect(readerDomains([Array.from({ length: 5000 }, (_, i) => `a@d${i}.example`).join(',')])).toHaveLength(100)
  })
})
