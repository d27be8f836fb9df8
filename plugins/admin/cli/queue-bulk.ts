// `relay queue hold|release|flush|delete|bounce` on many messages, as postsuper does: besides one
// queue id, `ALL`, `-` (ids on stdin, one per line or separated by spaces), or a filter (--domain,
// --sender, --state, --older-than); a count is printed, `--dry-run` lists what would be done. One
// plain id without a filter or --dry-run keeps the one-message form (queueAction, queueFlush).
import { parseDuration, type BulkAction, type BulkFilter, type BulkResult, type CommandEnv } from '../../../core/index.js'
import { checkQueueIds, queueAction, queueFlush, withBackend, type QueueAction, type QueueVerbOptions } from './queue.js'
import { VerbError, fail, json, out, printable } from './output.js'

export interface BulkVerbOptions extends QueueVerbOptions {
  domain?: string
  sender?: string
  state?: string
  olderThan?: string
  dryRun?: boolean
  /** `flush --id` (the older form of `flush <id>`). */
  id?: string
}

const PAST: Record<BulkAction, string> = { hold: 'held', release: 'released', flush: 'flushed', delete: 'deleted', bounce: 'bounced' }

/** The narrowing fields of the options; undefined when none is given. */
function narrowing(opts: BulkVerbOptions): BulkFilter | undefined {
  const f: BulkFilter = {}
  if (opts.state !== undefined) {
    if (!['queued', 'deferred', 'held'].includes(opts.state)) throw new VerbError('bad-input', `--state: expected queued, deferred or held (got '${opts.state}')`)
    f.state = opts.state as BulkFilter['state']
  }
  if (opts.domain !== undefined) f.domain = opts.domain.trim().toLowerCase().replace(/\.$/, '')
  if (opts.sender !== undefined) f.sender = opts.sender === '<>' ? '' : opts.sender.replace(/^<(.*)>$/, '$1')
  if (opts.olderThan !== undefined) {
    const ms = parseDuration(opts.olderThan)
    if (ms === undefined || ms < 0) throw new VerbError('bad-input', `--older-than: expected a duration like '30m', '4h', '5d' (got '${opts.olderThan}')`)
    f.olderThan = ms
  }
  return Object.keys(f).length ? f : undefined
}

async function idsFromStdin(): Promise<string[]> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks)
    .toString('utf8')
    .split(/\s+/)
    .filter((s) => s !== '')
}

export async function queueBulkVerb(env: CommandEnv, action: BulkAction, target: string | undefined, opts: BulkVerbOptions): Promise<void> {
  let filter: BulkFilter
  try {
    const narrow = narrowing(opts)
    const id = target ?? opts.id
    if (id !== undefined && opts.id !== undefined && target !== undefined) throw new VerbError('bad-input', 'give the queue id once (as an argument or --id)')
    if (id !== 'ALL' && id !== '-') checkQueueIds(id)
    // The one-message forms, unchanged: `hold <id>`, `flush`, `flush --domain d`, `flush --id <id>`.
    if (!opts.dryRun && id !== undefined && id !== 'ALL' && id !== '-' && !narrow) {
      return action === 'flush' ? queueFlush(env, { ...opts, id }) : queueAction(env, action as QueueAction, id, opts)
    }
    if (action === 'flush' && !opts.dryRun && id === undefined && (!narrow || (Object.keys(narrow).length === 1 && narrow.domain !== undefined))) return queueFlush(env, opts)
    if (id === 'ALL') {
      if (narrow) throw new VerbError('bad-input', 'ALL selects every message: drop --domain, --sender, --state and --older-than, or ALL')
      filter = { all: true }
    } else if (id === '-') {
      const ids = await idsFromStdin()
      checkQueueIds(...ids)
      filter = { ...narrow, ids }
    } else if (id !== undefined) {
      filter = { ...narrow, ids: [id] }
    } else if (narrow) {
      filter = narrow
    } else if (action === 'flush') {
      filter = { all: true }
    } else {
      throw new VerbError('bad-input', `give a queue id, ALL, - (ids on stdin), or a filter (--domain, --sender, --state, --older-than)`)
    }
  } catch (err) {
    return fail(err)
  }
  await withBackend(
    env,
    opts,
    async (b) => {
      const r = await b.bulk(action, filter, { dryRun: opts.dryRun === true })
      print(action, r, opts)
      unmatched(filter, r)
      untouched(action, filter, r)
    },
    () => print(action, { action, dryRun: opts.dryRun === true, matched: [], done: 0, skipped: [] }, opts),
  )
}

/**
 * Ids given on stdin that selected nothing are named, one line each, and the exit code is 1, as
 * for one id (`relay: no message X in the queue`): a typo or a message gone is not silently passed by.
 */
function unmatched(filter: BulkFilter, r: BulkResult): void {
  if (!('ids' in filter) || !filter.ids) return
  const matched = new Set(r.matched)
  const narrowed = Object.keys(filter).length > 1
  const missing = [...new Set(filter.ids)].filter((id) => !matched.has(id))
  for (const id of missing.slice(0, 100)) process.stderr.write(printable(`relay: no message ${id} in the queue${narrowed ? ' that the filter selects' : ''}\n`))
  if (missing.length > 100) process.stderr.write(`relay: and ${missing.length - 100} more ids that selected no message\n`)
  if (missing.length) process.exitCode = 1
}

/**
 * Messages the action could not change are named with the reason, and the exit code is 1, as for
 * one id: a delete or bounce always (the operator meant every message it selects to go), the other
 * verbs when ids were named (`release ALL` passing by the messages that are not held is no failure).
 */
function untouched(action: BulkAction, filter: BulkFilter, r: BulkResult): void {
  const skipped = r.skipped ?? []
  if (!skipped.length || (action !== 'delete' && action !== 'bounce' && !filter.ids)) return
  for (const s of skipped.slice(0, 100)) process.stderr.write(printable(`relay: ${s.reason}\n`))
  if (skipped.length > 100) process.stderr.write(`relay: and ${skipped.length - 100} more messages left as they were\n`)
  process.exitCode = 1
}

function print(action: BulkAction, r: BulkResult, opts: BulkVerbOptions): void {
  if (opts.json) return json(r)
  const n = (k: number) => `${k} message${k === 1 ? '' : 's'}`
  if (r.dryRun) {
    const lines = [...r.matched, `would ${action} ${n(r.matched.length)} (dry run: nothing done)`]
    return out(lines.join('\n'))
  }
  out(`${PAST[action]} ${r.done} of ${n(r.matched.length)}${action === 'flush' && r.done ? ': due now' : ''}`)
}
