import type { Logger } from 'pino'
import { Tokens } from '../tokens.js'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus } from '../hooks/bus.js'
import type { DeliveryScheduler } from '../delivery/scheduler.js'
import type { Queue, QueueFilter } from '../queue/types.js'
import { QueueControl, QueueControlError } from '../queue/control.js'
import { AdminError, type AdminHandler, type AdminRequest, type AdminServer } from './server.js'
import type { AdminContext } from './context.js'

const STATES = new Set(['queued', 'deferred', 'held'])

/**
 * The queue API (JSON): list, show, hold, release, delete, bounce, flush, summary. Actions that
 * make work due wake the delivery scheduler at once.
 */
export function registerQueueRoutes(server: AdminServer, { container, relay }: AdminContext): void {
  const control = () => {
    const r = relay.readiness()
    if (r.state === 'stopping' || r.state === 'stopped') throw new AdminError(503, `the relay is ${r.state}`)
    const delivery = container.resolve<DeliveryScheduler>(Tokens.Delivery)
    return new QueueControl({
      queue: container.resolve<Queue>(Tokens.Queue),
      config: container.resolve<RelayConfig>(Tokens.Config),
      log: container.resolve<Logger>(Tokens.Logger),
      hooks: container.resolve<HookBus>(Tokens.Hooks),
      wake: () => delivery.notify(),
    })
  }
  // QueueControl's errors become 404 / 409 / 400.
  const handle =
    (fn: (c: QueueControl, req: AdminRequest) => Promise<unknown>): AdminHandler =>
    async (req) => {
      try {
        return { json: await fn(control(), req) }
      } catch (err) {
        if (err instanceof QueueControlError) throw new AdminError(err.kind === 'not-found' ? 404 : err.kind === 'conflict' ? 409 : 400, err.message)
        throw err
      }
    }

  server.route('GET', '/api/queue', handle(async (c, req) => ({ messages: await c.list(listFilter(req.query)) })))
  server.route('GET', '/api/queue-summary', handle((c) => c.summary()))
  server.route(
    'POST',
    '/api/queue/flush',
    handle(async (c, req) => {
      const body = await req.body()
      const field = (name: string) => {
        const v = body[name] ?? req.query.get(name) ?? undefined
        if (v !== undefined && typeof v !== 'string') throw new AdminError(400, `${name} must be a string`)
        return v
      }
      return c.flush({ domain: field('domain'), id: field('id') })
    }),
  )
  server.route('GET', '/api/queue/:id', handle((c, req) => c.show(req.params.id!)))
  server.route('POST', '/api/queue/:id/hold', handle((c, req) => c.hold(req.params.id!)))
  server.route('POST', '/api/queue/:id/release', handle((c, req) => c.release(req.params.id!)))
  server.route('POST', '/api/queue/:id/delete', handle((c, req) => c.remove(req.params.id!)))
  server.route('DELETE', '/api/queue/:id', handle((c, req) => c.remove(req.params.id!)))
  server.route('POST', '/api/queue/:id/bounce', handle((c, req) => c.bounce(req.params.id!)))
}

/** `?state=&domain=&sender=&limit=`; a bad value is a 400 naming the parameter. */
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
    if (!Number.isInteger(n) || n < 1) throw new AdminError(400, `limit: expected a positive whole number (got '${limit}')`)
    filter.limit = n
  }
  return filter
}
