import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { ConfigError, defaultExport, zodIssues } from '../config/load.js'
import type { RelayConfig } from '../config/schema.js'
import type { Plugin, PluginContext } from './types.js'
import type { LoadedPlugin } from './bus.js'

// The repo's own plugins sit beside core/ (as .ts under tsx/vitest, .js once built to dist/).
const BUNDLED_DIR = fileURLToPath(new URL('../../plugins/', import.meta.url))

async function importFile(file: string): Promise<unknown> {
  if (/\.[mc]?ts$/.test(file)) {
    const { tsImport } = await import('tsx/esm/api')
    return tsImport(pathToFileURL(file).href, import.meta.url)
  }
  return import(pathToFileURL(file).href)
}

function bundledPluginFile(name: string): string | undefined {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) return undefined
  for (const ext of ['.js', '.ts']) {
    const file = path.join(BUNDLED_DIR, name, `index${ext}`)
    if (fs.existsSync(file)) return file
  }
  return undefined
}

/** Finds a plugin by name: plugins/<name>, then npm `relay-plugin-<name>`, then a path. */
async function resolvePlugin(ref: string, configDir: string, at: string, file?: string): Promise<Plugin> {
  let mod: unknown
  const isPath = ref.startsWith('.') || path.isAbsolute(ref)
  const bundled = isPath ? undefined : bundledPluginFile(ref)
  try {
    if (bundled) mod = await importFile(bundled)
    else if (isPath) mod = await importFile(path.resolve(configDir, ref))
    else {
      const pkg = ref.startsWith('relay-plugin-') || ref.startsWith('@') ? ref : `relay-plugin-${ref}`
      const require = createRequire(path.join(configDir, 'relay.config.js'))
      let entry: string
      try {
        entry = require.resolve(pkg)
      } catch {
        throw new ConfigError(file, [{ path: at, message: `unknown plugin '${ref}': not in plugins/, no npm package '${pkg}' installed, and not a path (start paths with ./ or /)` }])
      }
      mod = await importFile(entry)
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err
    throw new ConfigError(file, [{ path: at, message: `cannot load plugin '${ref}': ${(err as Error).message.split('\n')[0]}` }])
  }
  const plugin = defaultExport(mod)
  if (!isPlugin(plugin)) throw new ConfigError(file, [{ path: at, message: `'${ref}' does not export a plugin (export default definePlugin({ name, hooks }))` }])
  return plugin
}

function isPlugin(v: unknown): v is Plugin {
  return typeof v === 'object' && v !== null && typeof (v as Plugin).name === 'string' && typeof (v as Plugin).hooks === 'object'
}

export interface PluginEnv {
  config: RelayConfig
  logger: Logger
  resolver: Resolver
}

/** Loads the config's plugins in order, validates their options and runs their setup. */
export async function loadPlugins({ config, logger, resolver }: PluginEnv): Promise<LoadedPlugin[]> {
  const local = new Set(config.localDomains)
  const loaded: LoadedPlugin[] = []
  try {
    await loadEach(config, logger, resolver, local, loaded)
  } catch (err) {
    // Those set up already let go of what they hold (a hot reload that fails leaves nothing open).
    for (const p of [...loaded].reverse()) {
      try {
        await p.teardown?.()
      } catch (e) {
        logger.error({ err: e }, `plugin ${p.plugin.name} failed at shutdown`)
      }
    }
    throw err
  }
  return loaded
}

async function loadEach(config: RelayConfig, logger: Logger, resolver: Resolver, local: Set<string>, loaded: LoadedPlugin[]): Promise<void> {
  for (const [index, entry] of config.plugins.entries()) {
    const at = `plugins[${index}]`
    const [ref, rawOptions] = Array.isArray(entry) ? entry : [entry, undefined]
    const plugin = typeof ref === 'string' ? await resolvePlugin(ref, config.configDir, at, config.configFile) : ref
    let options: unknown = rawOptions ?? {}
    if (plugin.options) {
      const parsed = plugin.options.safeParse(options)
      if (!parsed.success) throw new ConfigError(config.configFile, zodIssues(parsed.error, `${at} (${plugin.name}) options`))
      options = parsed.data
    }
    const ctx: PluginContext<unknown> = {
      log: logger.child({ plugin: plugin.name }),
      options,
      resolver,
      hostname: config.hostname,
      isLocalDomain: (d) => local.has(d.toLowerCase()),
    }
    const teardown = await plugin.setup?.({ ...ctx, dataDir: config.dataDir })
    loaded.push({ plugin, ctx, teardown: typeof teardown === 'function' ? teardown : undefined })
  }
}
