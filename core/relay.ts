import 'reflect-metadata'
import fs from 'node:fs'
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import { container as root, type DependencyContainer } from 'tsyringe'
import type { Logger } from 'pino'
import { Tokens } from './tokens.js'
import type { RelayConfig } from './config/schema.js'
import { createLogger } from './log.js'
import { createResolver } from './dns/resolver.js'
import { Spool } from './queue/spool.js'
import { openQueue } from './queue/open.js'
import type { Queue } from './queue/types.js'
import { QueueIntake } from './queue/intake.js'
import { NodeHeartbeat } from './queue/heartbeat.js'
import { HookBus } from './hooks/bus.js'
import { loadPlugins } from './hooks/load-plugins.js'
import { DeliveryScheduler } from './delivery/scheduler.js'
import { SmtpListeners } from './smtp/listeners.js'
import { recordOwnListeners } from './delivery/loop.js'
import type { ListenerInfo } from './smtp/session.js'
import { AdminServer, registerAdminRoutes, type Readiness } from './admin/index.js'
import { reloadRelay, type ReloadResult } from './reload.js'
import { removePidFile, writePidFile } from './pid-file.js'
import { RelayMetrics } from './metrics/index.js'
import { logDeliveryEvents } from './events/log.js'
import { RECENT_EVENTS, RecentEvents } from './admin/recent-events.js'
import { ReputationMonitor } from './reputation/monitor.js'

/** A running relay: listeners, queue, delivery. `start()` wires them; `stop()` ends them in order. */
export class Relay {
  private container: DependencyContainer | undefined
  /** Event-loop delay over the relay's life: disk and DNS work must never stall sessions. */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 })
  listeners: ListenerInfo[] = []
  private state: Readiness['state'] = 'stopped'
  /** The admin HTTP listener, when config `admin` is set. */
  private admin: AdminServer | undefined
  /** Reloads run one at a time. */
  private reloading: Promise<unknown> = Promise.resolve()
  /** Prometheus metrics (GET /metrics on the admin listener); set by start(). */
  metrics: RelayMetrics | undefined
  /** Logs reputation warnings (bounce and complaint rates per sending domain). */
  private reputation: ReputationMonitor | undefined
  /** Cluster mode: this node's liveness in the shared queue; dead nodes' leases are taken over. */
  private heartbeat: NodeHeartbeat | undefined

  constructor(
    readonly config: RelayConfig,
    readonly log: Logger = createLogger(config.log.level),
  ) {}

  async start(): Promise<this> {
    const { config, log } = this
    this.state = 'starting'
    fs.mkdirSync(config.dataDir, { recursive: true })
    writePidFile(config.dataDir)
    const c = root.createChildContainer()
    this.container = c
    const metrics = new RelayMetrics(config.metrics, (err) => log.error({ err }, 'metrics: reading the queue summary failed'))
    this.metrics = metrics
    const resolver = createResolver(config, metrics.dnsFailure)
    const spool = new Spool(config.dataDir)
    // SQLite in dataDir, or PostgreSQL shared by every node (bodies in the database: bodyFiles() is []).
    const queue: Queue = await openQueue(config, { spool, log })
    c.register(Tokens.Config, { useValue: config })
    c.register(Tokens.Logger, { useValue: log })
    c.register(Tokens.Resolver, { useValue: resolver })
    c.register(Tokens.Spool, { useValue: spool })
    c.register(Tokens.Queue, { useValue: queue })
    const intake = new QueueIntake(queue)
    c.register(Tokens.Intake, { useValue: intake })
    c.register(RelayMetrics, { useValue: metrics })

    // Crash recovery: work a dead process held is due again; bodies it never queued are removed.
    const recovered = await queue.recover(Date.now())
    const known = new Set(await queue.bodyFiles())
    const swept = await spool.sweep((file) => known.has(file))
    if (recovered || swept) log.info({ recovered, swept }, 'recovered queue after an unclean stop')

    const plugins = await loadPlugins({ config, logger: log, resolver })
    const hooks = new HookBus(plugins, config.hookTimeout, log)
    // Core observers, before any session or delivery can emit: they work whatever plugins are configured.
    metrics.observe(hooks)
    metrics.trackQueue(queue)
    logDeliveryEvents(hooks, log)
    const recent = new RecentEvents()
    recent.observe(hooks)
    c.register(RECENT_EVENTS, { useValue: recent })
    c.register(Tokens.Hooks, { useValue: hooks })
    c.registerSingleton(Tokens.Delivery, DeliveryScheduler)
    c.registerSingleton(Tokens.Listeners, SmtpListeners)
    if (config.admin) {
      // Up before the listeners: /readyz says 'starting' until they are.
      c.registerSingleton(AdminServer)
      this.admin = c.resolve(AdminServer)
      registerAdminRoutes(this.admin, { container: c, relay: this })
      await this.admin.start()
    }

    const delivery = c.resolve<DeliveryScheduler>(Tokens.Delivery)
    delivery.onTakeover = metrics.leaseTakeovers
    intake.subscribe(delivery)
    if (config.queue.driver === 'postgres') {
      this.heartbeat = new NodeHeartbeat(queue, config.queue.heartbeat, log, () => delivery.notify())
      await this.heartbeat.start()
    }
    delivery.start()
    const smtp = c.resolve<SmtpListeners>(Tokens.Listeners)
    this.listeners = await smtp.start()
    // Delivery never connects to these (mail loops): the real ports, also for a configured port 0.
    recordOwnListeners(config, this.listeners)
    metrics.trackSessions(() => smtp.sessionCounts())
    smtp.feedback.onComplaint = (complaint) => recent.complaint(complaint)
    this.reputation = new ReputationMonitor(queue, config, log)
    this.reputation.start()
    this.loopDelay.enable()
    this.state = 'running'
    log.info({ hostname: config.hostname, dataDir: config.dataDir, plugins: plugins.map((p) => p.plugin.name) }, 'relay started')
    return this
  }

  /** Re-reads the TLS certificate files (SIGHUP); open sessions keep their connection. */
  reloadTls(): boolean {
    return this.container?.resolve<SmtpListeners>(Tokens.Listeners).reloadTls() ?? false
  }

  /** Ready: queue open and listeners up; not while starting or stopping (GET /readyz). */
  readiness(): Readiness {
    const { state } = this
    if (state === 'running' && this.listeners.length) return { ready: true, state }
    return { ready: false, state, reason: state === 'running' ? 'no listener is up' : `the relay is ${state}` }
  }

  /**
   * Hot reload (SIGHUP, `relay reload`, POST /api/reload): reads the config file again and applies
   * it without dropping sessions or queued mail; a config that fails validation is refused and the
   * running one stays (core/reload.ts).
   */
  reload(): Promise<ReloadResult> {
    const run = async (): Promise<ReloadResult> => {
      const c = this.container
      if (!c || this.state !== 'running') return { ok: false, error: `cannot reload: the relay is ${this.state}` }
      return reloadRelay(this.config, this.log, c)
    }
    const result = this.reloading.then(run, run)
    this.reloading = result
    return result
  }

  /** Stop accepting, let sessions and deliveries finish (up to shutdownTimeout), close the queue. */
  async stop(): Promise<void> {
    const c = this.container
    if (!c) return
    this.container = undefined
    this.state = 'stopping'
    // One deadline for both: sessions finish their messages, deliveries in flight finish;
    // whatever is still running then stays leased in the queue and is due at the next start.
    const deadline = Date.now() + this.config.shutdownTimeout
    await c.resolve<SmtpListeners>(Tokens.Listeners).stop()
    await c.resolve<DeliveryScheduler>(Tokens.Delivery).stop(Math.max(0, deadline - Date.now()))
    // Beats while deliveries drain; what is still leased after this goes to other nodes after deadAfter.
    await this.heartbeat?.stop()
    this.heartbeat = undefined
    await c.resolve<HookBus>(Tokens.Hooks).close()
    await this.reputation?.stop()
    this.reputation = undefined
    await c.resolve<Queue>(Tokens.Queue).close()
    // Last: /readyz answers 503 'stopping' while the relay drains.
    await this.admin?.stop()
    this.admin = undefined
    removePidFile(this.config.dataDir)
    this.state = 'stopped'
    this.loopDelay.disable()
    // The histogram counts the 10 ms sampling interval itself; what is above it is lag.
    const ms = (ns: number) => Math.max(0, Math.round((ns - 10e6) / 1e4) / 100)
    const d = this.loopDelay
    this.log.info({ eventLoopDelayMs: { p50: ms(d.percentile(50)), p99: ms(d.percentile(99)), max: ms(d.max) } }, 'relay stopped')
  }
}
