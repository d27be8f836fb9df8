import { Counter, Gauge, type Registry } from 'prom-client'
import type { RelayOperations } from '../../../core/index.js'
import { relayVersion } from './build-info.js'

/** What these gauges read at each scrape (the relay's operator API). */
export type StatusSources = Pick<RelayOperations, 'tlsCertificates' | 'deliveryStatus' | 'gauges'>

/** Plugins' gauges are exported under this prefix: they can never shadow the relay's own metrics. */
export const PLUGIN_GAUGE_PREFIX = 'relay_plugin_'

/**
 * Figures read when scraped: build info, certificate expiry, delivery now (open connections,
 * paused destinations). Plugins' gauges (ctx.relay.registerGauge) are collected by
 * `PluginGauges`, as a name may be registered after the admin plugin is set up.
 */
export function registerStatusGauges(registry: Registry, sources: StatusSources): void {
  const registers = [registry]
  new Gauge({ name: 'relay_build_info', help: 'Always 1; the labels say which relay version runs on which Node.js.', labelNames: ['version', 'node'], registers }).set({ version: relayVersion(), node: process.version }, 1)
  new Gauge({
    name: 'relay_tls_certificate_expiry_timestamp_seconds',
    help: 'When each certificate the listeners serve expires (Unix time); alert on `... - time() < 14 * 86400`.',
    labelNames: ['file', 'subject'] as const,
    registers,
    collect() {
      // A certificate replaced (renewed, or a new file) drops its old series.
      this.reset()
      for (const c of sources.tlsCertificates()) this.set({ file: c.file, subject: c.subject }, Math.floor(c.notAfter / 1000))
    },
  })
  new Gauge({
    name: 'relay_delivery_open_connections',
    help: 'Outbound SMTP/LMTP connections open now: in a transaction or idle in the connection pool.',
    registers,
    collect() {
      this.set(sources.deliveryStatus().openConnections)
    },
  })
  new Gauge({
    name: 'relay_delivery_paused_destinations',
    help: 'Destination domains whose deliveries are paused by the throttle after a "slow down" reply (421, 4.7.0).',
    registers,
    collect() {
      this.set(sources.deliveryStatus().pausedDestinations)
    },
  })
}

/**
 * The gauges plugins registered with ctx.relay.registerGauge, as `relay_plugin_<name>`: added to
 * the registry at the scrape that first sees them. A `read` that throws leaves its gauge out of
 * that scrape; one that is no longer registered is removed.
 */
export class PluginGauges {
  private readonly known = new Map<string, Gauge | Counter>()

  constructor(
    private readonly registry: Registry,
    private readonly sources: Pick<StatusSources, 'gauges'>,
  ) {}

  /** Called before each scrape: reads every registered gauge. */
  async collect(): Promise<void> {
    const registered = this.sources.gauges()
    const names = new Set(registered.map((g) => PLUGIN_GAUGE_PREFIX + g.name))
    for (const [name] of this.known) {
      if (names.has(name)) continue
      this.registry.removeSingleMetric(name)
      this.known.delete(name)
    }
    await Promise.all(
      registered.map(async (g) => {
        const name = PLUGIN_GAUGE_PREFIX + g.name
        let value: number
        try {
          value = await g.read()
        } catch {
          value = NaN
        }
        let gauge = this.known.get(name)
        if (!Number.isFinite(value)) {
          if (gauge) this.registry.removeSingleMetric(name)
          this.known.delete(name)
          return
        }
        // A name ending in _total is a count that only grows: exported as a Prometheus counter.
        const counter = name.endsWith('_total')
        if (!gauge) {
          gauge = counter ? new Counter({ name, help: g.help, registers: [this.registry] }) : new Gauge({ name, help: g.help, registers: [this.registry] })
          this.known.set(name, gauge)
        }
        if (gauge instanceof Counter) {
          gauge.reset()
          gauge.inc(Math.max(0, value))
        } else gauge.set(value)
      }),
    )
  }
}
