// Hot reload (SIGHUP, `relay reload`, POST /api/reload): the config file read again, plugins loaded
// anew and swapped in, certificates re-read, live settings applied to the shared config object.
// Sessions and queued mail are untouched; a config that fails validation changes nothing.
import type { DependencyContainer } from 'tsyringe'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { Tokens } from './tokens.js'
import { ConfigError, loadConfig } from './config/load.js'
import type { RelayConfig } from './config/schema.js'
import { loadPlugins } from './hooks/load-plugins.js'
import type { HookBus } from './hooks/bus.js'
import { readTlsFiles } from './smtp/tls.js'
import type { SmtpListeners } from './smtp/listeners.js'

export type ReloadResult =
  | {
      ok: true
      /** Settings that differ from the config in force before (`smtp.maxRecipients`, `plugins`, ...). */
      changed: string[]
      /** Changed settings that keep their old value until a restart. */
      restartNeeded: string[]
    }
  | { ok: false; error: string }

/**
 * Settings read once at start (sockets, the queue, the resolver, server options, pools): a change
 * is logged as needing a restart and the old value stays, so the config object says what runs.
 */
const RESTART_ONLY = [
  'listen', 'dataDir', 'queue', 'admin', 'dns', 'hostname', 'metrics', 'hookTimeout',
  'smtp.maxMessageSize', 'smtp.maxClients', 'smtp.socketTimeout', 'smtp.reverseLookup', 'smtp.greetingDelay',
  'smtp.maxErrors', 'smtp.maxUnauthenticatedCommands', 'smtp.firstCommandTimeout',
  'delivery.concurrency', 'delivery.reuse', 'delivery.throttle', 'delivery.tlsCa', 'delivery.mtaSts', 'delivery.lease',
  'tls.minVersion',
] as const

type Section = Record<string, unknown>

/** Reads the config file again and applies it to the running relay; see the file comment. */
export async function reloadRelay(config: RelayConfig, log: Logger, container: DependencyContainer): Promise<ReloadResult> {
  let next: RelayConfig
  try {
    next = await loadConfig(config.configFile)
  } catch (err) {
    return refuse(log, err)
  }

  const changed = diff(config, next)
  const restartNeeded: string[] = []
  const effective = { ...next } as RelayConfig & Section
  for (const key of RESTART_ONLY) {
    if (!changed.some((c) => c === key || c.startsWith(`${key}.`) || c.startsWith(`${key}[`))) continue
    const [top, sub] = key.split('.') as [keyof RelayConfig, string | undefined]
    if (sub === undefined) effective[top] = config[top] as never
    else if (effective[top] && config[top]) effective[top] = { ...(effective[top] as Section), [sub]: (config[top] as Section)[sub] } as never
    restartNeeded.push(key)
  }
  // TLS on or off changes how listeners are built.
  if (Boolean(config.tls) !== Boolean(next.tls)) {
    effective.tls = config.tls
    restartNeeded.push('tls')
  }

  // Everything that can fail happens before anything is swapped: certificates, then plugins.
  if (effective.tls) {
    try {
      readTlsFiles(effective.tls)
    } catch (err) {
      return refuse(log, new ConfigError(config.configFile, [{ path: 'tls', message: (err as Error).message }]))
    }
  }
  let plugins: Awaited<ReturnType<typeof loadPlugins>>
  try {
    plugins = await loadPlugins({ config: effective, logger: log, resolver: container.resolve<Resolver>(Tokens.Resolver) })
  } catch (err) {
    return refuse(log, err)
  }

  // Commit. Open sessions keep going; the next hook call sees the new plugins.
  await container.resolve<HookBus>(Tokens.Hooks).replace(plugins)
  for (const key of Object.keys(effective) as (keyof RelayConfig)[]) (config as Section)[key] = effective[key]
  for (const key of Object.keys(config) as (keyof RelayConfig)[]) if (!(key in effective)) delete (config as Section)[key]
  log.level = config.log.level
  container.resolve<SmtpListeners>(Tokens.Listeners).applyConfig()

  for (const key of restartNeeded) log.warn({ key }, `config reload: ${key} changed; it takes effect after a restart`)
  log.info({ changed, restartNeeded, plugins: plugins.map((p) => p.plugin.name) }, 'config reloaded')
  return { ok: true, changed, restartNeeded }
}

function refuse(log: Logger, err: unknown): ReloadResult {
  const error = err instanceof ConfigError ? err.message : `cannot reload: ${(err as Error).message ?? String(err)}`
  log.error({ issues: err instanceof ConfigError ? err.issues : undefined }, `config reload refused; the running config stays in force: ${error}`)
  return { ok: false, error }
}

/** Top-level keys that differ, as `section.key` for object sections. */
function diff(a: RelayConfig, b: RelayConfig): string[] {
  const out: string[] = []
  const keys = new Set([...Object.keys(a), ...Object.keys(b)])
  keys.delete('configDir')
  keys.delete('configFile')
  for (const key of keys) {
    const x = (a as Section)[key]
    const y = (b as Section)[key]
    if (isSection(x) && isSection(y)) {
      for (const sub of new Set([...Object.keys(x), ...Object.keys(y)])) if (!same(x[sub], y[sub])) out.push(`${key}.${sub}`)
    } else if (!same(x, y)) out.push(key)
  }
  return out.sort()
}

const isSection = (v: unknown): v is Section => typeof v === 'object' && v !== null && !Array.isArray(v)

function same(x: unknown, y: unknown): boolean {
  try {
    return JSON.stringify(x) === JSON.stringify(y)
  } catch {
    return false // not serialisable (a plugin object with cycles): count it as changed
  }
}
