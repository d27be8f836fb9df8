// In-process plugin tests: a plugin's hook called directly, beside the real-socket harness
// (startTestRelay). The plugin is loaded as the relay loads it: options through its schema, setup
// (its state in ctx.state), an unknown hook name refused; a teardown at close. What the plugin
// and the bus log is kept (`logs`), and a warning or error is said on stderr: a hook that threw and
// became a tempfail shows why.
import path from 'node:path'
import os from 'node:os'
import pino from 'pino'
import { parseConfig } from '../core/config/load.js'
import { createResolver } from '../core/dns/resolver.js'
import { HookBus } from '../core/hooks/bus.js'
import { loadPlugins } from '../core/hooks/load-plugins.js'
import { EVENT_NAMES, HOOK_NAMES } from '../core/hooks/names.js'
import type { EventContexts, EventName, HookContexts, HookName, Plugin, RelayOperations, RouteDecision, Verdict } from '../core/index.js'

export interface PluginHarnessOptions {
  /** The plugin's options (validated by its schema). */
  options?: Record<string, unknown>
  /** Config fields the plugin context takes from the relay: hostname, localDomains, dataDir, dns, hookTimeout. */
  config?: Record<string, unknown>
  /** An operator API for operations plugins (absent by default). */
  relay?: RelayOperations
}

export interface PluginHarness {
  /** Runs one hook as the relay would (timeout, a throw becomes a tempfail); resolves with its verdict or undefined. */
  run<K extends HookName>(hook: K, ctx: HookContexts[K]): Promise<Verdict | RouteDecision | undefined>
  /** Tells the plugin of an event. */
  emit<K extends EventName>(event: K, data: EventContexts[K]): Promise<void>
  /** What the plugin's setup returned. */
  readonly state: unknown
  /**
   * What the plugin and the bus logged (pino's JSON lines, parsed): why a hook became a tempfail
   * (`plugin x failed in hook rcpt`, with `err`), a timeout, the plugin's own `ctx.log` lines.
   * Warnings and errors are also written to stderr, so a test that gets an unexpected tempfail says why.
   */
  readonly logs: readonly Record<string, unknown>[]
  close(): Promise<void>
}

/** Keeps every line; warnings and errors also go to stderr, one line each. */
function harnessLogger(): { logger: pino.Logger; logs: Record<string, unknown>[] } {
  const logs: Record<string, unknown>[] = []
  const write = (line: string) => {
    const entry = JSON.parse(line) as Record<string, unknown>
    logs.push(entry)
    if (typeof entry.level === 'number' && entry.level >= 40) {
      const err = entry.err as { message?: unknown } | string | undefined
      const why = typeof err === 'string' ? err : typeof err?.message === 'string' ? err.message : undefined
      // The error's text once: most lines already end with it (`teardown failed: <why>`).
      const msg = String(entry.msg)
      process.stderr.write(`[relay-mta/testing] ${msg}${why && !msg.includes(why) ? `: ${why}` : ''}\n`)
    }
  }
  return { logger: pino({ level: 'debug' }, { write }), logs }
}

/** Loads one plugin in-process for unit tests. */
export async function pluginHarness(plugin: Plugin, opts: PluginHarnessOptions = {}): Promise<PluginHarness> {
  // The module's namespace (`import * as p`) or a default export that is no plugin: said as such,
  // not as the config's "plugins[0]: expected a plugin name, a path, or a plugin object".
  if (typeof plugin !== 'object' || plugin === null || typeof (plugin as { name?: unknown }).name !== 'string') {
    const hint = plugin && typeof plugin === 'object' && 'default' in plugin ? ' (a module namespace? pass its default export)' : ''
    throw new TypeError(`pluginHarness: expected a plugin object with a name, got ${plugin === null ? 'null' : typeof plugin}${hint}`)
  }
  const dir = process.cwd()
  const config = parseConfig(
    { hostname: 'relay.test', dataDir: path.join(os.tmpdir(), `relay-hook-${process.pid}`), ...opts.config, plugins: [[plugin, opts.options ?? {}]] },
    dir,
  )
  const { logger, logs } = harnessLogger()
  const plugins = await loadPlugins({ config, logger, resolver: createResolver(config), relay: opts.relay })
  const bus = new HookBus(plugins, config.hookTimeout, logger)
  return {
    // A hook or event name that is none (a typo, another case, an event given to run) is refused:
    // a test of it would otherwise pass on an undefined that nothing produced.
    async run(hook, ctx) {
      if (!(HOOK_NAMES as readonly string[]).includes(hook)) throw new TypeError(`run: '${String(hook)}' is not a hook (hooks: ${HOOK_NAMES.join(', ')})${(EVENT_NAMES as readonly string[]).includes(hook) ? `; '${hook}' is an event: use emit` : ''}`)
      return (await keepAlive(bus.run(hook, ctx)))?.verdict
    },
    emit: async (event, data) => {
      if (!(EVENT_NAMES as readonly string[]).includes(event)) throw new TypeError(`emit: '${String(event)}' is not an event (events: ${EVENT_NAMES.join(', ')})${(HOOK_NAMES as readonly string[]).includes(event) ? `; '${event}' is a hook: use run` : ''}`)
      return keepAlive(bus.emit(event, data))
    },
    get state() {
      return plugins[0]?.ctx.state
    },
    logs,
    close: () => bus.close(),
  }
}

/**
 * The bus's hook timer is unref'd (a relay never waits on it to exit), so a hook that never settles
 * would let a plain `node` test script end (exit 13, unsettled top-level await) instead of giving
 * the timeout's verdict: the harness holds the event loop open while a call runs.
 */
async function keepAlive<T>(p: Promise<T>): Promise<T> {
  const hold = setInterval(() => {}, 60_000)
  try {
    return await p
  } finally {
    clearInterval(hold)
  }
}

/** One hook call: loads the plugin, runs `hook` with `ctx`, tears the plugin down; resolves with its verdict. */
export async function runHook<K extends HookName>(plugin: Plugin, hook: K, ctx: HookContexts[K], opts: PluginHarnessOptions = {}): Promise<Verdict | RouteDecision | undefined> {
  const h = await pluginHarness(plugin, opts)
  try {
    return await h.run(hook, ctx)
  } finally {
    await h.close()
  }
}
