import type { AdminServer } from '../server.js'
import type { AdminContext } from '../context.js'

/** GET /metrics: the Prometheus text format (behind the admin token, like every admin route but /healthz). */
export function registerMetricsRoute(server: AdminServer, { metrics }: AdminContext): void {
  server.route('GET', '/metrics', async () => ({ body: await metrics.metrics(), contentType: metrics.contentType }))
}
