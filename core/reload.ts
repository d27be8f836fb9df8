// Hot reload (SIGHUP, `relay reload`, POST /api/reload): the config file read again, plugins loaded
// anew and swapped in, certificates re-read. Configs are immutable: the reload makes a new
// generation (core/config/reload-plan.ts) and hands it to each part that took settings from the old.
// Sessions and queued mail are untouched; a config that fails validation changes nothing.
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { ConfigError, loadConfig } from './config/load.js'
import type { RelayConfig } from './config/schema.js'
import { planReload } from './config/reload-plan.js'
import type { HookBus, LoadedPlugin } from './hooks/bus.js'
import { teardownAll } from './hooks/load-plugins.js'
import type { ReloadResult } from './hooks/operator.js'
import { checkConfigPaths } from './config/check-paths.js'
import type { SmtpListeners } from './smtp/listeners.js'
import type { DeliveryScheduler } from './delivery/scheduler.js'
import { errorText } from './error-text.js'

export type { ReloadResult }

/** The relay as reload sees it (core/relay.ts). */
export interface Reloadable {
  /** The config generation in force: replaced on success. */
  config: RelayConfig
  /** The config as read from its file (restart-only settings as written): replaced on success. */
  loaded?: RelayConfig
  /** One generation of plugins, set up as at start; keepOnReload ones carry over from `previous`. */
  loadPlugins(config: RelayConfig, resolver: Resolver, mode: 'reload', previous: LoadedPlugin[]): Promise<LoadedPlugin[]>
}

/** The parts a reload hands the new generation to. */
export interface ReloadTargets {
  hooks: HookBus
  smtp: Pick<SmtpListeners, 'applyConfig'>
  /** Absent in an SMTP worker process (delivery runs in the primary). */
  delivery?: Pick<DeliveryScheduler, 'applyConfig'>
  resolver: Resolver
}

/** A new generation, loaded and set up but not in force: commit() swaps it in, abort() lets it go. */
export interface PreparedReload {
  /** The config as read from the file. */
  next: RelayConfig
  /** What the result will say once committed. */
  result: Extract<ReloadResult, { ok: true }>
  commit(): Promise<void>
  abort(): Promise<void>
}

/**
 * Everything of a reload that can fail, with nothing swapped: the config read and checked, the new
 * generation of plugins set up. `expect` may refuse the config read (an SMTP worker checks that it
 * read what the primary read). With SMTP workers the primary commits only once every worker has
 * prepared too, so a reload is taken by every process or by none.
 */
export async function prepareReload(
  relay: Reloadable,
  log: Logger,
  parts: ReloadTargets,
  expect?: (next: RelayConfig) => void,
): Promise<PreparedReload | Extract<ReloadResult, { ok: false }>> {
  const running = relay.config
  let next: RelayConfig
  try {
    next = await loadConfig(running.configFile)
    expect?.(next)
  } catch (err) {
    return refuse(log, err)
  }
  const { effective, changed, restartNeeded } = planReload(running, next)

  // Everything that can fail happens before anything is swapped: the files and listeners the new
  // config names, as check-config and start check them (certificates that make a pair, a writable
  // data directory, no listener twice), then the plugins. Restart-only settings are checked too: a
  // config the next start would refuse is refused now, not after a reboot.
  const issues = checkConfigPaths(next)
  if (issues.length) return refuse(log, new ConfigError(running.configFile, issues))
  const { hooks } = parts
  let plugins: LoadedPlugin[]
  try {
    plugins = await relay.loadPlugins(effective, parts.resolver, 'reload', hooks.plugins)
  } catch (err) {
    return refuse(log, err)
  }
  // A plugin kept across reloads (keepOnReload) runs with its old options until a restart.
  for (const p of plugins) if (p.optionsChanged) restartNeeded.push(`${p.at} (${p.plugin.name})`)

  return {
    next,
    result: { ok: true, changed, restartNeeded },
    // Open sessions keep going; the next hook call sees the new plugins, new work the new config.
    commit: async () => {
      await hooks.replace(plugins)
      relay.config = effective
      relay.loaded = next
      log.level = effective.log.level
      parts.smtp.applyConfig(effective)
      parts.delivery?.applyConfig(effective)
      for (const key of restartNeeded) log.warn({ key }, `config reload: ${key} changed; it takes effect after a restart`)
      log.info({ changed, restartNeeded, plugins: plugins.map((p) => p.plugin.name) }, 'config reloaded')
    },
    // Only what this generation set up: the plugins it kept from the running one stay.
    abort: () => teardownAll(plugins.filter((p) => !hooks.plugins.includes(p)), log),
  }
}

/** A reload refused after it was prepared (an SMTP worker could not take it): logged as any refusal. */
export function refusedReload(log: Logger, why: string): Extract<ReloadResult, { ok: false }> {
  const error = `cannot reload: ${why}`
  log.error(`config reload refused; the running config stays in force: ${error}`)
  return { ok: false, error }
}

function refuse(log: Logger, err: unknown): Extract<ReloadResult, { ok: false }> {
  const error = err instanceof ConfigError ? err.message : `cannot reload: ${errorText(err)}`
  log.error({ issues: err instanceof ConfigError ? err.issues.map(({ path, message }) => ({ path, message })) : undefined }, `config reload refused; the running config stays in force: ${error}`)
  return { ok: false, error }
}
