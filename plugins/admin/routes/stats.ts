// Admin API for reputation figures and recent events:
//   GET /api/stats?period=hour|day  → { period, figures, series } (series: the last 24 hours, hourly)
//   GET /api/events?type=&domain=&text=&after=&limit=  → { events } (newest first; recent-events.ts)
import { statsResponse, type Period } from '../../../core/index.js'
import { AdminError, type AdminServer } from '../server.js'
import type { AdminContext } from '../context.js'
import { RECENT_EVENT_TYPES, recentEvents } from '../recent-events.js'

export function parsePeriod(value: string | null | undefined): Period {
  if (value === null || value === undefined || value === '') return 'day'
  if (value === 'hour' || value === 'day') return value
  throw new AdminError(400, `period: expected 'hour' or 'day', got '${value}'`)
}

export function registerStatsRoutes(server: Pick<AdminServer, 'route'>, { relay, recent }: AdminContext): void {
  server.route('GET', '/api/stats', async (req) => ({ json: await statsResponse(relay.queue, relay.warningThresholds(), parsePeriod(req.query.get('period'))) }))

  server.route('GET', '/api/events', async (req) => {
    const q = req.query
    const type = q.get('type') || undefined
    if (type && !RECENT_EVENT_TYPES.includes(type as never)) throw new AdminError(400, `type: expected one of ${RECENT_EVENT_TYPES.join(', ')}, got '${type}'`)
    const number = (name: string, max = Number.MAX_SAFE_INTEGER) => {
      const v = q.get(name)
      if (v === null || v === '') return undefined
      const n = Number(v)
      if (!Number.isInteger(n) || n < 0 || n > max) throw new AdminError(400, `${name}: expected a whole number from 0 to ${max}, got '${v.slice(0, 40)}'`)
      return n
    }
    const list = await recentEvents(relay.queue, recent, { type, domain: q.get('domain') || undefined, text: q.get('text') || q.get('q') || undefined, after: number('after'), limit: number('limit', 10_000) ?? 200 })
    return { json: { events: list, capacity: recent.capacity } }
  })
}
