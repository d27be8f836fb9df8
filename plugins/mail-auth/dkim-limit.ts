// At most `maxSignatures` DKIM signatures are verified per message (OpenDKIM's
// MaximumSignaturesToVerify): each costs a key lookup, a header canonicalisation, an RSA check and,
// with its own l= or c=, a hash of the whole body, so thousands of them cost seconds of CPU.
// mailauth has no such limit: the excess DKIM-Signature fields are hidden from it, and each gets
// `dkim=neutral (not verified: limit)` in Authentication-Results instead.
import type { MessageHeaders } from '../../core/index.js'

type HeaderField = MessageHeaders['fields'][number]

/** Skipped signatures listed one by one in Authentication-Results; the rest share one entry. */
const LISTED_SKIPPED = 10

const TOKEN = /^[A-Za-z0-9._-]{1,253}$/

export interface SignatureLimit {
  /** The header section mailauth gets (the excess DKIM-Signature fields removed); undefined: nothing removed. */
  header?: Buffer
  /** Authentication-Results entries for the signatures that were not verified. */
  entries: string[]
}

const TAGS = { d: /(?:^|;)\s*d\s*=\s*([^;\s]*)/, s: /(?:^|;)\s*s\s*=\s*([^;\s]*)/ }

/** A tag of a DKIM-Signature value (d=, s=), when it is a plain token. */
function tag(field: HeaderField, name: 'd' | 's'): string | undefined {
  const value = field.raw.slice(field.raw.indexOf(':') + 1).replace(/\r\n[ \t]/g, '')
  const m = TAGS[name].exec(value)
  return m && TOKEN.test(m[1]!) ? m[1]!.toLowerCase() : undefined
}

/** The domains of the From: addresses (the author domains DMARC checks). */
function authorDomains(headers: MessageHeaders): string[] {
  return headers.getAll('From').flatMap((v) => [...v.matchAll(/@([A-Za-z0-9.-]+)/g)].map((m) => m[1]!.toLowerCase()))
}

/**
 * Picks the signatures to verify: first those whose d= is an author domain or shares one with
 * it (they can decide DMARC), then the rest, topmost (newest) first.
 */
export function limitSignatures(headers: MessageHeaders, maxSignatures: number): SignatureLimit {
  const signatures = headers.fields.filter((f) => f.name.toLowerCase() === 'dkim-signature')
  if (signatures.length <= maxSignatures) return { entries: [] }
  const authors = authorDomains(headers)
  const related = (d: string | undefined) => d !== undefined && authors.some((a) => a === d || a.endsWith(`.${d}`) || d.endsWith(`.${a}`))
  const isRelated = new Map(signatures.map((f) => [f, related(tag(f, 'd'))]))
  const ranked = [...signatures.filter((f) => isRelated.get(f)), ...signatures.filter((f) => !isRelated.get(f))]
  const verified = new Set(ranked.slice(0, maxSignatures))
  const skipped = signatures.filter((f) => !verified.has(f))

  const entries = skipped.slice(0, LISTED_SKIPPED).map((f) => {
    const d = tag(f, 'd')
    const s = tag(f, 's')
    return `dkim=neutral (not verified: limit)${d ? ` header.d=${d}` : ''}${s ? ` header.s=${s}` : ''}`
  })
  const more = skipped.length - LISTED_SKIPPED
  if (more > 0) entries.push(`dkim=neutral (not verified: limit, ${more} more signature${more === 1 ? '' : 's'})`)
  const hidden = new Set(skipped)
  const header = Buffer.from(headers.fields.filter((f) => !hidden.has(f)).map((f) => f.raw).join(''), 'latin1')
  return { header, entries }
}

/** The message `message` with its first `skip` bytes (its header section) replaced by `header`. */
export async function* withHeader(message: AsyncIterable<Buffer>, skip: number, header: Buffer): AsyncGenerator<Buffer> {
  yield header
  let left = skip
  for await (const chunk of message) {
    if (left >= chunk.length) {
      left -= chunk.length
      continue
    }
    yield left ? chunk.subarray(left) : chunk
    left = 0
  }
}
