// Admin API for reputation figures and recent events:
//   GET /api/stats?period=hour|day  → { period, figures, series } (series: the last 24 hours, hourly)
//   GET /api/events?type=&domain=&text=&after=&limit=  → { events } (newest first)
import type { RelayConfig } from '../config/schema.js'
import type { Queue, StatsRow } from '../queue/types.js'
import { computeFigures, hourlySeries, windowStart, type Figures, type HourPoint, type Period } from '../reputation/figures.js'
import { Tokens } from '../tokens.js'
import { AdminError, type AdminServer } from './server.js'
import type { AdminContext } from './context.js'
import { RECENT_EVENT_TYPES, RECENT_EVENTS, RecentEvents } from './recent-events.js'

export interface StatsResponse {
  period: Period
  figures: Figures
  /** Delivered, deferred, bounced and complaints per hour over the last 24 hours, oldest first. */
  series: HourPoint[]
}

/** Figures and series from one read of the counters (the day's window holds the 24 hours of the series). */
export async function statsResponse(queue: Queue, config: RelayConfig, period: Period, now = Date.now()): Promise<StatsResponse> {
  return statsFromRows(await queue.stats(windowStart('day', now)), config, period, now)
}

export function statsFromRows(rows: StatsRow[], config: RelayConfig, period: Period, now = Date.now()): StatsResponse {
  return {
    period,
    figures: computeFigures(rows, { period, now, thresholds: config.reputation }),
    series: hourlySeries(rows, now, 24),
  }
}

export function parsePeriod(value: string | null | undefined): Period {
  if (value === null || value === undefined || value === '') return 'day'
  if (value === 'hour' || value === 'day') return value
  throw new AdminError(400, `period: expected 'hour' or 'day', got '${value}'`)
}

export function registerStatsRoutes(server: Pick<AdminServer, 'route'>, { container }: AdminContext): void {
  // Resolved per request: the routes are registered before everything in the container exists.
  const queue = () => container.resolve<Queue>(Tokens.Queue)
  const config = () => container.resolve<RelayConfig>(Tokens.Config)
  const events = () => (container.isRegistered(RECENT_EVENTS) ? container.resolve<RecentEvents>(RECENT_EVENTS) : new RecentEvents(1))

  server.route('GET', '/api/stats', async (req) => ({ json: await statsResponse(queue(), config(), parsePeriod(req.query.get('period'))) }))

  server.route('GET', '/api/events', (req) => {
    const q = req.query
    const type = q.get('type') || undefined
    if (type && !RECENT_EVENT_TYPES.includes(type as never)) throw new AdminError(400, `type: expected one of ${RECENT_EVENT_TYPES.join(', ')}, got '${type}'`)
    const number = (name: string) => {
      const v = q.get(name)
      if (v === null || v === '') return undefined
      const n = Number(v)
      if (!Number.isInteger(n) || n < 0) throw new AdminError(400, `${name}: expected a whole number, got '${v}'`)
      return n
    }
    const recent = events()
    const list = recent.list({ type, domain: q.get('domain') || undefined, text: q.get('text') || q.get('q') || undefined, after: number('after'), limit: number('limit') ?? 200 })
    return { json: { events: list, capacity: recent.capacity } }
  })
}
