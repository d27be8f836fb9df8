// Which due recipients a claim looks at, in bounded work whatever the queue's size. The due index
// is walked from its head for a little more than the claim wants; rows of full domains (at their
// concurrency or throttle limit) and of held messages are passed over there. When that walk found
// too little and was cut short, the other domains' due work is found through the per-domain index
// instead: a domain at the head with a million due recipients neither costs a scan nor starves the rest.
import type { ClaimOptions } from '../types.js'
import { NOT_HELD, PENDING, type RecipientRow, type Sqlite } from './sql.js'

/** Due-index entries one claim walks at most before it looks domain by domain. */
const WALK = 4000
/** Domains one claim looks at in the per-domain pass (the next claim goes on from there). */
const DOMAINS_PER_CLAIM = 256
const MAX_ROWS = 5000

const COLUMNS = `id, message_id, address, domain, args, attempts, leased`
/** Where the per-domain pass of the last claim stopped, per database. */
const cursors = new WeakMap<object, string>()

export function dueRows(q: Sqlite, o: ClaimOptions, full: string[]): RecipientRow[] {
  const want = Math.min(o.limit * 8, MAX_ROWS)
  if (q.version < 5) {
    // An older schema (no per-domain index): the one query, as before.
    return q.db
      .prepare(
        `SELECT ${COLUMNS} FROM recipients WHERE ${PENDING} AND next_attempt <= ? AND ${NOT_HELD} ${full.length ? `AND domain NOT IN (${full.map(() => '?').join(',')})` : ''}
         ORDER BY next_attempt LIMIT ?`,
      )
      .all(o.now, ...full, want) as RecipientRow[]
  }
  const skip = new Set(full)
  const walk = q.stmt(
    `SELECT ${COLUMNS}, (SELECT held_at IS NOT NULL FROM messages h WHERE h.id = r.message_id) AS held
     FROM (SELECT id AS rid FROM recipients WHERE ${PENDING} AND next_attempt <= ? ORDER BY next_attempt LIMIT ?) w
     JOIN recipients r ON r.id = w.rid ORDER BY r.next_attempt, r.id`,
  )
  // Usually the head is what is wanted: a short walk.
  const size = Math.min(want + 64, WALK)
  const head = walk.all(o.now, size) as (RecipientRow & { held: number | null })[]
  const rows: RecipientRow[] = []
  const domains = new Set<string>()
  for (const r of head) {
    if (rows.length >= want) break
    if (r.held || skip.has(r.domain)) continue
    const { held: _held, ...row } = r
    rows.push(row)
    domains.add(r.domain)
  }
  if (rows.length >= want || head.length < size) return rows

  // The head of the due index is full domains' or held work: the others', domain by domain.
  const nextDomain = q.stmt(`SELECT domain FROM recipients WHERE ${PENDING} AND domain > ? ORDER BY domain LIMIT 1`)
  const ofDomain = q.stmt(
    `SELECT ${COLUMNS} FROM recipients WHERE ${PENDING} AND domain = ? AND next_attempt <= ? AND ${NOT_HELD} ORDER BY next_attempt LIMIT ?`,
  )
  const start = cursors.get(q.db) ?? ''
  let cursor = start
  let wrapped = false
  // Jobs found so far (one per message and domain): the pass stops at the domain that fills the
  // claim, so the next claim starts with the domains this one had no room for.
  let jobs = new Set(rows.map((r) => `${r.message_id}\u0000${r.domain}`)).size
  for (let visited = 0; visited < DOMAINS_PER_CLAIM && rows.length < want && jobs < o.limit; visited++) {
    let next = (nextDomain.get(cursor) as { domain: string } | undefined)?.domain
    if (next === undefined || (wrapped && next > start)) {
      if (wrapped || start === '') break
      wrapped = true
      cursor = ''
      next = (nextDomain.get(cursor) as { domain: string } | undefined)?.domain
      if (next === undefined || next > start) break
    }
    cursor = next
    if (skip.has(next) || domains.has(next)) continue
    const room = Math.max(1, o.perDomain - (o.inFlight[next] ?? 0))
    const found = ofDomain.all(next, o.now, Math.min(room * 8, want - rows.length)) as RecipientRow[]
    rows.push(...found)
    jobs += Math.min(room, new Set(found.map((r) => r.message_id)).size)
    domains.add(next)
  }
  cursors.set(q.db, cursor)
  return rows
}
