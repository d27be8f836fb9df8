import type { AdminContext } from '../admin/context.js'
import type { AdminServer } from '../admin/server.js'
import { RelayMetrics } from './relay-metrics.js'

/** GET /metrics: the Prometheus text format (behind the admin token, like every admin route but /healthz). */
export function registerMetricsRoute(server: AdminServer, { container }: AdminContext): void {
  server.route('GET', '/metrics', async () => {
    const metrics = container.resolve(RelayMetrics)
    return { body: await metrics.metrics(), contentType: metrics.contentType }
  })
}
