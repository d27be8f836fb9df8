import 'reflect-metadata'
import fs from 'node:fs'
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import { container as root } from 'tsyringe'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { Tokens } from './tokens.js'
import type { RelayConfig } from './config/schema.js'
import { ConfigError } from './config/load.js'
import { createLogger } from './log.js'
import { createResolver } from './dns/resolver.js'
import { Spool } from './queue/spool.js'
import { openQueue } from './queue/open.js'
import type { Queue } from './queue/types.js'
import { QueueIntake } from './queue/intake.js'
import { NodeHeartbeat } from './queue/heartbeat.js'
import { HookBus } from './hooks/bus.js'
import { loadPlugins, type LoadedPlugin } from './hooks/load-plugins.js'
import type { Readiness, RelayOperations, ReloadResult } from './hooks/operator.js'
import { applyLifetime, DeliveryScheduler } from './delivery/scheduler.js'
import { SmtpListeners } from './smtp/listeners.js'
import { MaildropPickup } from './smtp/pickup.js'
import { recordOwnListeners } from './delivery/loop.js'
import type { ListenerInfo } from './smtp/session.js'
import { prepareReload, refusedReload } from './reload.js'
import { configFingerprint } from './workers/generation.js'
import { writeReloadResult } from './reload-result.js'
import { lockDataDir, removePidFile, writePidFile } from './pid-file.js'
import { privateDir } from './queue/private-files.js'
import { logDeliveryEvents } from './events/log.js'
import { relayOperations } from './relay-operations.js'
import { corePolicies, type CorePolicies } from './policies/index.js'
import { SmtpWorkerPool } from './workers/pool.js'
import { workerCount } from './workers/share.js'
import { loopDelayFigures, worstDelay, type LoopDelay } from './loop-delay.js'

/** The running services, as start() wired them (stop and reload use them). */
interface RunningParts {
  hooks: HookBus
  smtp: SmtpListeners
  delivery: DeliveryScheduler
  queue: Queue
  resolver: Resolver
}

/** A running relay: listeners, queue, delivery. `start()` wires them; `stop()` ends them in order. */
export class Relay {
  /** What start() made (the container stays inside start: it is the composition root, not a locator). */
  private parts: RunningParts | undefined
  /** Event-loop delay over the relay's life: disk and DNS work must never stall sessions. */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 })
  listeners: ListenerInfo[] = []
  private state: Readiness['state'] = 'stopped'
  /** Reloads run one at a time. */
  private reloading: Promise<unknown> = Promise.resolve()
  /** Reloads so far; each one's result goes to <dataDir>/reload-result.json with its number. */
  private reloads = 0
  /** What operations plugins (admin API, metrics, reputation) get as `ctx.relay`; set by start(). */
  private operations: RelayOperations | undefined
  /** The core's own policies (closed relay, sender ownership, ...), around the config's plugins on the bus. */
  private policies: CorePolicies | undefined
  /** Cluster mode: this node's liveness in the shared queue; dead nodes' leases are taken over. */
  private heartbeat: NodeHeartbeat | undefined
  /** `relay sendmail`'s messages: <dataDir>/maildrop/ picked up and injected. */
  private pickup: MaildropPickup | undefined
  /** The spool sweep after an unclean stop, running in the background after the start. */
  private sweeping: Promise<void> = Promise.resolve()
  /** This process's claim on config.dataDir: one relay per data directory. */
  private dataDirLock: { release(): void } | undefined
  /** Config `workers` > 1: the SMTP sessions run in these processes (core/workers). */
  private pool: SmtpWorkerPool | undefined

  constructor(
    /** The config generation in force: replaced (never changed) by a hot reload. */
    public config: RelayConfig,
    readonly log: Logger = createLogger(config.log),
  ) {
    this.loaded = config
  }

  /** The config as read from its file at the start or the last reload (SMTP workers check theirs against it). */
  loaded: RelayConfig

  async start(): Promise<this> {
    const { config, log } = this
    this.state = 'starting'
    try {
      privateDir(config.dataDir)
    } catch (err) {
      throw new ConfigError(config.configFile, [{ path: 'dataDir', message: `cannot create ${config.dataDir}: ${(err as Error).message}` }])
    }
    this.dataDirLock = lockDataDir(config.dataDir)
    // What a start that fails half-way undoes, last made first: plugins' teardowns run, workers
    // and listeners close, the queue and the data directory are let go (a retry in this process works).
    const undo: Array<() => unknown> = [() => this.dataDirLock?.release(), () => removePidFile(config.dataDir)]
    try {
      return await this.startParts(undo)
    } catch (err) {
      this.state = 'stopped'
      for (const step of undo.reverse()) {
        try {
          await step()
        } catch (e) {
          log.warn({ err: e }, 'cleaning up after a failed start')
        }
      }
      this.pool = this.pickup = this.heartbeat = this.parts = undefined
      throw err
    }
  }

  private async startParts(undo: Array<() => unknown>): Promise<this> {
    const { config, log } = this
    writePidFile(config.dataDir)
    // The composition root: the one place services are made and handed to each other.
    const c = root.createChildContainer()
    // Every failed lookup, whoever makes it (core, plugins, mailauth), becomes a `dnsFailed` event.
    let hooks: HookBus | undefined
    const resolver = createResolver(config, (type, code) => void hooks?.emit('dnsFailed', { type, code }))
    const spool = new Spool(config.dataDir)
    // SQLite in dataDir, or PostgreSQL shared by every node (bodies in the database: bodyFiles() is []).
    const queue: Queue = await openQueue(config, { spool, log })
    undo.push(() => queue.close())
    const intake = new QueueIntake(queue)
    c.register(Tokens.Config, { useValue: config })
    c.register(Tokens.Logger, { useValue: log })
    c.register(Tokens.Resolver, { useValue: resolver })
    c.register(Tokens.Spool, { useValue: spool })
    c.register(Tokens.Queue, { useValue: queue })
    c.register(Tokens.Intake, { useValue: intake })

    // Crash recovery: work a dead process held is due again. Bodies it never queued are removed
    // once the relay runs (sweepSpool): only files listed now, before any session can add one.
    const recovered = await queue.recover(Date.now())
    if (recovered) log.info({ recovered }, 'recovered deliveries the last run left unfinished (a crash, or a stop with deliveries in flight): due again')
    await applyLifetime(queue, config.delivery.maxQueueLifetime, log)
    const spoolFiles = await spool.list()

    // Plugins come up before the listeners (an admin plugin's /readyz says 'starting' until they are).
    let smtp: SmtpListeners | undefined
    let delivery: DeliveryScheduler | undefined
    this.operations = relayOperations({
      queue,
      log,
      hooks: () => hooks,
      config: () => this.config,
      wake: () => delivery?.notify(),
      reload: () => this.reload(),
      reloadTls: () => this.reloadTls(),
      readiness: () => this.readiness(),
      listeners: () => this.listeners,
      sessionCounts: () => this.pool?.sessionCounts() ?? smtp?.sessionCounts() ?? { connections: { mx: 0, submission: 0 }, active: { mx: 0, submission: 0 } },
      eventLoopDelay: () => worstDelay(this.eventLoopDelay(), this.pool?.eventLoopDelay()),
      inject: (message) => (smtp ? smtp.inject(message, { kind: 'api' }) : Promise.reject(Object.assign(new Error('4.3.0 The relay is not running yet'), { responseCode: 451 }))),
      tlsCertificates: () => smtp?.tlsCertificates() ?? [],
      deliveryStatus: () => sumStatus(delivery?.status(), this.pool?.deliveryStatus()),
    })
    this.policies = corePolicies({ config: () => this.config, queue, log, emit: (e, d) => void (hooks?.has(e) && hooks.emit(e, d)) })
    const plugins = await this.loadPlugins(config, resolver, 'start')
    hooks = new HookBus(plugins, config.hookTimeout, log)
    const bus = hooks
    undo.push(() => bus.close())
    logDeliveryEvents(hooks, log)
    c.register(Tokens.Hooks, { useValue: hooks })
    c.registerSingleton(Tokens.Delivery, DeliveryScheduler)
    c.registerSingleton(Tokens.Listeners, SmtpListeners)

    delivery = c.resolve<DeliveryScheduler>(Tokens.Delivery)
    const scheduler = delivery
    delivery.onTakeover = (recipients) => void bus.emit('leaseTakenOver', { recipients })
    intake.subscribe(delivery)
    if (config.queue.driver === 'postgres') {
      const scheduler = delivery
      const heartbeat = (this.heartbeat = new NodeHeartbeat(queue, config.queue.heartbeat, log, () => scheduler.notify()))
      undo.push(() => heartbeat.stop())
      await heartbeat.start()
    }
    delivery.start()
    undo.push(() => scheduler.stop(0))
    smtp = c.resolve<SmtpListeners>(Tokens.Listeners)
    this.parts = { hooks, smtp, delivery, queue, resolver }
    const workers = workerCount(config)
    if (workers > 1) {
      // The sessions run in worker processes; this one keeps the queue, delivery and operations.
      const pool = (this.pool = new SmtpWorkerPool({
        config: () => this.config, loaded: () => this.loaded, log, count: workers, queue, hooks,
        ops: { wake: () => scheduler.notify(), reload: () => this.reload(), reloadTls: () => this.reloadTls() },
        routes: scheduler.routeCounts(),
        jobs: { admitWorkerJobs: (domains) => scheduler.admitWorkerJobs(domains), releaseWorkerJob: (domain) => scheduler.releaseWorkerJob(domain) },
      }))
      undo.push(() => pool.stop(Date.now() + 5000))
      this.listeners = await pool.start()
    } else {
      const listeners = smtp
      undo.push(() => listeners.stop())
      this.listeners = await smtp.start()
    }
    const listeners = smtp
    this.pickup = new MaildropPickup({ config: () => this.config, log, intake, inject: (m, origin) => listeners.inject(m, origin), hooks })
    this.pickup.start()
    // Delivery never connects to these (mail loops): the real ports, also for a configured port 0.
    recordOwnListeners(config, this.listeners)
    this.loopDelay.enable()
    this.state = 'running'
    // After the start: on a large spool the listing against the queue takes a while (0.3 s at 50,000 files).
    this.sweeping = sweepSpool(spool, queue, spoolFiles, log)
    log.info({ hostname: config.hostname, dataDir: config.dataDir, plugins: plugins.map((p) => p.plugin.name), workers }, 'relay started')
    return this
  }

  /**
   * One generation of plugins: the core's own policies around the config's plugins, set up with
   * the operator API. At reload, plugins marked keepOnReload carry over from `previous`.
   */
  loadPlugins(config: RelayConfig, resolver: Resolver, mode: 'start' | 'reload', previous?: LoadedPlugin[]): Promise<LoadedPlugin[]> {
    const builtins = this.policies && { first: this.policies.first, last: this.policies.last }
    const process = { role: workerCount(config) > 1 ? ('primary' as const) : ('single' as const) }
    return loadPlugins({ config, logger: this.log, resolver, mode, relay: this.operations, previous, builtins, process })
  }

  /** Event-loop delay since start, in ms above the 10 ms sampling interval. */
  eventLoopDelay(): LoopDelay {
    return loopDelayFigures(this.loopDelay)
  }

  /** Scans the queue now (SIGUSR2: a CLI verb changed the queue on disk; `postqueue -f`'s trigger). */
  wake(): void {
    this.parts?.delivery.notify()
  }

  /** Re-reads the TLS certificate files (SIGHUP); open sessions keep their connection. */
  reloadTls(): boolean {
    this.pool?.reloadTls()
    return this.parts?.smtp.reloadTls() ?? false
  }

  /** Ready: queue open and listeners up; not while starting or stopping (GET /readyz). */
  readiness(): Readiness {
    const { state } = this
    if (state === 'running' && this.parts?.queue.reachable?.() === false) return { ready: false, state, reason: 'the queue database is not reachable' }
    // Under workers the listeners are the workers': none ready (all died, their replacements failing) is none up.
    if (state === 'running' && this.pool && this.pool.readyCount() === 0) return { ready: false, state, reason: 'no SMTP worker is running (see the log for why they cannot start)' }
    if (state === 'running' && this.listeners.length) return { ready: true, state }
    return { ready: false, state, reason: state === 'running' ? 'no listener is up' : `the relay is ${state}` }
  }

  /**
   * Hot reload (SIGHUP, `relay reload`, POST /api/reload): reads the config file again and applies
   * it without dropping sessions or queued mail; a config that fails validation is refused and the
   * running one stays (core/reload.ts). Every result also goes to <dataDir>/reload-result.json.
   */
  reload(): Promise<ReloadResult> {
    const run = async (): Promise<ReloadResult> => {
      const started = Date.now()
      const parts = this.parts
      let result: ReloadResult
      if (!parts || this.state !== 'running') result = { ok: false, error: `cannot reload: the relay is ${this.state}` }
      else {
        const prepared = await prepareReload(this, this.log, parts)
        // Under workers each SMTP worker prepares too; the reload is taken by every process or by none.
        const workers = 'commit' in prepared ? await this.pool?.prepareReload(configFingerprint(prepared.next)) : undefined
        if (!('commit' in prepared)) result = prepared
        else if (workers?.error) {
          this.pool?.abortReload(workers.seq)
          await prepared.abort()
          result = refusedReload(this.log, `an SMTP worker refused it: ${workers.error}`)
        } else {
          await prepared.commit()
          if (workers) this.pool?.commitReload(workers.seq, workers.prepared)
          result = prepared.result
        }
      }
      // Metrics count reloads by result: a refused config is what an operator must hear of.
      void parts?.hooks.emit('reloaded', result.ok ? { ok: true, changed: result.changed } : { ok: false, error: result.error })
      // For `relay reload` (core/cli/reload.ts), whichever way this reload was asked for.
      try {
        writeReloadResult(this.config.dataDir, ++this.reloads, result, { started, configFile: this.config.configFile })
      } catch (err) {
        this.log.warn({ err }, 'cannot write the reload result for `relay reload`')
      }
      return result
    }
    const result = this.reloading.then(run, run)
    this.reloading = result
    return result
  }

  /** Stop accepting, let sessions and deliveries finish (up to shutdownTimeout), close the queue. */
  async stop(): Promise<void> {
    const parts = this.parts
    if (!parts) return
    this.parts = undefined
    this.state = 'stopping'
    // One deadline for both: sessions finish their messages, deliveries in flight finish;
    // whatever is still running then stays leased in the queue and is due at the next start.
    const deadline = Date.now() + this.config.shutdownTimeout
    await this.pickup?.stop()
    this.pickup = undefined
    // The workers' loops serve the sessions: their worst delay is the relay's, as the admin API says.
    const workersDelay = this.pool?.eventLoopDelay()
    await this.pool?.stop(deadline)
    this.pool = undefined
    await parts.smtp.stop()
    await parts.delivery.stop(Math.max(0, deadline - Date.now()))
    // Beats while deliveries drain; then leaves the cluster record, what is still leased due at once for the other nodes.
    await this.heartbeat?.stop()
    this.heartbeat = undefined
    // Plugins after the listeners and deliveries: an admin plugin's /readyz says 'stopping' while they drain.
    await parts.hooks.close(Math.max(0, deadline - Date.now()))
    await this.sweeping
    await parts.queue.close()
    removePidFile(this.config.dataDir)
    this.dataDirLock?.release()
    this.state = 'stopped'
    const eventLoopDelayMs = worstDelay(this.eventLoopDelay(), workersDelay)
    this.loopDelay.disable()
    this.log.info({ eventLoopDelayMs }, 'relay stopped')
  }
}

/** Removes the body files of `files` that the queue does not know (a crash between spool write and queue write). */
async function sweepSpool(spool: Spool, queue: Queue, files: string[], log: Logger): Promise<void> {
  if (!files.length) return
  try {
    const known = new Set(await queue.bodyFiles())
    const swept = await spool.sweep(files, (file) => known.has(file))
    if (swept) log.info({ swept }, 'removed spool files no queued message refers to (an unclean stop)')
  } catch (err) {
    log.warn({ err }, 'spool sweep failed; it runs again at the next start')
  }
}

/** The primary's deliveries and its SMTP workers' together. */
function sumStatus(a?: { openConnections: number; pausedDestinations: number }, b?: { openConnections: number; pausedDestinations: number }) {
  return { openConnections: (a?.openConnections ?? 0) + (b?.openConnections ?? 0), pausedDestinations: (a?.pausedDestinations ?? 0) + (b?.pausedDestinations ?? 0) }
}
