// `relay queue cat <id>` (the message as queued, like `postcat -q`) and `relay queue summary --age`
// (pending recipients by destination domain and age, like Postfix's qshape).
import type { CommandEnv, QueueEntry } from '../../../core/index.js'
import { checkQueueIds, queueSummary, withBackend, type QueueVerbOptions } from './queue.js'
import { VerbError, fail, json, out, printable } from './output.js'

/**
 * The message as queued is a stranger's bytes: on a terminal its ESC sequences would retitle the
 * window, clear the screen, rewrite earlier lines. There it prints as text with control characters
 * as `?` (line ends as newlines); to a pipe (`| formail`, `> file`), or with --raw, the bytes as is.
 */
const forTerminal = (part: Buffer): string => printable(part.toString('utf8').replace(/\r\n/g, '\n'))

export async function queueCat(env: CommandEnv, id: string, opts: QueueVerbOptions & { headerOnly?: boolean; bodyOnly?: boolean; raw?: boolean }): Promise<void> {
  if (opts.headerOnly && opts.bodyOnly) return fail(new VerbError('bad-input', '--header-only and --body-only exclude each other'))
  try {
    checkQueueIds(id)
  } catch (err) {
    return fail(err)
  }
  await withBackend(env, opts, async (b) => {
    const raw = await b.raw(id)
    // The header section ends at the first empty line; the body follows it.
    const blank = raw.indexOf('\r\n\r\n')
    const split = blank < 0 ? raw.length : blank + 2
    const part = opts.headerOnly ? raw.subarray(0, split) : opts.bodyOnly ? raw.subarray(Math.min(raw.length, split + 2)) : raw
    const text = process.stdout.isTTY && !opts.raw ? forTerminal(part) : part
    await new Promise<void>((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())))
  })
}

/** qshape's buckets: up to 5 minutes old, 5 to 10, 10 to 20, ... 640 to 1280, older. */
export const AGE_BUCKETS = [5, 10, 20, 40, 80, 160, 320, 640, 1280] as const

export interface AgeRow {
  domain: string
  total: number
  /** One count per bucket of AGE_BUCKETS, and the last for older than 1280 minutes. */
  counts: number[]
}

/** Pending recipients (queued, deferred; held messages' too) by destination domain and age; TOTAL first. */
export function ageShape(entries: QueueEntry[], now = Date.now()): AgeRow[] {
  const rows = new Map<string, AgeRow>()
  const total: AgeRow = { domain: 'TOTAL', total: 0, counts: new Array<number>(AGE_BUCKETS.length + 1).fill(0) }
  for (const m of entries) {
    const minutes = (now - m.receivedAt) / 60_000
    let bucket = AGE_BUCKETS.findIndex((limit) => minutes < limit)
    if (bucket < 0) bucket = AGE_BUCKETS.length
    for (const r of m.recipients) {
      if (r.state !== 'queued' && r.state !== 'deferred') continue
      const domain = r.address.slice(r.address.lastIndexOf('@') + 1).toLowerCase()
      let row = rows.get(domain)
      if (!row) rows.set(domain, (row = { domain, total: 0, counts: new Array<number>(AGE_BUCKETS.length + 1).fill(0) }))
      for (const x of [row, total]) {
        x.total++
        x.counts[bucket]!++
      }
    }
  }
  return [total, ...[...rows.values()].sort((a, b) => b.total - a.total || a.domain.localeCompare(b.domain))]
}

export async function queueSummaryAge(env: CommandEnv, opts: QueueVerbOptions & { age?: boolean }): Promise<void> {
  if (!opts.age) return queueSummary(env, opts)
  const print = (entries: QueueEntry[]) => {
    const rows = ageShape(entries)
    if (opts.json) return json({ bucketsMinutes: AGE_BUCKETS, rows })
    const header = ['', 'T', ...AGE_BUCKETS.map(String), `${AGE_BUCKETS[AGE_BUCKETS.length - 1]}+`]
    const cells = [header, ...rows.map((r) => [r.domain, String(r.total), ...r.counts.map(String)])]
    const widths = header.map((_, i) => Math.max(...cells.map((c) => c[i]!.length)))
    // Domains left-aligned, counts right-aligned (as qshape prints them).
    out(cells.map((c) => c.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join(' ')).join('\n'))
  }
  await withBackend(env, opts, async (b) => print(await b.list({})), () => print([]))
}
