import type { AdminServer } from '../server.js'
import type { AdminContext } from '../context.js'

/**
 * GET /healthz (the process answers) and GET /readyz (queue open, listeners up). Both without a
 * token and whatever their Host header (load balancers send their own names, or none): they tell
 * nothing beyond the relay's state.
 */
export function registerHealthRoutes(server: AdminServer, { relay }: AdminContext): void {
  server.route('GET', '/healthz', () => ({ body: 'ok\n', contentType: 'text/plain; charset=utf-8' }), { public: true, anyHost: true })
  server.route('GET', '/readyz', () => {
    const r = relay.readiness()
    return { status: r.ready ? 200 : 503, json: r }
  }, { public: true, anyHost: true })
}
