// POST /api/queue/bulk's body: `{ action, filter, dryRun? }` checked (api-schemas.ts BulkRequest)
// and turned into the operator API's bulk arguments. A filter must say what it selects: `{}` is
// refused rather than taken as every message (that is `all: true`, alone).
import { parseDuration, type BulkAction, type BulkFilter } from '../../../core/index.js'
import { BulkRequest, describeIssues } from '../api-schemas.js'
import { AdminError } from '../server.js'

export function bulkRequest(body: Record<string, unknown>): { action: BulkAction; filter: BulkFilter; dryRun: boolean } {
  const parsed = BulkRequest.safeParse(body)
  if (!parsed.success) throw new AdminError(400, describeIssues(parsed.error))
  const { action, filter: f, dryRun } = parsed.data
  const narrowing = f.domain !== undefined || f.sender !== undefined || f.state !== undefined || f.olderThan !== undefined
  if (f.all && (narrowing || f.ids)) throw new AdminError(400, 'filter.all: every message, alone (drop the other filter fields, or all)')
  if (!f.all && !f.ids && !narrowing) throw new AdminError(400, 'filter: give ids, all: true, or at least one of domain, sender, state, olderThan')
  const filter: BulkFilter = {}
  if (f.all) filter.all = true
  if (f.ids) filter.ids = f.ids
  if (f.domain !== undefined) filter.domain = f.domain.trim().toLowerCase().replace(/\.$/, '')
  // `<>` is the null sender, as in GET /api/queue.
  if (f.sender !== undefined) filter.sender = f.sender.trim().replace(/^<(.*)>$/, '$1')
  if (f.state !== undefined) filter.state = f.state
  if (f.olderThan !== undefined) filter.olderThan = olderThan(f.olderThan)
  return { action, filter, dryRun: dryRun === true }
}

/** Milliseconds as a number, or a duration string ('90s', '30m', '4h', '5d'). */
function olderThan(value: number | string): number {
  if (typeof value === 'number') return value
  const ms = /^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$/.test(value) ? parseDuration(value) : undefined
  if (ms === undefined) throw new AdminError(400, `filter.olderThan: expected milliseconds or a duration like '90s', '30m', '4h', '5d' (got '${value}')`)
  return ms
}
