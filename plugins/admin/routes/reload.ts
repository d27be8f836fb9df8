import type { AdminServer } from '../server.js'
import type { AdminContext } from '../context.js'

/** POST /api/reload: what SIGHUP does; 422 with the reason when the new config is refused. */
export function registerReloadRoutes(server: AdminServer, { relay }: AdminContext): void {
  server.route('POST', '/api/reload', async () => {
    const result = await relay.reload()
    return { status: result.ok ? 200 : 422, json: result }
  })
}
