// One SMTP worker process (config `workers` > 1): the listeners and the session hooks, nothing else.
// The ports are shared through node:cluster; each message goes to the primary's queue intake, and
// the 250 is sent only once the primary says it is durable. The primary starts, reloads and stops
// this process; if the primary dies, this process stops at once (open transactions get 451).
import 'reflect-metadata'
import cluster from 'node:cluster'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { container as root } from 'tsyringe'
import type { Logger } from 'pino'
import { Tokens } from '../tokens.js'
import type { RelayConfig } from '../config/schema.js'
import { ConfigError } from '../config/load.js'
import { createLogger, flushLogs } from '../log.js'
import { createResolver } from '../dns/resolver.js'
import { Spool } from '../queue/spool.js'
import type { Queue } from '../queue/types.js'
import { QueueIntake } from '../queue/intake.js'
import { openLocalBody } from '../queue/body.js'
import { DeliveryScheduler } from '../delivery/scheduler.js'
import { recordOwnListeners } from '../delivery/loop.js'
import type { Admission, Slot } from '../delivery/throttle.js'
import { HookBus } from '../hooks/bus.js'
import { runsInWorkers, loadPlugins } from '../hooks/load-plugins.js'
import type { EventName } from '../hooks/names.js'
import type { ReloadResult } from '../hooks/operator.js'
import { SmtpListeners } from '../smtp/listeners.js'
import { prepareReload, type PreparedReload } from '../reload.js'
import { relayOperations } from '../relay-operations.js'
import { corePolicies } from '../policies/index.js'
import { Calls, isRelayMessage, plain, type PrimaryMessage, type WorkerMessage } from './ipc.js'
import { forwardedEvents, workerShare } from './share.js'
import { loopDelayFigures } from '../loop-delay.js'
import { errorText } from '../error-text.js'
import { asPrimaryRuns, configFingerprint } from './generation.js'

/**
 * Sends to the primary; false only when the channel is closed. process.send's own false means the
 * message waits behind 128 kB already queued (a large header section): it is still delivered.
 */
const send = (m: WorkerMessage): boolean => {
  if (!process.connected) return false
  process.send!(m)
  return true
}

/** Runs until the primary says stop (or goes away). */
export async function runSmtpWorker(config: RelayConfig, workers: number): Promise<void> {
  const log: Logger = createLogger(config.log).child({ worker: cluster.worker?.id })
  const calls = new Calls(send)
  const stop = stopper(log, calls)
  stop.shutdownTimeout = config.shutdownTimeout
  process.on('message', (m: unknown) => {
    if (!isRelayMessage(m)) return
    const msg = m as PrimaryMessage
    if (msg.relay === 'result') calls.settle(msg)
    else if (msg.relay === 'reload') void prepare(msg.seq, msg.fingerprint)
    else if (msg.relay === 'reload-commit') void commit(msg.seq, msg.events)
    else if (msg.relay === 'reload-abort') void abort(msg.seq)
    else if (msg.relay === 'reloadTls') parts?.smtp.reloadTls()
    else if (msg.relay === 'stop') void stop.run(0)
  })
  // The primary is gone (kill -9 included): nothing here can reach the queue any more.
  process.on('disconnect', () => void stop.run(1))
  process.on('SIGTERM', () => void stop.run(0))
  process.on('SIGINT', () => void stop.run(0))
  process.on('SIGHUP', () => undefined) // the primary reloads every worker
  process.on('uncaughtException', (err) => log.fatal({ err }, 'uncaught exception'))
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled promise rejection'))

  let hooks: HookBus | undefined
  let parts: { smtp: SmtpListeners; hooks: HookBus; delivery: DeliveryScheduler } | undefined
  const emit = (e: EventName, d: unknown) => void (hooks?.has(e) && hooks.emit(e, d as never))
  const resolver = createResolver(config, (type, code) => emit('dnsFailed', { type, code }))
  // Every queue call the SMTP side, delivery and plugins make runs on the primary's queue; a body
  // is read here (delivery of new mail reads the copy this process received).
  const queue = new Proxy({} as Queue, {
    get: (_, method) => (method === 'openBody' ? openLocalBody : typeof method === 'string' && method !== 'then' ? (...args: unknown[]) => calls.call('queue', method, args) : undefined),
  })
  const intake = new QueueIntake(queue)
  // Enabled once the worker runs (as the primary's): loading plugins at start is no session's delay.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  let running = config
  let smtp: SmtpListeners | undefined
  const operations = relayOperations({
    queue,
    log,
    hooks: () => hooks,
    config: () => running,
    wake: () => void calls.call('ops', 'wake', []).catch(() => undefined),
    reload: () => calls.call<ReloadResult>('ops', 'reload', []),
    reloadTls: () => (void calls.call('ops', 'reloadTls', []).catch(() => undefined), true),
    readiness: () => (smtp ? { ready: true, state: 'running' } : { ready: false, state: 'starting', reason: 'the relay is starting' }),
    listeners: () => running.listen.map((l) => ({ host: l.host, port: l.port, role: l.role })),
    sessionCounts: () => smtp?.sessionCounts() ?? { connections: { mx: 0, submission: 0 }, active: { mx: 0, submission: 0 } },
    eventLoopDelay: () => loopDelayFigures(loopDelay),
    inject: (message) => smtp!.inject(message, { kind: 'api' }),
    tlsCertificates: () => smtp?.tlsCertificates() ?? [],
    deliveryStatus: () => parts?.delivery.status() ?? { openConnections: 0, pausedDestinations: 0 },
  })
  const policies = corePolicies({ config: () => running, queue, log, emit })
  const load = (cfg: RelayConfig, mode: 'start' | 'reload', previous?: HookBus['plugins']) =>
    loadPlugins({
      config: cfg, logger: log, resolver, mode, relay: operations, previous, builtins: { first: policies.first, last: policies.last },
      process: { role: 'worker', callPrimary: (at, method, args) => calls.call(`plugin:${at}`, method, args) },
      only: runsInWorkers,
    })
  const sendEvent = (event: EventName, data: unknown) => void send({ relay: 'event', name: event, data: plain(data) })

  try {
    // What the primary runs, not an edit of the file that no reload applied (generation.ts).
    running = asPrimaryRuns(config)
    const effective = workerShare(running, workers)
    const plugins = await load(effective, 'start')
    hooks = new HookBus(plugins, running.hookTimeout, log)
    hooks.forward = { events: forwardedEvents(), send: sendEvent }
    const c = root.createChildContainer()
    c.register(Tokens.Config, { useValue: effective })
    c.register(Tokens.Logger, { useValue: log })
    c.register(Tokens.Resolver, { useValue: resolver })
    c.register(Tokens.Queue, { useValue: queue })
    c.register(Tokens.Spool, { useValue: new Spool(running.dataDir) })
    c.register(Tokens.Intake, { useValue: intake })
    c.register(Tokens.Hooks, { useValue: hooks })
    c.registerSingleton(Tokens.Listeners, SmtpListeners)
    c.registerSingleton(Tokens.Delivery, DeliveryScheduler)
    // New mail is delivered here, by the process that received it (no copy of it to the primary's
    // delivery); what is left due in the queue (retries, throttled destinations) the primary sends.
    const delivery = c.resolve<DeliveryScheduler>(Tokens.Delivery)
    intake.subscribe(delivery)
    delivery.startFreshOnly({
      wake: coalesced(() => void calls.call('ops', 'wake', []).catch(() => undefined)),
      routes: {
        admit: (name, limits) => calls.call<Admission>('throttle', 'admitRoute', [name, limits]),
        release: (slot: Slot) => calls.tell('throttle', 'release', [slot]),
      },
    })
    smtp = c.resolve<SmtpListeners>(Tokens.Listeners)
    smtp.shareClientCounts({ admit: (counts, release = []) => calls.call<number>('clients', 'admit', [counts, release]), release: (...keys) => calls.tell('clients', 'release', keys), processes: workers })
    parts = { smtp, hooks, delivery }
    stop.parts = parts
    const listeners = await smtp.start()
    recordOwnListeners(effective, listeners)
    // Its 'listening on' lines are out before the primary says 'relay started' (log readers wait for both).
    await flushLogs()
    send({ relay: 'ready', listeners })
    loopDelay.enable()
  } catch (err) {
    log.debug({ err }, 'SMTP worker cannot start: details')
    // A config problem's reasons are its issues: the first line of its message only says where.
    const issues = err instanceof ConfigError ? err.issues.map(({ path, message }) => ({ path, message })) : undefined
    log.fatal({ error: errorText(err), issues, code: (err as NodeJS.ErrnoException)?.code }, `SMTP worker cannot start${issues?.[0] ? `: ${issues[0].path}: ${issues[0].message}` : ''}`)
    // A config problem (a plugin's setup failing here) stays one for `relay start`: exit 2, as without workers.
    const config = err instanceof ConfigError ? { file: err.file, issues: err.issues } : undefined
    send({ relay: 'failed', error: errorText(err), code: (err as NodeJS.ErrnoException)?.code, config })
    await flushLogs()
    process.exit(1)
  }
  // The primary sums these for metrics and the admin API.
  const counts = setInterval(() => send({ relay: 'counts', counts: { ...parts!.smtp.sessionCounts(), eventLoopDelay: loopDelayFigures(loopDelay), delivery: parts!.delivery.status() } }), 1000)
  counts.unref()
  stop.onStop = () => clearInterval(counts)

  // A reload in two phases (pool.ts): set the new generation up, then swap it in or let it go as the primary says.
  let pending: { seq: number; prepared: PreparedReload; relayLike: { config: RelayConfig } } | undefined
  // The newest reload the primary gave up on while this worker was still preparing it.
  let abandoned = 0
  async function prepare(seq: number, expected: string): Promise<void> {
    const p = parts
    if (!p) return void send({ relay: 'prepared', seq, ok: false, error: 'an SMTP worker is still starting' })
    await abort(pending?.seq)
    const relayLike = {
      config: running,
      loadPlugins: (cfg: RelayConfig, _r: unknown, mode: 'reload', previous: HookBus['plugins']) => load(workerShare(cfg, workers), mode, previous),
    }
    // The file read here must be the one the primary read: an edit between the two reads would
    // leave the processes on different configs.
    const sameAsPrimary = (next: RelayConfig) => {
      if (configFingerprint(next) !== expected) throw new ConfigError(next.configFile, [{ path: '(config file)', message: 'the file changed while the reload ran (an SMTP worker read another config than the primary); run `relay reload` again' }])
    }
    const result = await prepareReload(relayLike, log, { hooks: p.hooks, smtp: p.smtp, delivery: p.delivery, resolver }, sameAsPrimary)
    if ('commit' in result && seq <= abandoned) return void (await result.abort())
    if ('commit' in result) pending = { seq, prepared: result, relayLike }
    send({ relay: 'prepared', seq, ok: 'commit' in result, error: 'commit' in result ? undefined : result.error })
  }
  async function commit(seq: number, events: string[]): Promise<void> {
    const p = parts
    const mine = pending
    if (!p || mine?.seq !== seq) return
    pending = undefined
    await mine.prepared.commit()
    running = mine.relayLike.config
    p.hooks.forward = { events: new Set(events), send: sendEvent }
  }
  async function abort(seq: number | undefined): Promise<void> {
    const mine = pending
    if (seq === undefined) return
    if (mine?.seq !== seq) return void (abandoned = Math.max(abandoned, seq))
    pending = undefined
    await mine.prepared.abort()
  }
}

/** Stops once: listeners closed (open sessions finish), plugins torn down, then exit. */
function stopper(log: Logger, calls: Calls) {
  let stopping = false
  const s = {
    parts: undefined as { smtp: SmtpListeners; hooks: HookBus; delivery: DeliveryScheduler } | undefined,
    onStop: undefined as (() => void) | undefined,
    shutdownTimeout: 30_000,
    async run(code: number): Promise<void> {
      if (stopping) return
      stopping = true
      s.onStop?.()
      if (code) {
        log.error('the primary process is gone: this SMTP worker stops')
        calls.failAll()
        // No transaction can finish without the queue: open sessions are not waited for.
        setTimeout(() => void flushLogs().then(() => process.exit(code)), 1000).unref()
      }
      try {
        const deadline = Date.now() + s.shutdownTimeout
        await s.parts?.smtp.stop()
        // Deliveries in flight finish (their results go to the primary's queue, open until this exits).
        await s.parts?.delivery.stop(code ? 0 : Math.max(0, deadline - Date.now()))
        await s.parts?.hooks.close(Math.max(0, deadline - Date.now()))
      } catch (err) {
        log.error({ err }, 'SMTP worker stop failed')
      }
      await flushLogs()
      process.exit(code)
    },
  }
  return s
}

/** Calls `fn` once for any number of calls in the same turn of the event loop. */
function coalesced(fn: () => void): () => void {
  let pending = false
  return () => {
    if (pending) return
    pending = true
    setImmediate(() => {
      pending = false
      fn()
    })
  }
}
