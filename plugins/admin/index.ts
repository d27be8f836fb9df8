// admin: the relay's operations listener: the admin API (queue control, stats, reload), the
// dashboard, Prometheus metrics (GET /metrics), and /healthz and /readyz. Built on the operator API
// (ctx.relay) alone. Set up once and kept across hot reloads (keepOnReload), so the listener, its
// counters and its recent events outlive a reload, also one it was asked for (POST /api/reload).
// Its CLI verbs (`relay queue`, `relay stats`, `relay suppression`): commands.ts. Options: README.md.
import { definePlugin } from '../../core/index.js'
import { adminCommands } from './commands.js'
import type { RelayMetrics } from './metrics/relay-metrics.js'
import { optionsSchema, type AdminOptions } from './options.js'
import type { RecentEvents } from './recent-events.js'
import type { AdminServer } from './server.js'

interface State {
  server: AdminServer
  metrics: RelayMetrics
  recent: RecentEvents
}

export default definePlugin<AdminOptions, State | undefined>({
  name: 'admin',
  options: optionsSchema,
  keepOnReload: true,
  commands: adminCommands,
  // Its listener, checked against the relay's and other plugins' (a clash is a config error).
  ports: (o) => [{ host: o.host, port: o.port, key: 'port' }],

  async setup({ options, dataDir, log, mode, relay, hostname }) {
    // relay check-config: the options are valid; nothing is bound.
    if (mode === 'check') return undefined
    if (!relay) throw new Error('the admin plugin needs a running relay (no operator API was given)')
    // The listener's modules (prom-client, the routes, the dashboard) load here, not with the plugin:
    // its CLI verbs (`relay queue list`) import this file and need none of them.
    const [{ RelayMetrics }, { RecentEvents }, { registerAdminRoutes }, { AdminServer }] = await Promise.all([
      import('./metrics/relay-metrics.js'),
      import('./recent-events.js'),
      import('./routes/index.js'),
      import('./server.js'),
    ])
    const metrics = new RelayMetrics(
      options.metrics,
      {
        summary: () => relay.queue.summary(),
        sessions: () => relay.sessionCounts(),
        tlsCertificates: () => relay.tlsCertificates(),
        deliveryStatus: () => relay.deliveryStatus(),
        gauges: () => relay.gauges(),
      },
      (err) => log.error({ err }, 'metrics: reading the queue summary failed'),
    )
    const recent = new RecentEvents()
    const server = new AdminServer(options, dataDir, log)
    registerAdminRoutes(server, { relay, recent, metrics, hostname })
    await server.start()
    return { server, metrics, recent }
  },

  async teardown({ state }) {
    state?.metrics.stop()
    await state?.server.stop()
  },

  hooks: {
    accepted(e, { state }) {
      state?.metrics.accepted(e)
      state?.recent.accepted(e)
    },
    rejected(e, { state }) {
      state?.metrics.rejected(e)
      state?.recent.rejected(e)
    },
    suppressed(e, { state }) {
      state?.metrics.suppressed()
      state?.recent.suppressed(e)
    },
    delivered(e, { state }) {
      state?.metrics.delivered(e)
    },
    deferred(e, { state }) {
      state?.metrics.deferred(e)
    },
    bounced(e, { state }) {
      state?.metrics.bounced(e)
    },
    authFailed(e, { state }) {
      state?.metrics.authFailed(e)
      state?.recent.authFailed(e)
    },
    complaint(e, { state }) {
      state?.recent.complaint(e)
    },
    sessionClosed(e, { state }) {
      state?.metrics.sessionClosed(e)
    },
    dnsFailed(e, { state }) {
      state?.metrics.dnsFailed(e)
    },
    leaseTakenOver(e, { state }) {
      state?.metrics.leaseTakenOver(e)
    },
    reloaded(e, { state }) {
      state?.metrics.reloaded(e)
    },
  },
})
