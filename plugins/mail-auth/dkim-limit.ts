// At most `maxSignatures` DKIM signatures are verified per message (OpenDKIM's
// MaximumSignaturesToVerify): each costs a key lookup, a header canonicalisation, an RSA check and,
// with its own l= or c=, a hash of the whole body, so thousands of them cost seconds of CPU.
// mailauth has no such limit: the excess DKIM-Signature fields are hidden from it, and each gets
// `dkim=neutral (not verified: limit)` in Authentication-Results instead.
// Nor is a signature whose h= names more than MAX_SIGNED_FIELDS fields: mailauth searches all the
// header lines for each name, so 80,000 names over 8,000 lines cost a check thread 5 s per
// signature. The newest ARC-Message-Signature is verified the same way; an oversized one is hidden
// too (the chain then fails, as a chain that cannot be checked should).
import type { MessageHeaders } from '../../core/index.js'

type HeaderField = MessageHeaders['fields'][number]

/** Skipped signatures listed one by one in Authentication-Results; the rest share one entry. */
const LISTED_SKIPPED = 10

const TOKEN = /^[A-Za-z0-9._-]{1,253}$/

/** h= names verified at most (legitimate signers list a few dozen, oversigned ones included). */
export const MAX_SIGNED_FIELDS = 256

export interface SignatureLimit {
  /** The header section mailauth gets (the excess DKIM-Signature fields removed); undefined: nothing removed. */
  header?: Buffer
  /** Authentication-Results entries for the signatures that were not verified. */
  entries: string[]
}

const TAGS = { d: /(?:^|;)\s*d\s*=\s*([^;\s]*)/, s: /(?:^|;)\s*s\s*=\s*([^;\s]*)/, i: /(?:^|;)\s*i\s*=\s*(\d{1,6})\s*(?:;|$)/ }
const H_TAG = /(?:^|;)\s*h\s*=([^;]*)/

/** A tag of a DKIM-Signature value (d=, s=), when it is a plain token. */
function tag(field: HeaderField, name: 'd' | 's' | 'i'): string | undefined {
  const m = TAGS[name].exec(valueOf(field))
  return m && TOKEN.test(m[1]!) ? m[1]!.toLowerCase() : undefined
}

const valueOf = (field: HeaderField): string => field.raw.slice(field.raw.indexOf(':') + 1).replace(/\r\n[ \t]/g, '')

/** How many field names the h= tag lists (its colons, plus one), 0 without h=. */
function signedFields(field: HeaderField): number {
  const h = H_TAG.exec(valueOf(field))?.[1]
  if (h === undefined) return 0
  let n = 1
  for (let i = h.indexOf(':'); i >= 0; i = h.indexOf(':', i + 1)) n++
  return n
}

const named = (f: HeaderField) => {
  const d = tag(f, 'd')
  const s = tag(f, 's')
  return `${d ? ` header.d=${d}` : ''}${s ? ` header.s=${s}` : ''}`
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
  const all = headers.fields.filter((f) => f.name.toLowerCase() === 'dkim-signature')
  const oversized = all.filter((f) => signedFields(f) > MAX_SIGNED_FIELDS)
  const newestSeal = oversizedNewestAms(headers)
  if (all.length - oversized.length <= maxSignatures && !oversized.length && !newestSeal) return { entries: [] }

  // Listed as the skipped ones are: the first ten, then a count (1,800 of them made a 180 KB field).
  const entries = oversized.slice(0, LISTED_SKIPPED).map((f) => `dkim=neutral (not verified: h= names ${signedFields(f)} fields, more than ${MAX_SIGNED_FIELDS})${named(f)}`)
  const moreOversized = oversized.length - LISTED_SKIPPED
  if (moreOversized > 0) entries.push(`dkim=neutral (not verified: h= over ${MAX_SIGNED_FIELDS} fields, ${moreOversized} more signature${moreOversized === 1 ? '' : 's'})`)
  const signatures = all.filter((f) => !oversized.includes(f))
  const authors = authorDomains(headers)
  const related = (d: string | undefined) => d !== undefined && authors.some((a) => a === d || a.endsWith(`.${d}`) || d.endsWith(`.${a}`))
  const isRelated = new Map(signatures.map((f) => [f, related(tag(f, 'd'))]))
  const ranked = [...signatures.filter((f) => isRelated.get(f)), ...signatures.filter((f) => !isRelated.get(f))]
  const verified = new Set(ranked.slice(0, maxSignatures))
  const skipped = signatures.filter((f) => !verified.has(f))

  entries.push(...skipped.slice(0, LISTED_SKIPPED).map((f) => `dkim=neutral (not verified: limit)${named(f)}`))
  const more = skipped.length - LISTED_SKIPPED
  if (more > 0) entries.push(`dkim=neutral (not verified: limit, ${more} more signature${more === 1 ? '' : 's'})`)
  const hidden = new Set([...oversized, ...skipped, ...(newestSeal ? [newestSeal] : [])])
  const header = Buffer.from(headers.fields.filter((f) => !hidden.has(f)).map((f) => f.raw).join(''), 'latin1')
  return { header, entries }
}

/** The newest ARC-Message-Signature (the one verified) when its h= is over the limit. */
function oversizedNewestAms(headers: MessageHeaders): HeaderField | undefined {
  let newest: HeaderField | undefined
  let instance = -1
  for (const f of headers.fields) {
    if (f.name.toLowerCase() !== 'arc-message-signature') continue
    const i = Number(tag(f, 'i') ?? -1)
    if (i > instance) [newest, instance] = [f, i]
  }
  return newest && signedFields(newest) > MAX_SIGNED_FIELDS ? newest : undefined
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
