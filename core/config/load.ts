import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { cosmiconfig, getDefaultSearchPlaces, type Loader } from 'cosmiconfig'
import type { z } from 'zod'
import { configSchema, type RelayConfig } from './schema.js'
import { freezeConfig } from './freeze.js'

/** A config that cannot be used; `issues` name each key at fault. The CLI exits with code 2. */
export class ConfigError extends Error {
  constructor(
    readonly file: string | undefined,
    readonly issues: { path: string; message: string }[],
  ) {
    super(`invalid config${file ? ` in ${file}` : ''}:\n` + issues.map((i) => `  ${i.path || '(top level)'}: ${i.message}`).join('\n'))
    this.name = 'ConfigError'
  }
}

/** Formats a zod error path as `delivery.retry.base` or `plugins[0]`. */
export function formatPath(segments: readonly PropertyKey[]): string {
  return segments
    .map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? String(s) : `.${String(s)}`))
    .join('')
}

export function zodIssues(error: z.ZodError, prefix = ''): { path: string; message: string }[] {
  const join = (p: string) => prefix + (prefix && p && !p.startsWith('[') ? '.' : '') + p
  return error.issues.flatMap((issue) =>
    // An unknown key is named by its own path (`delivery.retyr`), so a typo is easy to spot.
    issue.code === 'unrecognized_keys'
      ? issue.keys.map((k) => ({ path: join(formatPath([...issue.path, k])), message: 'unknown key (misspelt, or not a setting of this section)' }))
      : [{ path: join(formatPath(issue.path)), message: issue.message }],
  )
}

/**
 * A module's default export. A .ts file outside a `"type": "module"` package is compiled as
 * CommonJS by tsx, and its `export default` then arrives one level deeper (`default.default`).
 */
export function defaultExport(mod: unknown): unknown {
  const value = (mod as { default?: unknown } | null)?.default ?? mod
  if (value && typeof value === 'object' && (value as { __esModule?: unknown }).__esModule === true && 'default' in value) {
    return (value as { default: unknown }).default
  }
  return value
}

// TypeScript configs load through tsx (cosmiconfig's own .ts loader needs Node 22 or the TS API).
const loadTs: Loader = async (filepath) => {
  const { tsImport } = await import('tsx/esm/api')
  return defaultExport(await tsImport(pathToFileURL(filepath).href, import.meta.url))
}
// A query makes each load a fresh module: a hot reload (core/reload.ts) must see the file as it is now.
let loads = 0
const loadEsm: Loader = async (filepath) => {
  const mod = (await import(`${pathToFileURL(filepath).href}?load=${++loads}`)) as { default?: unknown }
  return mod.default ?? mod
}

const explorer = cosmiconfig('relay', {
  loaders: { '.ts': loadTs, '.mts': loadTs, '.js': loadEsm, '.mjs': loadEsm },
  // cosmiconfig's defaults lack relay.config.json/.yaml/.yml, which the docs promise.
  searchPlaces: [...getDefaultSearchPlaces('relay'), 'relay.config.json', 'relay.config.yaml', 'relay.config.yml'],
  searchStrategy: 'none',
  // Hot reload reads the file again: no cached result.
  cache: false,
})

/**
 * Validates a raw config object; relative paths are taken from `configDir`. The result is deep-frozen
 * (core/config/freeze.ts): a hot reload makes a new config rather than changing this one.
 */
export function parseConfig(raw: unknown, configDir: string, file?: string): RelayConfig {
  const result = configSchema.safeParse(raw ?? {})
  if (!result.success) throw new ConfigError(file, zodIssues(result.error))
  return freezeConfig({ ...result.data, dataDir: path.resolve(configDir, result.data.dataDir), configDir, configFile: file })
}

/**
 * Loads the config: from `file` when given, else searched by cosmiconfig (module name `relay`:
 * relay.config.ts/.js/.json/.yaml, .relayrc*, package.json "relay") from the current directory.
 */
export async function loadConfig(file?: string): Promise<RelayConfig> {
  const found = await loadRawConfig(file)
  if (!found) return parseConfig({}, process.cwd())
  return parseConfig(found.config, path.dirname(found.filepath), found.filepath)
}

/**
 * The config file as written, not validated (`relay reload` finds the running relay's data
 * directory with it even when the edited config is invalid); null when none was found.
 */
export async function loadRawConfig(file?: string): Promise<{ config: unknown; filepath: string } | null> {
  let found: { config: unknown; filepath: string } | null
  try {
    found = file ? await explorer.load(path.resolve(file)) : await explorer.search(process.cwd())
  } catch (err) {
    const message = (err as Error).message.split('\n')[0] ?? String(err)
    const where = file ? path.resolve(file) : undefined
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ConfigError(where, [{ path: '', message: `config file not found: ${where}` }])
    throw new ConfigError(where, [{ path: '', message: `cannot load config: ${message}` }])
  }
  return found
}
