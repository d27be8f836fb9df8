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
      process.stderr.write(`[relay-mta/testing] ${String(entry.msg)}${why ? `: ${why}` : ''}\n`)
    }
  }
  return { logger: pino({ level: 'debug' }, { write }), logs }
}

/** Loads one plugin in-process for unit tests. */
export async function pluginHarness(plugin: Plugin, opts: PluginHarnessOptions = {}): Promise<PluginHarness> {
  const dir = process.cwd()
  const config = parseConfig(
    { hostname: 'relay.test', dataDir: path.join(os.tmpdir(), `relay-hook-${process.pid}`), ...opts.config, plugins: [[plugin, opts.options ?? {}]] },
    dir,
  )
  const { logger, logs } = harnessLogger()
  const plugins = await loadPlugins({ config, logger, resolver: createResolver(config), relay: opts.relay })
  const bus = new HookBus(plugins, config.hookTimeout, logger)
  return {
    async run(hook, ctx) {
      return (await bus.run(hook, ctx))?.verdict
    },
    emit: (event, data) => bus.emit(event, data),
    get state() {
      return plugins[0]?.ctx.state
    },
    logs,
    close: () => bus.close(),
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
