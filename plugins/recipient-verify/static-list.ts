// The static list of valid recipients: inline entries plus a file, the file read again when its
// identity (inode, size, mtime) changes. Lookups are case-insensitive, as mail stores' usually are.
// A file that cannot be read keeps the last good list (and says so once per change).
import fs from 'node:fs'
import type { Logger } from 'pino'

/** One entry: an exact address, a whole domain ('@example.com'), or a local-part pattern ('sales-*@example.com'). */
type Entry = { kind: 'exact'; address: string } | { kind: 'domain'; domain: string } | { kind: 'pattern'; domain: string; local: RegExp }

/** Parses one entry, or says why it is not one. */
export function parseEntry(text: string): Entry | string {
  const s = text.trim().toLowerCase()
  const at = s.lastIndexOf('@')
  if (at < 0 || at === s.length - 1 || /\s/.test(s)) return `expected 'user@domain', '@domain' or 'pattern*@domain', got ${JSON.stringify(text)}`
  const local = s.slice(0, at)
  const domain = s.slice(at + 1)
  if (local === '' || local === '*') return { kind: 'domain', domain }
  if (!local.includes('*')) return { kind: 'exact', address: s }
  const re = new RegExp(`^${local.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`)
  return { kind: 'pattern', domain, local: re }
}

class Lookup {
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

export class StaticList {
  private inline = new Lookup()
  private fromFile = new Lookup()
  private seen: string | undefined
  private checkedAt = 0

  constructor(
    entries: string[],
    private readonly file: string | undefined,
    private readonly checkInterval: number,
    private readonly log: Logger,
  ) {
    for (const e of entries) {
      const parsed = parseEntry(e)
      if (typeof parsed === 'string') throw new Error(parsed)
      this.inline.add(parsed)
    }
  }

  /** Whether a static list is configured at all (inline entries or a file). */
  get configured(): boolean {
    return this.inline.size > 0 || this.file !== undefined
  }

  has(address: string): boolean {
    this.refresh()
    return this.inline.has(address) || this.fromFile.has(address)
  }

  /** Reads the file when it changed since the last look (looked at once per `checkInterval`). */
  refresh(force = false): void {
    if (!this.file) return
    const now = Date.now()
    if (!force && now - this.checkedAt < this.checkInterval) return
    this.checkedAt = now
    let id: string
    try {
      const st = fs.statSync(this.file)
      id = `${st.ino}:${st.size}:${st.mtimeMs}`
    } catch (err) {
      id = 'missing'
      if (this.seen !== id) this.log.error({ file: this.file, err: (err as Error).message }, 'recipient file cannot be read; keeping the last list')
      this.seen = id
      return
    }
    if (id === this.seen) return
    this.seen = id
    try {
      const next = new Lookup()
      const bad: string[] = []
      for (const [i, raw] of fs.readFileSync(this.file, 'utf8').split('\n').entries()) {
        const line = raw.replace(/#.*/, '').trim()
        if (!line) continue
        const parsed = parseEntry(line)
        if (typeof parsed === 'string') bad.push(`line ${i + 1}: ${parsed}`)
        else next.add(parsed)
      }
      if (bad.length) this.log.warn({ file: this.file, lines: bad.slice(0, 10) }, `recipient file: ${bad.length} line(s) ignored`)
      this.fromFile = next
      this.log.info({ file: this.file, entries: next.size }, 'recipient file loaded')
    } catch (err) {
      this.log.error({ file: this.file, err: (err as Error).message }, 'recipient file cannot be read; keeping the last list')
    }
  }
}
