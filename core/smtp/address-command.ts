// smtp-server's parser of MAIL FROM / RCPT TO lines, wrapped (patches 10, 12 and 13 of
// core/smtp/patches.ts, which say why):
// - RFC 5321 §4.1.2 lets a quoted local part hold spaces and `<` `>` (`"john smith"@example.com`);
//   smtp-server splits the line at every space and wants no `<>` inside the path. Those characters
//   inside quoted strings are masked with private-use stand-ins for its parser and put back in the
//   address it returns.
// - ENVID/ORCPT values that are not xtext, or decode to control characters, are named on the args.
// - `MAIL  FROM:` (more than one space) is MAIL FROM.
import type { ConnectionInternals } from './connection-internals.js'
import { NOT_XTEXT } from './session.js'


const MASK: Record<string, string> = { ' ': '\uE000', '<': '\uE001', '>': '\uE002' }
const UNMASK: Record<string, string> = { '\uE000': ' ', '\uE001': '<', '\uE002': '>' }
const MASKS = /[\uE000-\uE002]/g
const HAS_MASK = /[\uE000-\uE002]/

/**
 * The command line with spaces and angle brackets inside quoted strings masked; as it is when it
 * has no quote, or holds a stand-in already (it could not be told from a mask). One pass: the regex
 * `/"(?:[^"\\\r\n]|\\.)*"/g` this replaces restarted at every `"` of an unclosed quote (`"\"\"\"…`),
 * quadratic in the line: 60 ms for one 16 KB MAIL line, over a second of the event loop for a
 * pipelined batch. A quote that does not close before the end of the line (or a line break) masks
 * nothing, as the regex did.
 */
export function maskQuoted(text: string): string {
  if (!text.includes('"') || HAS_MASK.test(text)) return text
  let out = ''
  let done = 0
  for (let i = text.indexOf('"'); i >= 0; i = text.indexOf('"', i)) {
    let j = i + 1
    for (; j < text.length; j++) {
      const c = text[j]
      if (c === '"' || c === '\r' || c === '\n') break
      if (c === '\\') {
        const next = text[j + 1]
        if (next === undefined || next === '\r' || next === '\n' || next === '\u2028' || next === '\u2029') break
        j++
      }
    }
    // Unclosed: no quote before the line break (or the end) can close either; look on from it.
    if (text[j] !== '"') {
      i = j
      continue
    }
    out += text.slice(done, i) + text.slice(i, j + 1).replace(/[ <>]/g, (c) => MASK[c]!)
    done = i = j + 1
  }
  return out + text.slice(done)
}

/** The address smtp-server parsed from a masked line, with the masked characters back. */
const unmask = (address: string): string => address.replace(MASKS, (c) => UNMASK[c]!)

const VERB_SPACES = /^(MAIL|RCPT) {2,}(FROM|TO)(?=\s*:)/i
/** ENVID= and ORCPT= as the client wrote them, and RFC 3461 §4's xtext (smtp-server decodes `+XX` in upper case only). */
const XTEXT_PARAM = /(?:^|\s)(ENVID|ORCPT)=(\S+)/gi
const XTEXT = /^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+$/
/** An xtext `+XX` that decodes to a control character (C0 or DEL). */
const XTEXT_CONTROL = /\+(?:[01][0-9A-Fa-f]|7[Ff])/
const XTEXT_CONTROLS = new RegExp(XTEXT_CONTROL.source, 'g')

type ParseAddressCommand = ConnectionInternals['_parseAddressCommand']

/** smtp-server's `_parseAddressCommand` with the adjustments above. */
export function parseAddressCommandFor(parseAddressCommand: ParseAddressCommand): ParseAddressCommand {
  return function (this: ConnectionInternals, name, command) {
    // Patch 13: `MAIL  FROM:` (more than one space) is MAIL FROM, as in Postfix.
    const text = String(command ?? '').replace(VERB_SPACES, '$1 $2')
    const masked = maskQuoted(text)
    // Patch 12: an ENVID/ORCPT that decodes to a control character (`+0D+0A`) is a bad parameter,
    // not a bad address: smtp-server would answer "Bad sender address syntax"; the DSN parameter
    // check answers 501 5.5.4 for it, as for any value that is not xtext.
    const controls: string[] = []
    const parsable = masked.replace(XTEXT_PARAM, (all, key: string, value: string) => {
      if (!XTEXT_CONTROL.test(value)) return all
      controls.push(key.toUpperCase())
      return all.replace(`=${value}`, `=${value.replace(XTEXT_CONTROLS, '+2B')}`)
    })
    const parsed = parseAddressCommand.call(this, name, parsable)
    if (!parsed) return parsed
    if (masked !== text) parsed.address = unmask(parsed.address)
    // Patch 12: the raw values that are not xtext, for the relay's DSN parameter check.
    const bad = parsed.args ? [...controls, ...[...masked.matchAll(XTEXT_PARAM)].filter(([, , value]) => !XTEXT.test(value!)).map(([, key]) => key!.toUpperCase())] : []
    if (bad.length) Object.defineProperty(parsed.args, NOT_XTEXT, { value: bad })
    return parsed
  }
}
