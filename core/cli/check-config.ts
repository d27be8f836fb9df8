import path from 'node:path'
import { ConfigError, loadRawConfig, parseConfig } from '../config/load.js'
import { checkConfigPaths } from '../config/check-paths.js'
import { configWarnings } from '../config/warnings.js'
import type { RelayConfig } from '../config/schema.js'
import { pluginShapeProblems, unreadablePlugin } from '../hooks/plugin-shape.js'
import { resolvePlugin, sameNameWarnings } from '../hooks/find-plugin.js'
import { workerCount, workerShare } from '../workers/share.js'
import { PLUGIN_ERROR_CODES, PluginError } from '../hooks/plugin-errors.js'
import type { Plugin } from '../hooks/types.js'
import { hostPortText } from '../net/host-port.js'
import { errorText } from '../error-text.js'
import { declaredPorts, pluginOptions } from '../hooks/plugin-options.js'

type Issue = { path: string; message: string; excerpt?: string }

/**
 * Each plugin entry's problems: the plugin cannot be loaded, names an unknown hook, or its options
 * fail its schema. Checked whatever the core settings' own problems, so one run lists them all.
 */
async function pluginIssues(raw: unknown, configDir: string, file: string | undefined, timeoutMs: number | undefined, found: { at: string; name: string; source: string }[]): Promise<Issue[]> {
  const entries = (raw as { plugins?: unknown } | null)?.plugins
  if (!Array.isArray(entries)) return []
  const issues: Issue[] = []
  for (const [i, entry] of entries.entries()) {
    const at = `plugins[${i}]`
    const [ref, options] = (Array.isArray(entry) ? entry : [entry, undefined]) as [unknown, unknown]
    let plugin: Plugin
    try {
      const unreadable = typeof ref === 'string' ? undefined : unreadablePlugin(ref)
      if (unreadable) throw new PluginError(PLUGIN_ERROR_CODES.shape, file, at, unreadable)
      if (typeof ref === 'string') plugin = await resolvePlugin(ref, configDir, at, file, timeoutMs)
      else if (ref && typeof ref === 'object' && typeof (ref as Plugin).name === 'string') plugin = ref as Plugin
      else continue // the core schema names it
    } catch (err) {
      issues.push(...(err instanceof ConfigError ? err.issues : [{ path: at, message: errorText(err) }]))
      continue
    }
    const named = `${at} (${plugin.name})`
    found.push({ at, name: plugin.name, source: typeof ref !== 'string' ? '' : ref.startsWith('.') || path.isAbsolute(ref) ? path.resolve(configDir, ref) : ref })
    const shape = pluginShapeProblems(plugin)
    for (const { code, message } of shape) issues.push(...new PluginError(code, file, named, message).issues)
    if (shape.length) continue // its options may not even be a schema
    try {
      declaredPorts(plugin, pluginOptions(plugin, options ?? {}, named, file), named, file)
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      issues.push(...err.issues)
    }
  }
  return issues
}

/** Other settings are invalid: the paths alone (when they are valid), so their problems are listed too. */
function pathsAlone(raw: unknown, configDir: string, file?: string): RelayConfig | undefined {
  const r = (raw ?? {}) as { tls?: unknown; dataDir?: unknown; delivery?: { tlsCa?: unknown } }
  // The paths that are valid, as many as can be: a wrong tls.sni must not hide a missing tls.cert.
  // (Read inside the try: a getter in the config may throw; the core schema names that.)
  const tls = () => (r.tls && typeof r.tls === 'object' ? (r.tls as Record<string, unknown>) : undefined)
  const pair = () => {
    const t = tls()
    return t && { cert: t.cert, key: t.key }
  }
  const tries = [
    () => ({ tls: r.tls, dataDir: r.dataDir, delivery: { tlsCa: r.delivery?.tlsCa } }),
    () => ({ tls: pair(), dataDir: r.dataDir, delivery: { tlsCa: r.delivery?.tlsCa } }),
    () => ({ tls: pair() }),
    () => ({ dataDir: r.dataDir, delivery: { tlsCa: r.delivery?.tlsCa } }),
  ]
  for (const t of tries) {
    try {
      return parseConfig(t(), configDir, file)
    } catch {
      // the next, with less in it
    }
  }
  return undefined
}

/**
 * `relay check-config`: the config as `relay start` would take it, without starting. Every problem
 * at once: core settings, each plugin's options, and the files and directories named (TLS
 * certificates and keys readable and matching, data directory writable); then the plugins' setup in
 * 'check' mode. Ends with a verdict: `config ok …` (exit 0), or the problems (exit 2, main.ts).
 */
export async function checkConfig(opts: { config?: string }): Promise<void> {
  const stray = strayErrors()
  const found = await loadRawConfig(opts.config)
  const file = found?.filepath
  const configDir = file ? path.dirname(file) : process.cwd()
  const issues: Issue[] = []
  let config: RelayConfig | undefined
  try {
    config = parseConfig(found?.config ?? {}, configDir, file)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    issues.push(...err.issues)
  }
  const resolved: { at: string; name: string; source: string }[] = []
  issues.push(...(await pluginIssues(found?.config, configDir, file, config?.setupTimeout, resolved)))
  const paths = config ?? pathsAlone(found?.config, configDir, file)
  if (paths) issues.push(...checkConfigPaths(paths))
  if (issues.length || !config) throw new ConfigError(file, issues)

  const { loadPlugins, runsInWorkers, handlePluginCall, teardownAll } = await import('../hooks/load-plugins.js')
  const { createResolver } = await import('../dns/resolver.js')
  const pino = (await import('pino')).default
  const env = { config, logger: pino({ level: 'silent' }), resolver: createResolver(config), mode: 'check' as const }
  const workers = workerCount(config)
  const plugins = await loadPlugins({ ...env, process: { role: workers > 1 ? 'primary' : 'single' } })
  // With `workers`, the plugins with session hooks are set up again in each SMTP worker, where a
  // setup may do otherwise (ctx.processes.role): checked here as a worker sets them up.
  if (workers > 1) {
    try {
      const inWorker = await loadPlugins({
        ...env, config: workerShare(config, workers), only: runsInWorkers,
        process: { role: 'worker', callPrimary: async (at, method, args) => handlePluginCall(plugins, at, method, args) },
      })
      await teardownAll(inWorker, env.logger)
    } catch (err) {
      await teardownAll(plugins, env.logger)
      if (!(err instanceof ConfigError)) throw err
      const issues = err.issues.map((i) => ({ ...i, message: `${i.message} (as an SMTP worker sets it up: config workers ${config.workers})` }))
      throw Object.assign(new ConfigError(err.file, issues), { name: err.name, code: (err as { code?: string }).code })
    }
  }
  // What a setup threw from a timer or a promise it did not await: a failure as a rejection is.
  if (stray.errors.length) {
    await teardownAll(plugins, env.logger)
    const message = `an error thrown outside any setup's promise (a timer, a promise not awaited) while the plugins were set up: ${stray.errors.map(errorText).join('; ')}`
    throw new PluginError(PLUGIN_ERROR_CODES.setup, file, 'plugins', message)
  }
  stray.verdict()
  process.stdout.write(
    `config ok${config.configFile ? `: ${config.configFile}` : ' (defaults, no config file found)'}\n` +
      `  hostname ${config.hostname}\n` +
      config.listen.map((l) => `  listen ${hostPortText(l.host, l.port)} (${l.role}, tls ${l.tls ?? (config.tls ? 'starttls' : 'none')}${l.auth ? '' : ', no AUTH'})\n`).join('') +
      `  localDomains ${config.localDomains.join(', ') || '(none)'}\n` +
      `  dataDir ${config.dataDir}\n` +
      (config.tls ? `  tls ${config.tls.cert} (key ${config.tls.key}): readable, a matching pair\n` : '') +
      `  plugins ${plugins.map((p) => p.plugin.name).join(', ') || '(none)'}\n`,
  )
  // A teardown that throws or hangs (bounded: loaded-plugin teardowns give up after setupTimeout)
  // is a warning about the plugin, not a failure of the check whose verdict is printed.
  for (const w of [...configWarnings(config), ...sameNameWarnings(resolved)]) process.stderr.write(`relay: warning: ${w.path}: ${w.message}\n`)
  // Last plugin first, as at a stop.
  for (const p of [...plugins].reverse()) {
    try {
      await p.teardown?.()
    } catch (err) {
      process.stderr.write(`relay: warning: ${p.at} (${p.plugin.name}) teardown failed: ${errorText(err)}\n`.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?'))
    }
  }
  // A verdict was printed: exit even if a plugin left a timer or socket open.
  process.exit(0)
}

/**
 * Errors no promise of the check catches (a plugin's timer that throws during its setup), kept to be
 * reported as a problem, not a crash with a bare stack; and a process.exit() from a plugin before
 * the verdict is printed said as such, with exit 2, not a silent exit 0.
 */
function strayErrors(): { errors: unknown[]; verdict(): void } {
  const errors: unknown[] = []
  const keep = (err: unknown) => void errors.push(err)
  process.on('uncaughtException', keep)
  process.on('unhandledRejection', keep)
  let printed = false
  process.on('exit', (code) => {
    if (printed || code !== 0) return
    process.stderr.write('relay: check-config: the process was ended before a verdict (a plugin called process.exit()?)\n')
    process.exitCode = 2
  })
  return { errors, verdict: () => void (printed = true) }
}
