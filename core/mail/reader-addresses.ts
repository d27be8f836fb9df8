// The addresses a mail reader shows for an address field. RFC 5322 §4.4 (obs-domain,
// obs-local-part) lets comments and white space stand between the atoms and dots of an address:
// `a@bank .example`, `a@bank(x).example` and `a@bank. example` are all a@bank.example to Python's
// email package and to mail readers, while nodemailer's addressparser (which mailauth uses for
// DMARC) cuts the domain at the space or comment and reads `bank` or `bank.`. A check of who a
// message is from must also hold for this reading.

/** Bounds the work on a hostile field: a From: is short; beyond this it is read no further. */
const MAX_FIELD = 16 * 1024
const MAX_MAILBOXES = 100

/** The field's text without its comments (each becomes a space), quoted strings kept as they are. */
function withoutComments(value: string): string {
  let out = ''
  let depth = 0
  let inQuote = false
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!
    if (c === '\\' && (inQuote || depth > 0)) {
      if (depth === 0) out += c + (value[i + 1] ?? '')
      i++
      continue
    }
    if (depth > 0) {
      if (c === '(') depth++
      else if (c === ')' && --depth === 0) out += ' '
      continue
    }
    if (c === '"') inQuote = !inQuote
    else if (c === '(' && !inQuote) {
      depth = 1
      continue
    }
    out += c
  }
  return out
}

/** Splits at the separators of a mailbox list and of groups (`,` `;` and a group's `name:`), outside quotes and angle brackets. */
function mailboxes(text: string): string[] {
  const out: string[] = []
  let current = ''
  let inQuote = false
  let inAngle = false
  let inLiteral = false
  for (let i = 0; i < text.length && out.length < MAX_MAILBOXES; i++) {
    const c = text[i]!
    if (inQuote) {
      current += c
      if (c === '\\') current += text[++i] ?? ''
      else if (c === '"') inQuote = false
      continue
    }
    if (c === '"') inQuote = true
    else if (c === '[') inLiteral = true
    else if (c === ']') inLiteral = false
    else if (c === '<') inAngle = true
    else if (c === '>') inAngle = false
    else if (!inAngle && !inLiteral && (c === ',' || c === ';')) {
      out.push(current)
      current = ''
      continue
    } else if (!inAngle && !inLiteral && c === ':') {
      current = '' // a group's display name
      continue
    }
    current += c
  }
  out.push(current)
  return out
}

/**
 * One mailbox's addr-spec as a reader takes it (in angle brackets if any): white space next to a
 * dot or the @ dropped (`bank .example`), and where words stand apart (`see bob@x.example`, no
 * angle brackets) the word touching the @.
 */
function mailboxAddress(mailbox: string): string | undefined {
  const open = mailbox.lastIndexOf('<')
  let spec = open >= 0 ? mailbox.slice(open + 1).split('>')[0]! : mailbox
  spec = spec.replace(/^\s*@[^:]*:/, '').trim() // a source route (obs-route)
  let at = -1
  let inQuote = false
  let out = ''
  for (let i = 0; i < spec.length; i++) {
    const c = spec[i]!
    if (inQuote && c === '\\') {
      out += c + (spec[++i] ?? '')
      continue
    }
    if (/\s/.test(c) && !inQuote) {
      let j = i + 1
      while (j < spec.length && /\s/.test(spec[j]!)) j++
      const before = out[out.length - 1]
      const after = spec[j]
      if (before !== '.' && before !== '@' && after !== '.' && after !== '@') out += ' '
      i = j - 1
      continue
    }
    if (c === '"') inQuote = !inQuote
    else if (c === '@' && !inQuote) at = out.length
    out += c
  }
  if (at < 0) return undefined
  const local = out.slice(0, at)
  const space = local.lastIndexOf(' ')
  const domain = out.slice(at + 1).split(' ')[0]!.replace(/\.+$/, '')
  return domain && !domain.startsWith('[') ? `${space >= 0 && !local.includes('"') ? local.slice(space + 1) : local}@${domain}` : undefined
}

/** The addresses (local@domain, the domain without a trailing dot) in address field values, as a mail reader shows them. */
export function readerAddresses(values: string[]): string[] {
  const out = new Set<string>()
  for (const value of values) {
    const text = withoutComments(value.slice(0, MAX_FIELD).replace(/\r?\n/g, ''))
    for (const box of mailboxes(text)) {
      const address = mailboxAddress(box)
      if (address) out.add(address)
    }
  }
  return [...out]
}
