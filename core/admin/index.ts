// Every admin route, assembled: each module registers its own (one line each here).
import type { AdminServer } from './server.js'
import type { AdminContext } from './context.js'
import { registerHealthRoutes } from './health.js'
import { registerQueueRoutes } from './queue-routes.js'
import { registerReloadRoutes } from './reload-routes.js'
import { registerStatsRoutes } from './stats-routes.js'
import { registerDashboard } from './dashboard.js'
import { registerMetricsRoute } from '../metrics/route.js'

export type { AdminContext, Readiness, RelayControl } from './context.js'
export { AdminServer, AdminError, type AdminHandler, type AdminRequest, type AdminResponse } from './server.js'

export function registerAdminRoutes(server: AdminServer, ctx: AdminContext): void {
  registerHealthRoutes(server, ctx)
  registerQueueRoutes(server, ctx)
  registerReloadRoutes(server, ctx)
  registerStatsRoutes(server, ctx)
  registerDashboard(server)
  registerMetricsRoute(server, ctx)
}
