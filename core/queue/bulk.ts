// postsuper-style bulk actions: a filter selects messages (ids, ALL, or domain/sender/state/age),
// then the one-message verb runs on each. Generic over the verbs, so the same selection runs on a
// queue (QueueControl) and, in the CLI, over an admin API that has no bulk route yet.
import type { BulkAction, BulkFilter, BulkResult, QueueEntry, QueueFilter, QueueOperations } from '../hooks/operator.js'

/** The one-message verbs a bulk action runs. */
export type BulkVerbs = Pick<QueueOperations, 'list' | 'show' | 'hold' | 'release' | 'remove' | 'flush' | 'bounce'>

export const BULK_ACTIONS: readonly BulkAction[] = ['hold', 'release', 'flush', 'delete', 'bounce']

/** A bulk request that makes no sense: the API answers 400, the CLI exits 1. */
export class BulkInputError extends Error {
  readonly kind = 'bad-input' as const
}

/** Checks a filter from outside (JSON, the CLI): one of ids, all, or a narrowing field. */
export function checkBulkFilter(action: unknown, filter: BulkFilter): asserts action is BulkAction {
  if (!BULK_ACTIONS.includes(action as BulkAction)) throw new BulkInputError(`action: expected one of ${BULK_ACTIONS.join(', ')} (got '${String(action)}')`)
  if (filter === null || typeof filter !== 'object') throw new BulkInputError('filter: expected an object')
  const { ids, all, domain, sender, state, olderThan } = filter
  if (ids !== undefined && (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string'))) throw new BulkInputError('filter.ids: expected a list of queue ids')
  if (state !== undefined && !['queued', 'deferred', 'held'].includes(state)) throw new BulkInputError(`filter.state: expected queued, deferred or held (got '${String(state)}')`)
  if (olderThan !== undefined && (typeof olderThan !== 'number' || !Number.isFinite(olderThan) || olderThan < 0)) throw new BulkInputError('filter.olderThan: expected milliseconds (a number >= 0)')
  if (domain !== undefined && (typeof domain !== 'string' || !domain.trim())) throw new BulkInputError('filter.domain: expected a domain')
  if (sender !== undefined && typeof sender !== 'string') throw new BulkInputError("filter.sender: expected an address ('' for the null sender)")
  const narrowed = domain !== undefined || sender !== undefined || state !== undefined || olderThan !== undefined
  // Nothing given must not mean "everything": ALL is said explicitly.
  if (ids === undefined && all !== true && !narrowed) throw new BulkInputError('filter: give ids, all, or at least one of domain, sender, state, olderThan')
}

type Selected = Pick<QueueEntry, 'id' | 'receivedAt'>

/** The messages a filter selects, oldest first (olderThan: received more than that many ms before `now`). */
export async function selectMessages(verbs: Pick<BulkVerbs, 'list' | 'show'>, filter: BulkFilter, now = Date.now()): Promise<Selected[]> {
  if (filter.all) return verbs.list({})
  const query: QueueFilter = {}
  if (filter.domain !== undefined) query.domain = filter.domain.trim().toLowerCase().replace(/\.$/, '')
  if (filter.sender !== undefined) query.sender = filter.sender
  if (filter.state !== undefined) query.state = filter.state
  let entries: Selected[]
  if (filter.ids !== undefined && !Object.keys(query).length) {
    // Ids alone: each looked up, not the whole queue listed.
    entries = []
    for (const id of new Set(filter.ids)) {
      try {
        const m = await verbs.show(id)
        entries.push({ id: m.id, receivedAt: m.receivedAt })
      } catch (err) {
        if (!skippable(err) && (err as { kind?: string }).kind !== 'bad-input' && (err as { status?: number }).status !== 400) throw err
      }
    }
    entries.sort((a, b) => a.receivedAt - b.receivedAt || a.id.localeCompare(b.id))
  } else {
    entries = await verbs.list(query)
    if (filter.ids !== undefined) {
      const wanted = new Set(filter.ids)
      entries = entries.filter((m) => wanted.has(m.id))
    }
  }
  if (filter.olderThan !== undefined) entries = entries.filter((m) => m.receivedAt < now - filter.olderThan!)
  return entries
}

/**
 * Runs `action` on each selected message. A message that left the queue meanwhile is passed by; one
 * the verb cannot act on (release of one not held, delete or bounce of one being delivered) is in
 * `skipped` with the verb's reason. `done` counts the messages the action changed.
 */
export async function runBulk(verbs: BulkVerbs, action: BulkAction, filter: BulkFilter, opts: { dryRun?: boolean } = {}): Promise<BulkResult> {
  checkBulkFilter(action, filter)
  const matched = (await selectMessages(verbs, filter)).map((m) => m.id)
  const dryRun = opts.dryRun === true
  let done = 0
  const skipped: BulkResult['skipped'] = []
  if (!dryRun) {
    // By domain, flush makes only that domain's recipients due (as `relay queue flush --domain`).
    const domain = filter.all ? undefined : filter.domain?.trim().toLowerCase().replace(/\.$/, '')
    for (const id of matched) {
      try {
        if (await actOn(verbs, action, id, domain)) done++
      } catch (err) {
        if (!skippable(err)) throw err
        if (isConflict(err)) skipped.push({ id, reason: (err as Error).message })
      }
    }
  }
  return { action, dryRun, matched, done, skipped }
}

async function actOn(verbs: BulkVerbs, action: BulkAction, id: string, domain: string | undefined): Promise<boolean> {
  switch (action) {
    case 'hold':
      return Boolean(await verbs.hold(id))
    case 'release':
      return Boolean(await verbs.release(id))
    case 'delete':
      return Boolean(await verbs.remove(id))
    case 'flush':
      return (await verbs.flush({ id, domain })).flushed > 0
    case 'bounce':
      return (await verbs.bounce(id)).bounced.length > 0
  }
}

const isConflict = (err: unknown): boolean => (err as { kind?: string }).kind === 'conflict' || (err as { status?: number }).status === 409

/** Gone, or not in a state for this verb (a queue verb's `kind`, or the admin API's 404/409). */
function skippable(err: unknown): boolean {
  const e = err as { kind?: string; status?: number }
  return e?.kind === 'not-found' || e?.kind === 'conflict' || e?.status === 404 || e?.status === 409
}
