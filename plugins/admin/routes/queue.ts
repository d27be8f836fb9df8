import type { QueueFilter, QueueOperations } from '../../../core/index.js'
import { AdminError, type AdminHandler, type AdminRequest, type AdminServer } from '../server.js'
import type { AdminContext } from '../context.js'
import { bulkRequest } from './bulk.js'
import { decodeCursor, queuePage } from './queue-cursor.js'

const STATES = new Set(['queued', 'deferred', 'held'])
/** The largest page (the dashboard asks for 200; a million-message queue is read in pages). */
const MAX_LIMIT = 100_000
const STATUS_OF_KIND: Record<string, number> = { 'not-found': 404, conflict: 409, 'bad-input': 400 }

/**
 * The queue API (JSON): list (cursor paging), show, raw, hold, release, delete, bounce, flush,
 * bulk, summary. Actions that make work due wake the delivery scheduler at once.
 */
export function registerQueueRoutes(server: AdminServer, { relay }: AdminContext): void {
  const queue = (): QueueOperations => {
    const r = relay.readiness()
    if (r.state === 'stopping' || r.state === 'stopped') throw new AdminError(503, `the relay is ${r.state}`)
    return relay.queue
  }
  // The queue verbs' errors (their `kind`) become 404 / 409 / 400.
  const call = async <T>(fn: (q: QueueOperations) => Promise<T>): Promise<T> => {
    try {
      return await fn(queue())
    } catch (err) {
      const status = STATUS_OF_KIND[(err as { kind?: string } | null)?.kind ?? '']
      if (status) throw new AdminError(status, (err as Error).message)
      throw err
    }
  }
  const handle =
    (fn: (q: QueueOperations, req: AdminRequest) => Promise<unknown>): AdminHandler =>
    async (req) => ({ json: await call((q) => fn(q, req)) })

  server.route('GET', '/api/queue', handle((q, req) => queuePage(q, listFilter(req.query))))
  server.route('GET', '/api/queue-summary', handle((q) => q.summary()))
  server.route(
    'POST',
    '/api/queue/flush',
    handle(async (q, req) => {
      const body = await req.body()
      // A misspelt key must not widen a flush to the whole queue (as FlushRequest's additionalProperties: false).
      for (const key of new Set([...Object.keys(body), ...req.query.keys()])) {
        if (key !== 'domain' && key !== 'id') throw new AdminError(400, `unknown field '${key.slice(0, 40)}': expected domain or id (neither: the whole queue)`)
      }
      const field = (name: string) => {
        const v = name in body ? body[name] : (req.query.get(name) ?? undefined)
        if (v !== undefined && typeof v !== 'string') throw new AdminError(400, `${name} must be a string`)
        return v
      }
      return q.flush({ domain: field('domain'), id: field('id') })
    }),
  )
  // `{ action, filter, dryRun? }` → BulkResult (postsuper-style, by filter or ids).
  server.route(
    'POST',
    '/api/queue/bulk',
    handle(async (q, req) => {
      const { action, filter, dryRun } = bulkRequest(await req.body())
      return q.bulk(action, filter, { dryRun })
    }),
  )
  // The envelope, recipients and attempts for every token; the header section (content) for the full one.
  server.route(
    'GET',
    '/api/queue/:id',
    handle(async (q, req) => {
      const detail = await q.show(req.params.id!)
      return req.access === 'read-only' ? { ...detail, headers: null } : detail
    }),
  )
  // The message as queued, like `postcat -q` (`relay queue cat` against a running relay).
  server.route('GET', '/api/queue/:id/raw', async (req) => ({ body: await call((q) => q.raw(req.params.id!)), contentType: 'message/rfc822' }), { content: true })
  server.route('POST', '/api/queue/:id/hold', handle((q, req) => q.hold(req.params.id!)))
  server.route('POST', '/api/queue/:id/release', handle((q, req) => q.release(req.params.id!)))
  server.route('POST', '/api/queue/:id/delete', handle((q, req) => q.remove(req.params.id!)))
  server.route('DELETE', '/api/queue/:id', handle((q, req) => q.remove(req.params.id!)))
  server.route('POST', '/api/queue/:id/bounce', handle((q, req) => q.bounce(req.params.id!)))
}

/** `?state=&domain=&sender=&limit=&cursor=`; a bad value is a 400 naming the parameter. */
export function listFilter(q: URLSearchParams): QueueFilter {
  const filter: QueueFilter = {}
  const state = q.get('state')
  if (state !== null && state !== '') {
    if (!STATES.has(state)) throw new AdminError(400, `state: expected one of queued, deferred, held (got '${state}')`)
    filter.state = state as QueueFilter['state']
  }
  const domain = q.get('domain')
  if (domain) filter.domain = domain.trim().toLowerCase().replace(/\.$/, '')
  const sender = q.get('sender')
  // `<>` is the null sender (bounces); an empty parameter filters nothing.
  if (sender !== null && sender.trim() !== '') filter.sender = sender.trim().replace(/^<(.*)>$/, '$1')
  const limit = q.get('limit')
  if (limit !== null && limit !== '') {
    const n = Number(limit)
    if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT) throw new AdminError(400, `limit: expected a whole number from 1 to ${MAX_LIMIT} (got '${limit.slice(0, 40)}')`)
    filter.limit = n
  }
  const cursor = q.get('cursor')
  if (cursor !== null && cursor !== '') filter.after = decodeCursor(cursor)
  return filter
}
