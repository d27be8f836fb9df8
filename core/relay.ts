import 'reflect-metadata'
import fs from 'node:fs'
import path from 'node:path'
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import { container as root, type DependencyContainer } from 'tsyringe'
import type { Logger } from 'pino'
import { Tokens } from './tokens.js'
import type { RelayConfig } from './config/schema.js'
import { createLogger } from './log.js'
import { createResolver } from './dns/resolver.js'
import { Spool } from './queue/spool.js'
import { SqliteQueue } from './queue/sqlite/queue.js'
import type { Queue } from './queue/types.js'
import { HookBus } from './hooks/bus.js'
import { loadPlugins } from './hooks/load-plugins.js'
import { DeliveryScheduler } from './delivery/scheduler.js'
import { SmtpListeners } from './smtp/listeners.js'
import type { ListenerInfo } from './smtp/session.js'

/** A running relay: listeners, queue, delivery. `start()` wires them; `stop()` ends them in order. */
export class Relay {
  private container: DependencyContainer | undefined
  /** Event-loop delay over the relay's life: disk and DNS work must never stall sessions. */
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 })
  listeners: ListenerInfo[] = []

  constructor(
    readonly config: RelayConfig,
    readonly log: Logger = createLogger(config.log.level),
  ) {}

  async start(): Promise<this> {
    const { config, log } = this
    fs.mkdirSync(config.dataDir, { recursive: true })
    const c = root.createChildContainer()
    this.container = c
    const resolver = createResolver(config)
    const spool = new Spool(config.dataDir)
    const queue: Queue = new SqliteQueue(path.join(config.dataDir, 'queue.sqlite'), spool)
    c.register(Tokens.Config, { useValue: config })
    c.register(Tokens.Logger, { useValue: log })
    c.register(Tokens.Resolver, { useValue: resolver })
    c.register(Tokens.Spool, { useValue: spool })
    c.register(Tokens.Queue, { useValue: queue })

    // Crash recovery: work a dead process held is due again; bodies it never queued are removed.
    const recovered = await queue.recover(Date.now())
    const known = new Set(await queue.bodyFiles())
    const swept = await spool.sweep((file) => known.has(file))
    if (recovered || swept) log.info({ recovered, swept }, 'recovered queue after an unclean stop')

    const plugins = await loadPlugins({ config, logger: log, resolver })
    c.register(Tokens.Hooks, { useValue: new HookBus(plugins, config.hookTimeout, log) })
    c.registerSingleton(Tokens.Delivery, DeliveryScheduler)
    c.registerSingleton(Tokens.Listeners, SmtpListeners)

    c.resolve<DeliveryScheduler>(Tokens.Delivery).start()
    this.listeners = await c.resolve<SmtpListeners>(Tokens.Listeners).start()
    this.loopDelay.enable()
    log.info({ hostname: config.hostname, dataDir: config.dataDir, plugins: plugins.map((p) => p.plugin.name) }, 'relay started')
    return this
  }

  /** Re-reads the TLS certificate files (SIGHUP); open sessions keep their connection. */
  reloadTls(): boolean {
    return this.container?.resolve<SmtpListeners>(Tokens.Listeners).reloadTls() ?? false
  }

  /** Stop accepting, let sessions and deliveries finish (up to shutdownTimeout), close the queue. */
  async stop(): Promise<void> {
    const c = this.container
    if (!c) return
    this.container = undefined
    // One deadline for both: sessions finish their messages, deliveries in flight finish;
    // whatever is still running then stays leased in the queue and is due at the next start.
    const deadline = Date.now() + this.config.shutdownTimeout
    await c.resolve<SmtpListeners>(Tokens.Listeners).stop()
    await c.resolve<DeliveryScheduler>(Tokens.Delivery).stop(Math.max(0, deadline - Date.now()))
    await c.resolve<HookBus>(Tokens.Hooks).close()
    await c.resolve<Queue>(Tokens.Queue).close()
    this.loopDelay.disable()
    // The histogram counts the 10 ms sampling interval itself; what is above it is lag.
    const ms = (ns: number) => Math.max(0, Math.round((ns - 10e6) / 1e4) / 100)
    const d = this.loopDelay
    this.log.info({ eventLoopDelayMs: { p50: ms(d.percentile(50)), p99: ms(d.percentile(99)), max: ms(d.max) } }, 'relay stopped')
  }
}
