import type { Logger } from 'pino'
import type { EventContexts, EventName, HookContexts, HookName, RouteDecision, Verdict } from './types.js'
import { teardownAll, type LoadedPlugin } from './load-plugins.js'
import { asVerdict, pluginFailure } from './verdict.js'
import { withOwnCopies } from './own-copy.js'

export type { LoadedPlugin } from './load-plugins.js'

export type Decision<K extends HookName> = {
  plugin: string
  verdict: K extends 'deliver' ? Verdict | RouteDecision : Verdict
}


/**
 * Runs hooks in config order. The first plugin that returns a verdict decides; a plugin that
 * throws, times out or returns something that is not a verdict gives a tempfail and a log line.
 */
export class HookBus {
  private byHook = new Map<string, LoadedPlugin[]>()
  /** Core subscribers (metrics, event log, dashboard): they outlive a plugin reload. */
  private readonly observers = new Map<string, ((data: never) => void)[]>()

  constructor(
    public plugins: LoadedPlugin[],
    private readonly timeoutMs: number,
    private readonly log: Logger,
  ) {
    this.byHook = index(plugins)
  }

  /**
   * Swaps in freshly loaded plugins (hot reload). Calls already running finish with the old ones;
   * the old ones' teardowns run after the swap (not for those carried over: keepOnReload). Observers stay.
   */
  async replace(plugins: LoadedPlugin[]): Promise<void> {
    const old = this.plugins
    const running = [...this.running, ...this.hearing]
    this.plugins = plugins
    this.byHook = index(plugins)
    // Not while a call of theirs runs: a hook that reads its state after an await would find it
    // torn down (each call ends within hookTimeout, a stage within one per plugin).
    await Promise.allSettled(running)
    await teardownAll(old.filter((p) => !plugins.includes(p)), this.log)
  }

  /** Hook stages running (run()), with the plugins they started with. */
  private readonly running = new Set<Promise<unknown>>()

  /** Core-side subscription to an event: called synchronously, before plugins hear of it; never throws into emit. */
  observe<K extends EventName>(event: K, fn: (data: EventContexts[K]) => void): void {
    const list = this.observers.get(event) ?? []
    list.push(fn as (data: never) => void)
    this.observers.set(event, list)
  }

  /**
   * In an SMTP worker process: events some plugin in the primary listens for, and how to send them
   * there (core/workers). Set again at each reload.
   */
  forward: { events: ReadonlySet<string>; send: (event: EventName, data: unknown) => void } | undefined

  /** Does core code (the event log) observe `event`? */
  observes(event: EventName): boolean {
    return (this.observers.get(event)?.length ?? 0) > 0
  }

  has(hook: HookName | EventName): boolean {
    return (this.byHook.get(hook)?.length ?? 0) > 0 || (this.observers.get(hook)?.length ?? 0) > 0 || !!this.forward?.events.has(hook)
  }

  /** Runs `hook` through the plugins; resolves with the deciding verdict, or undefined if all passed. */
  run<K extends HookName>(hook: K, data: HookContexts[K]): Promise<Decision<K> | undefined> {
    const list = this.byHook.get(hook)
    if (!list) return Promise.resolve(undefined)
    const stage = this.runList(list, hook, data)
    this.running.add(stage)
    const done = () => void this.running.delete(stage)
    stage.then(done, done)
    return stage
  }

  private async runList<K extends HookName>(list: LoadedPlugin[], hook: K, data: HookContexts[K]): Promise<Decision<K> | undefined> {
    for (const p of list) {
      const fn = p.plugin.hooks![hook] as (ctx: unknown) => unknown
      let result: unknown
      try {
        // Object.assign, not an object spread: on Node 20 spreading these two objects costs ~27 µs a
        // call (bench/RESULTS.md), on Node 24 ~2 µs; assign costs ~1–2 µs on both.
        // Each plugin its own copies of the stage's objects (own-copy.ts).
        result = await this.withTimeout(p, hook, (signal) => fn(Object.defineProperty(withOwnCopies(Object.assign({}, p.ctx, data)), 'signal', { get: signal, enumerable: true })))
      } catch (err) {
        p.ctx.log.error({ err, hook }, `plugin ${p.plugin.name} failed in hook ${hook}`)
        return { plugin: p.plugin.name, verdict: pluginFailure(hook) } as Decision<K>
      }
      const verdict = asVerdict(result, hook)
      if (verdict === undefined) continue
      if (verdict !== 'invalid') this.warnMisplaced(p, hook, verdict, result as object)
      if (verdict === 'invalid') {
        p.ctx.log.error({ hook, result: shown(result) }, `plugin ${p.plugin.name} returned something that is not a verdict from hook ${hook}`)
        return { plugin: p.plugin.name, verdict: pluginFailure(hook) } as Decision<K>
      }
      return { plugin: p.plugin.name, verdict } as Decision<K>
    }
    return undefined
  }

  /** Verdict fields a stage does not read, said once per plugin, hook and field: they do nothing there. */
  private readonly misplaced = new Set<string>()
  private warnMisplaced(p: LoadedPlugin, hook: string, verdict: object, given: object): void {
    // A key no verdict has (`mesage`) would leave the default reply in its place without a word.
    for (const key of ownKeys(given)) {
      if (VERDICT_KEYS.has(key) || this.misplaced.has(`${p.at}\u0000${p.plugin.name}\u0000${hook}\u0000?${key}`)) continue
      this.misplaced.add(`${p.at}\u0000${p.plugin.name}\u0000${hook}\u0000?${key}`)
      p.ctx.log.warn({ hook, field: key }, `plugin ${p.plugin.name} returned a verdict with the unknown key '${key}' from hook ${hook} (a verdict has: ${[...VERDICT_KEYS].join(', ')}): it is ignored`)
    }
    const fields = [['senders', 'auth'], ['handled', 'data']].filter(([field, at]) => field! in verdict && hook !== at)
    for (const [field, at] of fields) {
      const key = `${p.at}\u0000${p.plugin.name}\u0000${hook}\u0000${field}`
      if (this.misplaced.has(key)) continue
      this.misplaced.add(key)
      p.ctx.log.warn({ hook, field }, `plugin ${p.plugin.name} returned '${field}' from hook ${hook}: only the ${at} hook reads it, so it does nothing here`)
    }
  }

  /**
   * Tells every plugin listening for `event` (those `only` allows: the primary hears a worker's
   * events for the plugins no worker runs); failures are logged and never reach the caller.
   */
  async emit<K extends EventName>(event: K, data: EventContexts[K], only?: (p: LoadedPlugin) => boolean): Promise<void> {
    if (this.forward?.events.has(event)) this.forward.send(event, data)
    for (const fn of this.observers.get(event) ?? []) {
      try {
        ;(fn as (d: EventContexts[K]) => void)(data)
      } catch (err) {
        this.log.error({ err, event }, `observer of event ${event} failed`)
      }
    }
    const all = this.byHook.get(event)
    const list = only && all ? all.filter(only) : all
    if (!list?.length) return
    // The listeners share one copy, frozen: none can change what the next one hears (or what the
    // core goes on using: the caller keeps its own object).
    const shared = frozenCopy(data)
    const heard = Promise.all(
      list.map(async (p) => {
        const fn = p.plugin.hooks![event] as (e: unknown, ctx: unknown) => unknown
        try {
          await this.withTimeout(p, event, () => fn(shared, p.ctx))
        } catch (err) {
          p.ctx.log.error({ err, event }, `plugin ${p.plugin.name} failed handling event ${event}`)
        }
      }),
    )
    // A caller need not wait (a delivery's slot is not held while a listener is slow), but the
    // plugins are torn down only once what they are handling is done (each call within hookTimeout).
    this.hearing.add(heard)
    void heard.finally(() => this.hearing.delete(heard))
    await heard
  }

  /** Event calls still running. */
  private readonly hearing = new Set<Promise<unknown>>()

  /**
   * Runs `call`; past the timeout it is given up on and its signal aborted, so it can stop working.
   * The AbortController is made only when a hook reads `signal` (making one for every call costs
   * more than most hooks do).
   */
  private withTimeout<T>(p: LoadedPlugin, hook: string, call: (signal: () => AbortSignal) => T): Promise<Awaited<T>> {
    let abort: AbortController | undefined
    let timedOut: Error | undefined
    const signal = () => (abort ??= controller(timedOut)).signal
    // A hook that answers synchronously (most policies do) needs no timer.
    let result: T
    try {
      result = call(signal)
    } catch (err) {
      return Promise.reject(err)
    }
    if (!isThenable(result)) return Promise.resolve(result as Awaited<T>)
    return new Promise<Awaited<T>>((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = new Error(`hook ${hook} timed out after ${this.timeoutMs} ms`)
        timedOut = err
        reject(err)
        abort?.abort(err)
      }, this.timeoutMs)
      timer.unref()
      ;(result as PromiseLike<Awaited<T>>).then(
        (v) => {
          clearTimeout(timer)
          resolve(v)
        },
        (e) => {
          clearTimeout(timer)
          reject(e)
        },
      )
    })
  }

  /** Tears the plugins down once the event calls running finish (each within hookTimeout), waiting at most `waitMs` for them. */
  async close(waitMs = Infinity): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const waited = new Promise<void>((resolve) => Number.isFinite(waitMs) && (timer = setTimeout(resolve, waitMs)))
    await Promise.race([Promise.all(this.hearing), waited])
    clearTimeout(timer)
    await teardownAll(this.plugins, this.log)
  }
}

/** A result for the log: the object itself unless reading it throws (a getter, a Proxy). */
function shown(result: unknown): unknown {
  try {
    JSON.stringify(result)
    return result
  } catch {
    return String(Object.prototype.toString.call(result))
  }
}

const VERDICT_KEYS = new Set(['action', 'code', 'status', 'message', 'senders', 'handled', 'route'])

/** An object's own keys, or none when listing them throws (a Proxy). */
function ownKeys(o: object): string[] {
  try {
    return Object.keys(o)
  } catch {
    return []
  }
}

const isThenable = (v: unknown): v is PromiseLike<unknown> => typeof (v as PromiseLike<unknown> | null)?.then === 'function'

/** A controller, already aborted when the call timed out before it asked for its signal. */
function controller(reason: Error | undefined): AbortController {
  const c = new AbortController()
  if (reason) c.abort(reason)
  return c
}

function index(plugins: LoadedPlugin[]): Map<string, LoadedPlugin[]> {
  const byHook = new Map<string, LoadedPlugin[]>()
  for (const p of plugins) {
    for (const name of Object.keys(p.plugin.hooks ?? {})) {
      if (typeof (p.plugin.hooks as Record<string, unknown>)[name] !== 'function') continue
      const list = byHook.get(name) ?? []
      list.push(p)
      byHook.set(name, list)
    }
  }
  return byHook
}

/** A deep copy of an event's data, frozen (events are plain data: strings, numbers, lists, records). */
function frozenCopy<T>(data: T): T {
  return deepFreeze(structuredClone(data))
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value) && !ArrayBuffer.isView(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}
