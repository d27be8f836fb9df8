import type { AdminServer } from './server.js'
import type { AdminContext } from './context.js'

/** GET /healthz (no token: the process answers) and GET /readyz (queue open, listeners up). */
export function registerHealthRoutes(server: AdminServer, { relay }: AdminContext): void {
  server.route('GET', '/healthz', () => ({ body: 'ok\n', contentType: 'text/plain; charset=utf-8' }), { public: true })
  server.route('GET', '/readyz', () => {
    const r = relay.readiness()
    return { status: r.ready ? 200 : 503, json: r }
  })
}
