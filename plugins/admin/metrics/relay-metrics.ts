// The relay's Prometheus metrics (GET /metrics on the admin listener). Label sets are bounded:
// listener role, stage, reply code, plugin name (from config), failure category, DNS query type and
// error code, certificate file, and destination domain (an allowlist, the top N by volume, or the
// first seen: domains.ts; at most `metrics.maxDomainLabels`, the rest 'other'). Fed by the plugin's
// event hooks (index.ts); queue, session, delivery and certificate figures are read when scraped.
//
//   relay_smtp_connections_total{listener}            relay_smtp_active_sessions{listener}
//   relay_smtp_sessions_closed_total{listener}        relay_smtp_tls_sessions_total{listener,version}
//   relay_smtp_auth_failures_total{temporary}         relay_smtp_rejections_total{stage,code,plugin}
//   relay_smtp_suppressed_recipients_total            relay_messages_accepted_total{listener}
//   relay_messages_accepted_bytes_total{listener}     relay_delivery_delivered_total{domain}
//   relay_delivery_deferred_total{domain,category}    relay_delivery_bounced_total{domain,category}
//   relay_delivery_attempt_duration_seconds{result}   relay_delivery_queue_time_seconds{result}
//   relay_dns_failures_total{type,code}               relay_queue_messages
//   relay_queue_recipients{state}                     relay_queue_oldest_message_age_seconds
//   relay_config_reloads_total{result}                relay_build_info{version,node}
//   relay_tls_certificate_expiry_timestamp_seconds{file,subject}
//   relay_delivery_open_connections                   relay_delivery_paused_destinations
//   relay_delivery_route_results_total{route,result} (route names from config, at most 50: routes.ts)
//   relay_plugin_<name> (gauges plugins register with ctx.relay.registerGauge: status-gauges.ts)
//   relay_nodejs_eventloop_lag_seconds (and the other prom-client default metrics, prefixed relay_)
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { AcceptedEvent, BounceCategory, DeliveryEvent, EventContexts, ListenerRole, QueueSummary, RejectedEvent, SessionCounts } from '../../../core/index.js'
import { DomainLabels, type DomainLabelOptions } from './domains.js'
import { registerQueueGauges } from './queue-gauges.js'
import { RouteResults } from './routes.js'
import { PluginGauges, registerStatusGauges, type StatusSources } from './status-gauges.js'

export type MetricsOptions = DomainLabelOptions

/** Where the figures read at each scrape come from (the relay's operator API). */
export interface MetricsSources extends StatusSources {
  summary(): Promise<QueueSummary>
  sessions(): SessionCounts
}

const ROLES: ListenerRole[] = ['mx', 'submission']
const CATEGORIES: (BounceCategory | 'other')[] = ['bad-mailbox', 'mailbox-full', 'policy', 'dns', 'tls', 'auth', 'throttled', 'other']
/** c-ares error codes (ENOTFOUND, ESERVFAIL, ETIMEOUT, ...): a fixed set; anything else is 'other'. */
const DNS_CODE = /^E[A-Z]{2,20}$/

/**
 * The relay's Prometheus metrics in a registry of its own (not prom-client's global one, which
 * another plugin might also use).
 */
export class RelayMetrics {
  readonly registry = new Registry()
  private readonly domains: DomainLabels
  private queueErrorLogged = 0

  private readonly sessionsClosed: Counter<'listener'>
  private readonly tlsSessions: Counter<'listener' | 'version'>
  private readonly authFailures: Counter<'temporary'>
  private readonly acceptedTotal: Counter<'listener'>
  private readonly acceptedBytes: Counter<'listener'>
  private readonly rejectedTotal: Counter<'stage' | 'code' | 'plugin'>
  private readonly suppressedTotal: Counter
  private readonly deliveredTotal: Counter<'domain'>
  private readonly deferredTotal: Counter<'domain' | 'category'>
  private readonly bouncedTotal: Counter<'domain' | 'category'>
  private readonly attemptDuration: Histogram<'result'>
  private readonly queueTime: Histogram<'result'>
  private readonly dnsFailures: Counter<'type' | 'code'>
  private readonly takeovers: Counter
  private readonly reloads: Counter<'result'>
  private readonly pluginGauges: PluginGauges
  private readonly routes = new RouteResults(this.registry)

  constructor(options: MetricsOptions, sources: MetricsSources, onQueueError: (err: unknown) => void = () => undefined) {
    const registers = [this.registry]
    // A domain that loses its label (top N recomputed) leaves the domain-labelled series.
    this.domains = new DomainLabels(options, (domain) => {
      this.deliveredTotal.remove({ domain })
      for (const c of [this.deferredTotal, this.bouncedTotal]) for (const category of CATEGORIES) c.remove({ domain, category })
    })
    // Process and Node.js figures, among them relay_nodejs_eventloop_lag_seconds (and its percentiles).
    collectDefaultMetrics({ register: this.registry, prefix: 'relay_' })

    new Counter({
      name: 'relay_smtp_connections_total',
      help: 'SMTP connections accepted, by listener role.',
      labelNames: ['listener'] as const,
      registers,
      collect() {
        const counts = sources.sessions()
        this.reset()
        for (const role of ROLES) this.inc({ listener: role }, counts.connections[role] ?? 0)
      },
    })
    new Gauge({
      name: 'relay_smtp_active_sessions',
      help: 'SMTP sessions open now, by listener role.',
      labelNames: ['listener'] as const,
      registers,
      collect() {
        const counts = sources.sessions()
        for (const role of ROLES) this.set({ listener: role }, counts.active[role] ?? 0)
      },
    })
    this.sessionsClosed = new Counter({ name: 'relay_smtp_sessions_closed_total', help: 'SMTP sessions ended, by listener role.', labelNames: ['listener'], registers })
    this.tlsSessions = new Counter({
      name: 'relay_smtp_tls_sessions_total',
      help: 'SMTP sessions that ended encrypted (STARTTLS or implicit TLS), by listener role and TLS version; divide by relay_smtp_sessions_closed_total for the TLS share.',
      labelNames: ['listener', 'version'],
      registers,
    })
    this.authFailures = new Counter({ name: 'relay_smtp_auth_failures_total', help: 'Failed AUTH attempts; temporary="true": a backend could not check (tempfail).', labelNames: ['temporary'], registers })
    this.acceptedTotal = new Counter({ name: 'relay_messages_accepted_total', help: 'Messages written to the queue and answered 250, by listener role.', labelNames: ['listener'], registers })
    this.acceptedBytes = new Counter({ name: 'relay_messages_accepted_bytes_total', help: 'Bytes of the messages accepted, by listener role.', labelNames: ['listener'], registers })
    this.rejectedTotal = new Counter({
      name: 'relay_smtp_rejections_total',
      help: "4xx/5xx replies given by a hook or the core's own checks, by stage (hook name, or 'protocol'), reply code and plugin ('core' for the core's own decisions).",
      labelNames: ['stage', 'code', 'plugin'],
      registers,
    })
    this.suppressedTotal = new Counter({ name: 'relay_smtp_suppressed_recipients_total', help: 'Recipients refused at RCPT because they are on the suppression list (also counted in relay_smtp_rejections_total).', registers })
    this.deliveredTotal = new Counter({ name: 'relay_delivery_delivered_total', help: 'Recipients delivered, by destination domain.', labelNames: ['domain'], registers })
    this.deferredTotal = new Counter({ name: 'relay_delivery_deferred_total', help: 'Delivery attempts deferred (one per recipient and attempt), by destination domain and failure category.', labelNames: ['domain', 'category'], registers })
    this.bouncedTotal = new Counter({ name: 'relay_delivery_bounced_total', help: 'Recipients bounced, by destination domain and failure category.', labelNames: ['domain', 'category'], registers })
    this.attemptDuration = new Histogram({
      name: 'relay_delivery_attempt_duration_seconds',
      help: 'How long a delivery attempt took (DNS, connection and SMTP transaction), by result.',
      labelNames: ['result'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers,
    })
    this.queueTime = new Histogram({
      name: 'relay_delivery_queue_time_seconds',
      help: 'Time from receipt to the final result of a recipient (delivered or bounced).',
      labelNames: ['result'],
      buckets: [1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600],
      registers,
    })
    this.dnsFailures = new Counter({ name: 'relay_dns_failures_total', help: 'DNS lookups that got no answer, by query type and error code (ESERVFAIL, ETIMEOUT, EREFUSED, ECONNREFUSED, ...); an answer that the name or record does not exist (NXDOMAIN, NODATA) is not counted.', labelNames: ['type', 'code'], registers })
    this.takeovers = new Counter({ name: 'relay_queue_lease_takeovers_total', help: 'Recipients (not messages) this node claimed from an earlier lease: work left by a process or node that died or hung mid-delivery (its heartbeat stopped or its lease expired).', registers })
    this.reloads = new Counter({ name: 'relay_config_reloads_total', help: 'Hot reloads (SIGHUP, `relay reload`, POST /api/reload) by result: ok, or failed (the config was refused; the running one stays).', labelNames: ['result'], registers })
    for (const result of ['ok', 'failed']) this.reloads.inc({ result }, 0)
    registerStatusGauges(this.registry, sources)
    this.pluginGauges = new PluginGauges(this.registry, sources)
    registerQueueGauges(this.registry, () => sources.summary(), (err) => {
      // A broken queue shows in every scrape; one line a minute is enough.
      if (Date.now() - this.queueErrorLogged < 60_000) return
      this.queueErrorLogged = Date.now()
      onQueueError(err)
    })
  }

  get contentType(): string {
    return this.registry.contentType
  }

  /** The text exposition format, for GET /metrics. */
  async metrics(): Promise<string> {
    await this.pluginGauges.collect()
    return this.registry.metrics()
  }

  /** The plugin is torn down: the top-domains timer stops. */
  stop(): void {
    this.domains.stop()
  }

  /** A hot reload ended. */
  reloaded({ ok }: EventContexts['reloaded']): void {
    this.reloads.inc({ result: ok ? 'ok' : 'failed' })
  }

  /** A SMTP session ended. */
  sessionClosed({ session }: EventContexts['sessionClosed']): void {
    const listener = session.listener.role
    this.sessionsClosed.inc({ listener })
    if (session.secure) this.tlsSessions.inc({ listener, version: session.tls?.version ?? 'unknown' })
  }

  authFailed(e: EventContexts['authFailed']): void {
    this.authFailures.inc({ temporary: e.temporary ? 'true' : 'false' })
  }

  accepted(e: AcceptedEvent): void {
    const listener = e.session.listener.role
    this.acceptedTotal.inc({ listener })
    this.acceptedBytes.inc({ listener }, e.size)
  }

  rejected(e: RejectedEvent): void {
    this.rejectedTotal.inc({ stage: e.stage, code: String(e.code), plugin: e.plugin ?? 'core' })
  }

  suppressed(): void {
    this.suppressedTotal.inc()
  }

  delivered(e: DeliveryEvent): void {
    this.deliveredTotal.inc({ domain: this.domains.label(e.domain) })
    this.timings('delivered', e, true)
    this.routes.count('delivered', e)
  }

  deferred(e: DeliveryEvent): void {
    this.deferredTotal.inc({ domain: this.domains.label(e.domain), category: e.category ?? 'other' })
    this.timings('deferred', e, false)
    this.routes.count('deferred', e)
  }

  bounced(e: DeliveryEvent): void {
    this.bouncedTotal.inc({ domain: this.domains.label(e.domain), category: e.category ?? 'other' })
    this.timings('bounced', e, true)
    this.routes.count('bounced', e)
  }

  dnsFailed({ type, code }: EventContexts['dnsFailed']): void {
    this.dnsFailures.inc({ type, code: DNS_CODE.test(code) ? code : 'other' })
  }

  /** Recipients this node claimed from an earlier lease (the scheduler's takeover). */
  leaseTakenOver({ recipients }: EventContexts['leaseTakenOver']): void {
    this.takeovers.inc(recipients)
  }

  private timings(result: string, e: DeliveryEvent, final: boolean): void {
    // An operator's bounce took no attempt: it would pull the attempt durations towards 0.
    if (!e.byOperator) this.attemptDuration.observe({ result }, Math.max(0, e.durationMs) / 1000)
    if (final) this.queueTime.observe({ result }, Math.max(0, e.queuedMs) / 1000)
  }
}
