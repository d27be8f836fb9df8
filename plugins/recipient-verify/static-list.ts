// The static list of valid recipients: inline entries plus a file's (read through ctx.watchFile,
// which reads it again when it changes and keeps the last good copy). Lookups are case-insensitive,
// as mail stores' usually are.
import type { Logger } from 'pino'
import { domainKey } from '../../core/index.js'

/** A domain as the relay compares recipients' domains (core's domainKey, a trailing dot allowed); '' when it is not one. */
export const asciiDomain = (d: string): string => domainKey(d.replace(/\.$/, '')) ?? ''

/** One entry: an exact address, a whole domain ('@example.com'), or a local-part pattern ('sales-*@example.com'). */
type Entry = { kind: 'exact'; address: string } | { kind: 'domain'; domain: string } | { kind: 'pattern'; domain: string; local: RegExp }

/** Parses one entry, or says why it is not one. */
export function parseEntry(text: string): Entry | string {
  const s = text.trim().toLowerCase()
  const at = s.lastIndexOf('@')
  if (at < 0 || at === s.length - 1 || /\s/.test(s)) return `expected 'user@domain', '@domain' or 'pattern*@domain', got ${JSON.stringify(text)}`
  const local = s.slice(0, at)
  const domain = asciiDomain(s.slice(at + 1))
  if (!domain) return `not a domain in ${JSON.stringify(text)}`
  if (local === '' || local === '*') return { kind: 'domain', domain }
  if (!local.includes('*')) return { kind: 'exact', address: `${local}@${domain}` }
  const re = new RegExp(`^${local.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`)
  return { kind: 'pattern', domain, local: re }
}

export class Lookup {
  readonly exact = new Set<string>()
  readonly domains = new Set<string>()
  readonly patterns: { domain: string; local: RegExp }[] = []
  size = 0

  add(e: Entry): void {
    this.size++
    if (e.kind === 'exact') this.exact.add(e.address)
    else if (e.kind === 'domain') this.domains.add(e.domain)
    else this.patterns.push(e)
  }

  has(address: string): boolean {
    const a = address.toLowerCase()
    const at = a.lastIndexOf('@')
    const local = a.slice(0, at)
    const domain = a.slice(at + 1)
    return this.exact.has(a) || this.domains.has(domain) || this.patterns.some((p) => p.domain === domain && p.local.test(local))
  }
}

/** A recipient file's entries (one a line, '#' starts a comment); bad lines are skipped with a warning. */
export function parseRecipientFile(text: string, file: string, log: Logger): Lookup {
  const lookup = new Lookup()
  const bad: string[] = []
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/#.*/, '').trim()
    if (!line) continue
    const parsed = parseEntry(line)
    if (typeof parsed === 'string') bad.push(`line ${i + 1}: ${parsed}`)
    else lookup.add(parsed)
  }
  if (bad.length) log.warn({ file, lines: bad.slice(0, 10) }, `recipient file: ${bad.length} line(s) ignored`)
  log.info({ file, entries: lookup.size }, 'recipient file loaded')
  return lookup
}

export class StaticList {
  private inline = new Lookup()

  /** `fromFile`: the watched file's entries (its `current` copy is read at every lookup). */
  constructor(
    entries: string[],
    private readonly fromFile?: { readonly current: Lookup },
  ) {
    for (const e of entries) {
      const parsed = parseEntry(e)
      if (typeof parsed === 'string') throw new Error(parsed)
      this.inline.add(parsed)
    }
  }

  /** Whether a static list is configured at all (inline entries or a file). */
  get configured(): boolean {
    return this.inline.size > 0 || this.fromFile !== undefined
  }

  has(address: string): boolean {
    return this.inline.has(address) || (this.fromFile?.current.has(address) ?? false)
  }
}
