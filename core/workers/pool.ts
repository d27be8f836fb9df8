// The primary's side of config `workers`: forks the SMTP worker processes (node:cluster shares the
// listening ports among them), answers their calls (queue intake and reads, operator verbs, plugin
// handlers), hears their events for the plugins that run only here, sums their session counts,
// reloads and stops them, and replaces one that dies.
import cluster, { type Worker } from 'node:cluster'
import { fileURLToPath } from 'node:url'
import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import { ConfigError } from '../config/load.js'
import type { Queue } from '../queue/types.js'
import type { HookBus } from '../hooks/bus.js'
import { handlePluginCall, runsInWorkers } from '../hooks/load-plugins.js'
import type { EventName } from '../hooks/names.js'
import type { ListenerInfo } from '../smtp/session.js'
import type { ReloadResult, SessionCounts } from '../hooks/operator.js'
import { generationEnv } from './generation.js'
import { isRelayMessage, plain, reviveBuffers, sendTo, serializeError, type WorkerCounts, type WorkerMessage } from './ipc.js'
import { primaryOnlyEvents } from './share.js'
import { ClientCounts } from './client-counts.js'
import { worstDelay, type LoopDelay } from '../loop-delay.js'
import type { RemoteRouteCounts, Slot } from '../delivery/throttle.js'
import type { NewMessage, RecipientResult } from '../queue/types.js'

export interface PoolEnv {
  config: () => RelayConfig
  /** The config as read from its file at the last start or reload (config() keeps restart-only values). */
  loaded: () => RelayConfig
  log: Logger
  count: number
  queue: Queue
  hooks: HookBus
  /** Operator verbs a worker may ask for. */
  ops: { wake(): void; reload(): Promise<ReloadResult>; reloadTls(): boolean }
  /** The primary's route caps, which workers' deliveries count against. */
  routes: RemoteRouteCounts
  /** The primary's delivery concurrency, which workers' deliveries count against (DeliveryScheduler). */
  jobs: { admitWorkerJobs(domains: string[]): boolean; releaseWorkerJob(domain: string): void }
}

/** What a worker holds in the primary, given back when it dies. */
interface Held {
  /** Messages it took leased at intake and is delivering, by queue id: jobs (domains) not completed yet. */
  leases: Map<string, number>
  /** Route-cap slots it was granted and has not released. */
  slots: Map<string, Slot>
  /** The job (message and domain) of each recipient row it was admitted to deliver and has not completed. */
  jobs: Map<number, { message: string; domain: string }>
}

const WORKER_FORBIDDEN = new Set(['close', 'recover', 'heartbeat', 'leave'])

/** How long a worker may take to start (load plugins, bind) before the start fails. */
const START_TIMEOUT = 60_000

export class SmtpWorkerPool {
  private readonly workers = new Set<Worker>()
  /** Those that said they are ready (their plugins set up, listening): only they take part in a reload. */
  private readonly ready = new Set<Worker>()
  private readonly counts = new Map<number, WorkerCounts>()
  /** Sessions of workers that are gone, so the totals never go down (Prometheus counters). */
  private readonly gone = { mx: 0, submission: 0 }
  private stopping = false
  private restarts: number[] = []
  private reloadSeq = 0
  private readonly reloads = new Map<number, { left: Set<number>; prepared: Set<number>; errors: string[]; done: () => void }>()
  /** smtp.maxConnectionsPerClient and smtp.maxClients for the whole relay. */
  private readonly clients = new ClientCounts()
  private readonly held = new Map<number, Held>()

  constructor(private readonly env: PoolEnv) {}

  /** Forks every worker; resolves with the listeners once all of them accept connections. */
  async start(): Promise<ListenerInfo[]> {
    const { config } = this.env
    const main = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../cli/main.ts' : '../cli/main.js', import.meta.url))
    const cfg = config()
    // Round-robin (node:cluster's default on Linux): this process accepts and hands each connection
    // to the next worker. Letting workers accept themselves (SCHED_NONE) costs less here, but the
    // kernel then gives runs of connections to one worker, and the session limits split per worker
    // (smtp.maxClients) would refuse clients while other workers sit idle.
    cluster.schedulingPolicy = cluster.SCHED_RR
    cluster.setupPrimary({
      exec: main,
      args: ['start', ...(cfg.configFile ? ['--config', cfg.configFile] : [])],
      // Under tsx (tests, `relay` from a checkout) the worker needs the same loader.
      execArgv: import.meta.url.endsWith('.ts') && !process.execArgv.some((a) => a.includes('tsx')) ? [...process.execArgv, '--import', 'tsx'] : process.execArgv,
      serialization: 'advanced',
    })
    const started = await Promise.all(Array.from({ length: this.env.count }, () => this.fork()))
    return started[0]!
  }

  private fork(): Promise<ListenerInfo[]> {
    // It runs what this process runs: the config as last loaded, with the settings kept until a restart (generation.ts).
    const worker = cluster.fork({ RELAY_FORWARD_EVENTS: primaryOnlyEvents(this.env.hooks).join(','), ...generationEnv(this.env.loaded(), this.env.config()) })
    this.workers.add(worker)
    return new Promise<ListenerInfo[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`an SMTP worker did not start within ${START_TIMEOUT / 1000} s`)), START_TIMEOUT)
      worker.on('message', (m: unknown) => {
        if (!isRelayMessage(m)) return
        const msg = m as WorkerMessage
        if (msg.relay === 'ready') {
          clearTimeout(timer)
          this.ready.add(worker)
          resolve(msg.listeners)
        } else if (msg.relay === 'failed') {
          clearTimeout(timer)
          reject(msg.config ? new ConfigError(msg.config.file, msg.config.issues) : Object.assign(new Error(msg.error), { code: msg.code }))
        } else this.onMessage(worker, msg)
      })
      worker.on('exit', (code, signal) => {
        clearTimeout(timer)
        reject(new Error(`an SMTP worker exited while starting (${signal ?? `exit code ${code}`})`))
        this.onExit(worker, code, signal)
      })
    })
  }

  private onMessage(worker: Worker, m: WorkerMessage): void {
    if (m.relay === 'call') {
      const fail = (err: unknown) => sendTo(worker, { relay: 'result', id: m.id, ok: false, error: serializeError(err) })
      // A plugin handler's answer travels as its arguments do (plain data). One the channel cannot
      // carry is refused by name: unanswered, the worker's call waited out its hook's timeout.
      const answer = (value: unknown) => (m.target.startsWith('plugin:') ? plain(value) : value)
      const reply = (p: Promise<unknown>) =>
        p.then(
          (value) => {
            if (sendTo(worker, { relay: 'result', id: m.id, ok: true, value: answer(value) }) || !worker.isConnected()) return
            fail(new Error(`the answer of ${m.target.slice('plugin:'.length) || m.target} to '${m.method}' cannot be sent to the SMTP worker: not plain data`))
          },
          fail,
        )
      if (m.target === 'clients' && m.method === 'admit') {
        // At every connect: answered at once.
        sendTo(worker, { relay: 'result', id: m.id, ok: true, value: this.clients.admit(worker.id, m.args[0] as [string, number][], (m.args[1] as string[] | undefined) ?? []) })
        return
      }
      void reply(Promise.resolve().then(() => this.dispatch(worker.id, m.target, m.method, reviveBuffers(m.args))))
    } else if (m.relay === 'tell') {
      if (m.target === 'clients' && m.method === 'release') for (const key of m.args as string[]) this.clients.release(worker.id, key)
      if (m.target === 'throttle' && m.method === 'release') {
        const slot = m.args[0] as Slot
        if (this.heldBy(worker.id).slots.delete(slot.token)) this.env.routes.release(slot)
      }
    } else if (m.relay === 'event') {
      // Plugins with session hooks heard it in the worker; the others (and the event log) hear it here.
      void this.env.hooks.emit(m.name as EventName, m.data as never, (p) => !runsInWorkers(p.plugin))
    } else if (m.relay === 'counts') this.counts.set(worker.id, m.counts)
    else if (m.relay === 'prepared') {
      const r = this.reloads.get(m.seq)
      if (!r) return
      if (m.ok) r.prepared.add(worker.id)
      else if (m.error) r.errors.push(m.error)
      r.left.delete(worker.id)
      if (!r.left.size || !m.ok) r.done()
    }
  }

  private heldBy(worker: number): Held {
    let h = this.held.get(worker)
    if (!h) this.held.set(worker, (h = { leases: new Map(), slots: new Map(), jobs: new Map() }))
    return h
  }

  private async dispatch(worker: number, target: string, method: string, args: unknown[]): Promise<unknown> {
    const { queue, ops, hooks, routes, jobs } = this.env
    const held = this.heldBy(worker)
    if (target === 'queue' && method === 'enqueue' && args[1] !== undefined) {
      // New mail the worker delivers itself: leased to it until it completes (or dies: onExit), when
      // the relay has room for it (delivery.concurrency counts every process's jobs); else it is
      // due in the queue and the worker is told so by no row ids.
      const message = args[0] as NewMessage
      const domains = [...new Set(message.recipients.map((r) => r.domain))]
      if (!jobs.admitWorkerJobs(domains)) {
        await queue.enqueue(message)
        ops.wake()
        return []
      }
      let rowIds: number[]
      try {
        rowIds = await queue.enqueue(message, args[1] as number)
      } catch (err) {
        for (const d of domains) jobs.releaseWorkerJob(d)
        throw err
      }
      rowIds.forEach((id, i) => held.jobs.set(id, { message: message.id, domain: message.recipients[i]!.domain }))
      if ([...this.workers].some((w) => w.id === worker)) held.leases.set(message.id, domains.length)
      else this.giveBackLeases(worker, [message.id]) // it died while the write ran: nobody delivers it
      return rowIds
    }
    if (target === 'queue' && method === 'complete') {
      const id = args[0] as string
      const left = (held.leases.get(id) ?? 1) - 1
      if (left > 0) held.leases.set(id, left)
      else held.leases.delete(id)
      // The job's slot, once (a write tried again names the same rows).
      const results = args[1] as RecipientResult[]
      const job = results.map((r) => held.jobs.get(r.rowId)).find((j) => j !== undefined)
      for (const r of results) held.jobs.delete(r.rowId)
      if (job) jobs.releaseWorkerJob(job.domain)
      // A worker's deferral is the primary's to retry: its scan may sleep up to 30 s, so it looks
      // again now and then sleeps until the deferral's nextAttemptAt.
      const done = await queue.complete(...(args as Parameters<Queue['complete']>))
      if ((args[1] as RecipientResult[]).some((r) => r.state === 'deferred')) ops.wake()
      return done
    }
    if (target === 'throttle' && method === 'admitRoute') {
      const a = await routes.admit(args[0] as string, args[1] as never)
      if (a.ok) held.slots.set(a.slot.token, a.slot)
      return a
    }
    if (target === 'queue') {
      const fn = (queue as unknown as Record<string, unknown>)[method]
      // Not what only the primary may do: close the queue, free every lease, beat for the node.
      if (typeof fn !== 'function' || WORKER_FORBIDDEN.has(method)) throw new Error(`queue has no operation '${method}' for an SMTP worker`)
      return (fn as (...a: unknown[]) => unknown).apply(queue, args)
    }
    if (target === 'ops' && (method === 'wake' || method === 'reload' || method === 'reloadTls')) return ops[method]()
    if (target.startsWith('plugin:')) return handlePluginCall(hooks.plugins, target.slice('plugin:'.length), method, args)
    throw new Error(`unknown call ${target}.${method}`)
  }

  private onExit(worker: Worker, code: number | null, signal: string | null): void {
    this.workers.delete(worker)
    this.ready.delete(worker)
    this.clients.forget(worker.id)
    this.giveBack(worker.id)
    const last = this.counts.get(worker.id)
    if (last) {
      this.gone.mx += last.connections.mx
      this.gone.submission += last.connections.submission
      this.counts.delete(worker.id)
    }
    for (const [seq, r] of this.reloads) if (r.left.delete(worker.id) && !r.left.size) this.reloads.get(seq)?.done()
    if (this.stopping) return
    // A worker that died (a crash, kill -9): its open transactions got no 250 and will be retried by
    // their clients. Start another, unless workers keep dying (then the log says so loudly).
    const now = Date.now()
    this.restarts = [...this.restarts.filter((t) => now - t < 60_000), now]
    this.env.log.error({ worker: worker.id, code, signal, restartsInLastMinute: this.restarts.length }, 'an SMTP worker exited: starting another')
    const delay = this.restarts.length > 5 ? 5000 : 200
    setTimeout(() => {
      if (!this.stopping) this.fork().catch((err) => this.env.log.error({ err }, 'a replacement SMTP worker failed to start'))
    }, delay).unref()
  }

  /** A dead worker's deliveries are due again at once (not after their lease), its route slots free. */
  private giveBack(worker: number): void {
    const held = this.held.get(worker)
    this.held.delete(worker)
    if (!held) return
    for (const slot of held.slots.values()) this.env.routes.release(slot)
    this.giveBackLeases(worker, [...held.leases.keys()])
  }

  private giveBackLeases(worker: number, ids: string[]): void {
    // One slot per job: its rows share the message and the domain.
    const jobs = new Map([...(this.held.get(worker)?.jobs.values() ?? [])].map((j) => [`${j.message}\u0000${j.domain}`, j.domain]))
    for (const domain of jobs.values()) this.env.jobs.releaseWorkerJob(domain)
    this.held.delete(worker)
    if (!ids.length) return
    this.env.queue.recover(Date.now(), ids).then(
      (n) => {
        if (n) this.env.log.warn({ worker, recipients: n }, "an SMTP worker died while delivering: its recipients are due again")
        this.env.ops.wake()
      },
      (err) => this.env.log.error({ err }, 'cannot free the deliveries of an SMTP worker that died; they are due when their lease ends'),
    )
  }

  /** Outbound connections and paused destinations of the workers' deliveries. */
  deliveryStatus(): { openConnections: number; pausedDestinations: number } {
    let openConnections = 0
    let pausedDestinations = 0
    for (const c of this.counts.values()) {
      openConnections += c.delivery?.openConnections ?? 0
      pausedDestinations += c.delivery?.pausedDestinations ?? 0
    }
    return { openConnections, pausedDestinations }
  }

  /** Sessions of every worker (connections since start include workers that are gone). */
  sessionCounts(): SessionCounts {
    const connections = { ...this.gone }
    const active = { mx: 0, submission: 0 }
    for (const c of this.counts.values()) {
      connections.mx += c.connections.mx
      connections.submission += c.connections.submission
      active.mx += c.active.mx
      active.submission += c.active.submission
    }
    return { connections, active }
  }

  /** The worst event-loop delay among the workers (their loops serve the sessions). */
  eventLoopDelay(): LoopDelay | undefined {
    let worst: LoopDelay | undefined
    for (const c of this.counts.values()) worst = worstDelay(c.eventLoopDelay, worst)
    return worst
  }

  /**
   * Phase one of a reload under workers, once the primary has prepared its own: every worker reads
   * the file, checks that it read what the primary read (`fingerprint`), and sets its new plugins up,
   * swapping nothing. Resolves with the first refusal (or a worker that did not answer in time):
   * then the primary aborts, and so does every worker, and the running config stays in all of them.
   */
  async prepareReload(fingerprint: string): Promise<{ seq: number; prepared: ReadonlySet<number>; error?: string }> {
    const seq = ++this.reloadSeq
    // A worker still starting (a replacement after a crash) runs the old generation: it is replaced at the commit.
    const left = new Set([...this.ready].filter((w) => sendTo(w, { relay: 'reload', seq, fingerprint })).map((w) => w.id))
    const errors: string[] = []
    const prepared = new Set<number>()
    if (left.size) {
      const limit = this.env.config().setupTimeout + 5000
      const timedOut = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(true), limit)
        this.reloads.set(seq, { left, prepared, errors, done: () => (clearTimeout(timer), resolve(false)) })
      })
      this.reloads.delete(seq)
      if (timedOut && !errors.length) errors.push(`an SMTP worker did not set up the new config within ${limit / 1000} s (config setupTimeout + 5 s)`)
    }
    return { seq, prepared, error: errors[0] }
  }

  /**
   * Phase two: the primary has committed; every worker swaps in what it prepared. One that prepared
   * nothing (started while the reload ran, on the old generation) is stopped and replaced by one
   * that starts on the new config: no process keeps a generation of its own.
   */
  commitReload(seq: number, prepared: ReadonlySet<number>): void {
    const events = primaryOnlyEvents(this.env.hooks)
    for (const w of this.workers) sendTo(w, prepared.has(w.id) ? { relay: 'reload-commit', seq, events } : { relay: 'stop' })
  }

  /** Phase two, refused: every worker lets go of what it prepared and keeps running the old generation. */
  abortReload(seq: number): void {
    for (const w of this.workers) sendTo(w, { relay: 'reload-abort', seq })
  }

  /** SMTP workers that are up (their listeners accept). */
  readyCount(): number {
    return this.ready.size
  }

  reloadTls(): void {
    for (const w of this.workers) sendTo(w, { relay: 'reloadTls' })
  }

  /** Workers stop accepting and finish their sessions (each within shutdownTimeout), then exit. */
  async stop(deadline: number): Promise<void> {
    this.stopping = true
    const exits = [...this.workers].map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))))
    for (const w of this.workers) sendTo(w, { relay: 'stop' })
    const timer = setTimeout(() => {
      for (const w of this.workers) w.process.kill('SIGKILL')
    }, Math.max(1000, deadline - Date.now()))
    await Promise.all(exits)
    clearTimeout(timer)
  }
}
