// Every admin route, assembled: each module registers its own (one line each here).
import type { AdminServer } from '../server.js'
import type { AdminContext } from '../context.js'
import { registerDashboard } from '../dashboard.js'
import { registerOpenApiRoute } from '../openapi.js'
import { registerHealthRoutes } from './health.js'
import { registerInjectRoute } from './inject.js'
import { registerMetricsRoute } from './metrics.js'
import { registerQueueRoutes } from './queue.js'
import { registerReloadRoutes } from './reload.js'
import { registerStatsRoutes } from './stats.js'

export function registerAdminRoutes(server: AdminServer, ctx: AdminContext): void {
  registerHealthRoutes(server, ctx)
  registerOpenApiRoute(server)
  registerQueueRoutes(server, ctx)
  registerInjectRoute(server, ctx)
  registerReloadRoutes(server, ctx)
  registerStatsRoutes(server, ctx)
  registerDashboard(server)
  registerMetricsRoute(server, ctx)
}
