import path from 'node:path'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { ConfigError } from '../config/load.js'
import { isPlugin, resolvePlugin, sameNameWarnings } from './find-plugin.js'
import { pluginPortIssues } from '../config/check-listen.js'
import type { RelayConfig } from '../config/schema.js'
import type { Plugin, PluginContext, SetupContext, WatchedFile } from './types.js'
import type { PluginProcesses } from './processes.js'
import type { RelayOperations } from './operator.js'
import { HOOK_NAMES } from './names.js'
import { pluginShapeProblems, unreadablePlugin } from './plugin-shape.js'
import { factoryParts, withSetupParts } from './setup-result.js'
import { PLUGIN_ERROR_CODES as CODES, PluginError } from './plugin-errors.js'
import { watchFile } from './watch-file.js'
import { errorText } from '../error-text.js'
import { plain } from '../plain-data.js'
import { within } from '../within.js'
import { pluginResolver } from '../dns/resolver.js'
import { declaredPorts, pluginOptions, type DeclaredPort } from './plugin-options.js'

/** The first thing wrong with the plugin object's shape stops the start (plugin-shape.ts has them all). */
function checkShape(plugin: Plugin, named: string, at: string, file: string | undefined): void {
  if (at === 'core') return
  const [first] = pluginShapeProblems(plugin)
  if (first) throw new PluginError(first.code, file, named, first.message)
}

/** A plugin of the running generation: its options, context (with its state) and what to undo. */
export interface LoadedPlugin {
  plugin: Plugin
  ctx: PluginContext<unknown>
  /** Runs the plugin's teardown and closes its watched files. */
  teardown?: () => unknown
  /** `plugins[i]`, or `core` for the relay's own policies. */
  at: string
  /** The options as configured, to tell at reload whether a keepOnReload plugin changed. */
  optionsKey: string
  /** Carried over from the previous generation (keepOnReload), with options that changed since: needs a restart. */
  optionsChanged?: boolean
  /** What the plugin's instances in SMTP workers may call here (`ctx.processes.handle`). */
  handlers?: Map<string, (...args: any[]) => unknown>
}

/** The process plugins are loaded in (config `workers`); a worker's calls go to the primary. */
export interface ProcessEnv {
  role: PluginProcesses['role']
  /** In a worker: runs plugin `at`'s handler in the primary. */
  callPrimary?: (at: string, method: string, args: unknown[]) => Promise<unknown>
}

/**
 * Plugins an SMTP worker process runs (config `workers`): those with a hook (connect … queue, and
 * deliver: a worker delivers the new mail it took); those with events only run in the primary.
 */
export function runsInWorkers(plugin: Plugin): boolean {
  // One with no hooks of its own may make them in setup (setup-result.ts): a worker sets it up to see.
  if (plugin.hooks === undefined && typeof plugin.setup === 'function' && !plugin.keepOnReload && !plugin.ports) return true
  return HOOK_NAMES.some((h) => typeof plugin.hooks?.[h] === 'function')
}

/** Runs plugin `at`'s handler for a call from a worker. */
export function handlePluginCall(plugins: readonly LoadedPlugin[], target: string, method: string, args: unknown[]): unknown {
  // `plugins[i]\0name`: the plugin at that place if it still has that name, else the one plugin of
  // that name (a reload moved it); never another plugin's handler of the same method name.
  const [at, name] = target.split('\u0000') as [string, string | undefined]
  const named = name === undefined ? plugins.filter((p) => p.at === at) : plugins.filter((p) => p.plugin.name === name)
  const p = named.find((x) => x.at === at) ?? (named.length === 1 ? named[0] : undefined)
  if (!p) throw new Error(`${at}${name ? ` (${name})` : ''}: not among the primary's plugins now (a reload changed them): no handler '${method}'`)
  const fn = p.handlers?.get(method)
  if (!fn) throw new Error(`${at}${name ? ` (${name})` : ''}: no handler '${method}' (ctx.processes.handle) in the primary`)
  return fn(...args)
}

export interface PluginEnv {
  config: RelayConfig
  logger: Logger
  resolver: Resolver
  /** 'check': `relay check-config` (plugins bind and start nothing). Default 'start'. */
  mode?: SetupContext<unknown>['mode']
  /** The running relay's operator API (not in 'check' mode). */
  relay?: RelayOperations
  /** The relay's own policies, on the same bus: `first` before the config's plugins, `last` after. */
  builtins?: { first: Plugin[]; last: Plugin[] }
  /** At reload: the running generation; its keepOnReload plugins carry over. */
  previous?: LoadedPlugin[]
  /** Which process this is (default: a single process). */
  process?: ProcessEnv
  /** Only these plugins are set up (an SMTP worker takes those with session hooks). */
  only?: (plugin: Plugin) => boolean
}

/** Loads the config's plugins in order, validates their options and runs their setup. */
export async function loadPlugins(env: PluginEnv): Promise<LoadedPlugin[]> {
  const loaded: LoadedPlugin[] = []
  const carried: Carried[] = []
  try {
    await loadEach(env, loaded, carried)
  } catch (err) {
    // Those set up already let go of what they hold (a hot reload that fails leaves nothing open).
    await teardownAll(loaded.filter((p) => !env.previous?.includes(p)), env.logger)
    throw err
  }
  // Only a generation that loaded updates the kept ones: a refused reload leaves the running one as it was.
  for (const { kept, at, optionsChanged } of carried) Object.assign(kept, { at, optionsChanged })
  return loaded
}

/** A keepOnReload plugin carried into the new generation: its place there, and whether its options differ. */
interface Carried {
  kept: LoadedPlugin
  at: string
  optionsChanged: boolean
}

/**
 * Which running keepOnReload plugin each new entry carries over (undefined: set up anew). Matched by
 * identity, not by place, so adding, removing or moving other plugins never sets one up again (a
 * second listener on the port the running one holds): same name and options first, identical
 * entries in order; then same name with other options (the running one stays until a restart).
 */
function matchKept(entries: readonly { plugin: Plugin; optionsKey: string }[], previous: readonly LoadedPlugin[] = []): (LoadedPlugin | undefined)[] {
  const free = previous.filter((p) => p.plugin.keepOnReload)
  const out: (LoadedPlugin | undefined)[] = entries.map(() => undefined)
  for (const sameOptions of [true, false]) {
    entries.forEach((e, i) => {
      if (!e.plugin.keepOnReload || out[i]) return
      const j = free.findIndex((p) => p.plugin.name === e.plugin.name && (!sameOptions || p.optionsKey === e.optionsKey))
      if (j >= 0) out[i] = free.splice(j, 1)[0]
    })
  }
  return out
}

/** Runs the plugins' teardowns, last plugin first; a failure is logged and the rest still run. */
export async function teardownAll(plugins: LoadedPlugin[], log: Logger): Promise<void> {
  for (const p of [...plugins].reverse()) {
    try {
      await p.teardown?.()
    } catch (err) {
      log.error({ err, plugin: p.plugin.name }, `plugin ${p.plugin.name} teardown failed: ${errorText(err)}`)
    }
  }
}

async function loadEach(env: PluginEnv, loaded: LoadedPlugin[], carried: Carried[]): Promise<void> {
  const { config } = env
  const entries: { at: string; ref: string | Plugin; rawOptions: unknown }[] = [
    ...(env.builtins?.first ?? []).map((p) => ({ at: 'core', ref: p, rawOptions: undefined })),
    ...config.plugins.map((entry, index) => {
      const [ref, rawOptions] = Array.isArray(entry) ? entry : [entry, undefined]
      return { at: `plugins[${index}]`, ref: ref as string | Plugin, rawOptions }
    }),
    ...(env.builtins?.last ?? []).map((p) => ({ at: 'core', ref: p, rawOptions: undefined })),
  ]
  // Every entry loaded and its options validated before any is set up: the kept ones are matched over all.
  const ready: { at: string; named: string; plugin: Plugin; options: unknown; ports: DeclaredPort[]; source: string; optionsKey: string }[] = []
  let answersAuth = false
  // Every entry's problems, not only the first's (as check-config lists them): one start, one list to fix.
  const problems: ConfigError[] = []
  for (const { at, ref, rawOptions } of entries) {
    try {
      const unreadable = typeof ref === 'string' || at === 'core' ? undefined : unreadablePlugin(ref)
      if (unreadable) throw new PluginError(CODES.shape, config.configFile, at, unreadable)
      const plugin = typeof ref === 'string' ? await resolvePlugin(ref, config.configDir, at, config.configFile, config.setupTimeout) : ref
      const named = `${at} (${plugin.name})`
      if (typeof plugin.hooks?.auth === 'function') answersAuth = true
      if (env.only && !env.only(plugin)) continue
      if (at !== 'core' && !isPlugin(plugin)) throw new PluginError(CODES.shape, config.configFile, at, 'not a plugin object (definePlugin({ name, hooks }))')
      checkShape(plugin, named, at, config.configFile)
      const options = pluginOptions(plugin, rawOptions ?? {}, named, config.configFile)
      const ports = at === 'core' ? [] : declaredPorts(plugin, options, named, config.configFile)
      // Where its code came from counts as its options do: a kept plugin of the same name from
      // another file is not the one running (it stays until a restart, and the reload says so).
      const source = typeof ref !== 'string' ? '' : ref.startsWith('.') || path.isAbsolute(ref) ? path.resolve(config.configDir, ref) : ref
      ready.push({ at, named, plugin, options, ports, source, optionsKey: `${keyOf(rawOptions)}\u0000${source}` })
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      problems.push(err)
    }
  }
  if (problems.length === 1) throw problems[0]
  if (problems.length) throw new ConfigError(config.configFile, problems.flatMap((p) => p.issues))
  // A submission listener wants AUTH before MAIL: with no plugin to answer AUTH it refuses all mail.
  const useless = answersAuth ? -1 : config.listen.findIndex((l) => l.role === 'submission')
  if (useless >= 0) {
    const message = 'a submission listener takes mail only after AUTH, and no plugin answers AUTH: add one (auth-file, auth-sql, auth-http, or a plugin with an auth hook) to plugins'
    throw new ConfigError(config.configFile, [{ path: `listen[${useless}]`, message }])
  }
  // A plugin's own port on a listener's or another plugin's: refused before anything binds.
  const clashes = pluginPortIssues(config.listen, ready)
  if (clashes.length) throw new ConfigError(config.configFile, clashes)
  const named = ready.filter((r) => r.at !== 'core').map((r) => ({ at: r.at, name: r.plugin.name, source: r.source }))
  for (const w of sameNameWarnings(named)) env.logger.warn({ path: w.path }, `config warning: ${w.path}: ${w.message}`)
  const kept = matchKept(ready, env.previous)
  for (const [i, { at, named, plugin, options, optionsKey }] of ready.entries()) {
    const k = kept[i]
    if (k) {
      carried.push({ kept: k, at, optionsChanged: k.optionsKey !== optionsKey })
      loaded.push(k)
      continue
    }
    const made = await setUp(env, plugin, options, at, named, optionsKey)
    // Set up to see what hooks it makes: none for this process (an SMTP worker), it goes.
    if (env.only && !env.only(made.plugin)) await teardownAll([made], env.logger)
    else loaded.push(made)
  }
}

/** Runs one plugin's setup within config.setupTimeout; its state goes into its context. */
async function setUp(env: PluginEnv, plugin: Plugin, options: unknown, at: string, named: string, optionsKey: string): Promise<LoadedPlugin> {
  const { config, logger } = env
  const local = new Set(config.localDomains)
  const log = logger.child({ plugin: plugin.name })
  const resolvePath = (file: string) => path.resolve(config.configDir, file)
  const files: WatchedFile<unknown>[] = []
  const handlers = new Map<string, (...args: any[]) => unknown>()
  const role = env.process?.role ?? 'single'
  const callPrimary = env.process?.callPrimary
  let self: LoadedPlugin | undefined
  const processes: PluginProcesses = {
    role,
    handle: (method, fn) => void (role !== 'worker' && handlers.set(method, fn)),
    call: async <T>(method: string, ...args: unknown[]) => {
      // Its place now: a kept plugin (keepOnReload) may have moved in the list since setup.
      // Its name goes along: during a reload the primary's list may already be the new one.
      if (role === 'worker' && callPrimary) return (await callPrimary(`${self?.at ?? at}\u0000${plugin.name}`, method, args)) as T
      const fn = handlers.get(method)
      if (!fn) throw new Error(`${named}: no handler '${method}' (ctx.processes.handle)`)
      // Copied as between processes (plain data, structured clone): the same code behaves alike with workers.
      return copied(await fn(...(copied(args) as unknown[]))) as T
    },
  }
  const ctx: PluginContext<unknown> = {
    log,
    options,
    resolver: pluginResolver(env.resolver),
    hostname: config.hostname,
    isLocalDomain: (d) => local.has(d.toLowerCase()),
    state: undefined,
    configDir: config.configDir,
    resolvePath,
    processes,
  }
  // Setup gets the context without `state` (it is what setup makes).
  const { state: _state, ...withoutState } = ctx
  const setupCtx: SetupContext<unknown> = {
    ...withoutState,
    dataDir: config.dataDir,
    mode: env.mode ?? 'start',
    // A reload asked for from setup would wait for the reload that runs this setup: refused at once.
    relay: env.relay && Object.freeze({ ...env.relay, reload: () => (settingUp ? Promise.reject(new Error(`${named}: ctx.relay.reload() cannot be called from setup (the reload would wait for this setup); call it later`)) : env.relay!.reload()) }),
    watchFile: (file, parse, opts) => {
      const w = watchFile(resolvePath(file), parse, log, opts?.onChange)
      files.push(w as WatchedFile<unknown>)
      return w
    },
  }
  const closeFiles = () => files.forEach((f) => f.close())
  let settingUp = true
  let result: unknown
  const setupRun = Promise.resolve().then(() => plugin.setup?.(setupCtx))
  try {
    result = await within(setupRun, config.setupTimeout, () =>
      new PluginError(CODES.setupTimeout, config.configFile, named, `setup did not finish within ${config.setupTimeout} ms (config setupTimeout)`),
    )
  } catch (err) {
    closeFiles()
    // A setup that finishes after its time ran out holds what it opened: it is let go then.
    if (err instanceof PluginError && err.code === CODES.setupTimeout) void tearDownLate(setupRun, plugin, ctx, log, named, closeFiles)
    if (err instanceof PluginError) throw err
    // The cause stays: a system call that failed (a port in use) is no config problem (cli/start.ts).
    throw Object.assign(new PluginError(CODES.setup, config.configFile, named, `setup: ${errorText(err)}`), { cause: err })
  }
  settingUp = false
  // The hooks run are a copy taken now: a plugin that imports another (a bundled one) and assigns
  // to its hooks changes nothing of what runs.
  let made: Plugin = { ...plugin, hooks: { ...plugin.hooks } }
  const parts = factoryParts(result)
  if (parts) {
    const m = withSetupParts(plugin, parts)
    if (m.problem) {
      // What setup made is let go of before the start (or reload) is refused.
      closeFiles()
      const undo = typeof parts.teardown === 'function' ? (parts.teardown as Plugin['teardown']) : plugin.teardown
      await within(Promise.resolve().then(() => undo?.({ ...ctx, state: parts.state })), config.setupTimeout, () => new Error('teardown timed out')).catch(() => {})
      throw new PluginError(m.problem.code, config.configFile, named, m.problem.message)
    }
    made = m.plugin
    result = parts.state
  } else factoryLike(result, plugin, log)
  Object.freeze(made.hooks)
  // The older form: setup returned its teardown. Not for a plugin with a teardown of its own: its
  // setup's function (a matcher, say) is its state.
  const legacyTeardown = !parts && typeof result === 'function' && typeof plugin.teardown !== 'function' ? (result as () => unknown) : undefined
  ctx.state = legacyTeardown ? undefined : result
  // Bounded like setup: a teardown that never finishes would hold up every later reload, and a stop.
  // A check (check-config, a CLI verb) waits for a teardown at most 5 s: nothing runs after it.
  const teardownLimit = env.mode === 'check' ? Math.min(config.setupTimeout, 5000) : config.setupTimeout
  const teardown = async () => {
    closeFiles()
    await within(Promise.resolve().then(() => (legacyTeardown ? legacyTeardown() : made.teardown?.(ctx))), teardownLimit, () =>
      new Error(`teardown did not finish within ${teardownLimit} ms (config setupTimeout); going on without it`),
    )
  }
  self = { plugin: made, ctx, teardown, at, optionsKey, handlers }
  return self
}

/**
 * A setup that returns hooks or a teardown beside other keys has made its state (the factory form
 * holds only hooks, events, teardown, state: setup-result.ts): said once, not ignored silently.
 */
function factoryLike(result: unknown, plugin: Plugin, log: Logger): void {
  if (typeof result !== 'object' || result === null) return
  const r = result as { hooks?: unknown; teardown?: unknown }
  const hooks = typeof r.hooks === 'object' && r.hooks !== null && Object.values(r.hooks).some((v) => typeof v === 'function')
  const teardown = typeof r.teardown === 'function' && typeof plugin.teardown !== 'function'
  if (hooks || teardown) {
    const what = [hooks && 'hooks', teardown && 'teardown'].filter(Boolean).join(' and ')
    log.warn(`plugin ${plugin.name}: setup returned an object with ${what} and other keys, so it is the plugin's state (ctx.state) and they are never called: return only { hooks, events, teardown, state } (the factory form), or put them on the plugin object`)
  }
}

/** The teardown of a setup that finished after config setupTimeout (the start or reload had gone on without it). */
async function tearDownLate(setupRun: Promise<unknown>, plugin: Plugin, ctx: PluginContext<unknown>, log: Logger, named: string, closeFiles: () => void): Promise<void> {
  let late: unknown
  try {
    late = await setupRun
  } catch {
    return // it failed after all: nothing was made
  } finally {
    closeFiles() // those it watched after its time ran out
  }
  try {
    if (typeof late === 'function' && typeof plugin.teardown !== 'function') await (late as () => unknown)()
    else await plugin.teardown?.({ ...ctx, state: late })
    log.warn(`${named}: setup finished after its timeout; it was torn down`)
  } catch (err) {
    log.error({ err }, `${named}: setup finished after its timeout; its teardown failed: ${errorText(err)}`)
  }
}

const copied = (value: unknown): unknown => structuredClone(plain(value))

/** The options as a string, keys sorted: the same options written in another order are the same. */
function keyOf(options: unknown): string {
  try {
    return JSON.stringify(options ?? {}, (_, v: unknown) =>
      v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
    )
  } catch {
    return String(Math.random()) // not serialisable: always counts as changed
  }
}
