// Every address a From: or Sender: field can be read as. Parsers disagree about malformed fields:
// `Bob <bob@other.example>:` is an empty group to nodemailer's addressparser and bob@other.example
// to others; `bob@other.example <alice@example.com>` is alice to one reader and bob to another. A
// check of whom a message claims to be from must hold for every reading, so it takes them all: the
// parsed addresses, every address-like token of the text, those inside RFC 2047 encoded words, and
// the addresses with the comments and white space between their parts dropped (`a@bank .example`).
import addressparser from 'nodemailer/lib/addressparser'
import { readerAddresses } from './reader-addresses.js'

type Parsed = ReturnType<typeof addressparser>
const parsedAddresses = (list: Parsed): string[] =>
  list.flatMap((a) => ('group' in a && a.group ? parsedAddresses(a.group) : a.address ? [a.address] : []))

/** Runs of characters that may stand in an unquoted address. */
const RUN = /[^\s<>()[\]{},;:"\\]+/g
const ENCODED_WORD = /=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=/g

/** White space between two encoded words: a reader drops it and shows one text (RFC 2047 §6.2). */
const BETWEEN_WORDS = /(?<=\?=)\s+(?==\?[^?\s]+\?[bBqQ]\?)/g

/** UTF-7 (RFC 2152), which TextDecoder lacks and some mail readers decode: `+AEA-` is `@`. */
const utf7 = (text: string): string =>
  text.replace(/\+([A-Za-z0-9+/]*)-?/g, (_, b64: string) => {
    if (!b64) return '+'
    const bytes = Buffer.from(b64, 'base64')
    return Buffer.from(bytes.subarray(0, bytes.length & ~1)).swap16().toString('utf16le') // UTF-16BE
  })

function decodeWord(word: string, charset: string, encoding: string, text: string): string {
  try {
    const bytes =
      encoding.toUpperCase() === 'B'
        ? Buffer.from(text, 'base64')
        : Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))), 'latin1')
    const name = charset.split('*')[0]!.toLowerCase()
    if (name === 'utf-7' || name === 'unicode-1-1-utf-7') return utf7(bytes.toString('latin1'))
    return new TextDecoder(name).decode(bytes)
  } catch {
    return word // an unknown charset: the word stays as it is
  }
}

/** The addresses in a From:/Sender: (or any address) field value, read every way a mail reader might. */
export function headerAddresses(value: string): string[] {
  const out = new Set([...parsedAddresses(addressparser(value)), ...readerAddresses([value])])
  const decoded = value.replace(BETWEEN_WORDS, '').replace(ENCODED_WORD, decodeWord)
  for (const text of decoded === value ? [value] : [value, decoded]) {
    for (const run of text.match(RUN) ?? []) {
      // `@host` of a route and a sentence's closing dot are not part of an address.
      // (Trailing dots trimmed by hand: /\.+$/ is quadratic in a long run of dots inside the token.)
      let end = run.length
      while (end > 0 && run[end - 1] === '.') end--
      const token = run.slice(0, end).replace(/^@+/, '')
      if (token.includes('@') && !token.endsWith('@')) out.add(token)
    }
  }
  return [...out]
}
