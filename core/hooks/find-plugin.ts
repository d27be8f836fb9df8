// Where a plugin named in the config comes from: the repo's plugins/<name>, an npm package
// `relay-plugin-<name>` (or a scoped one) installed where the config is, or a path.
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { ConfigError, defaultExport } from '../config/load.js'
import { ConfigSyntaxError } from '../config/syntax.js'
import { resolveRelayMtaImports } from '../config/relay-mta-imports.js'
import { DEFAULT_SETUP_TIMEOUT } from '../config/schema.js'
import { importModule } from './import-module.js'
import { unreadablePlugin } from './plugin-shape.js'
import { PLUGIN_ERROR_CODES as CODES, PluginError } from './plugin-errors.js'
import type { Plugin } from './types.js'
import { errorText } from '../error-text.js'
import { within } from '../within.js'

// The repo's own plugins sit beside core/ (as .ts under tsx/vitest, .js once built to dist/).
const BUNDLED_DIR = fileURLToPath(new URL('../../plugins/', import.meta.url))

function bundledPluginFile(name: string): string | undefined {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) return undefined
  for (const ext of ['.js', '.ts']) {
    const file = path.join(BUNDLED_DIR, name, `index${ext}`)
    if (fs.existsSync(file)) return file
  }
  return undefined
}

/** Finds a plugin by name: plugins/<name>, then npm `relay-plugin-<name>`, then a path. */
export async function resolvePlugin(ref: string, configDir: string, at: string, file?: string, timeoutMs = DEFAULT_SETUP_TIMEOUT): Promise<Plugin> {
  let mod: unknown
  const isPath = ref.startsWith('.') || path.isAbsolute(ref)
  const bundled = isPath ? undefined : bundledPluginFile(ref)
  // A module whose top-level await never settles would hang the start with no word (or, with
  // nothing else pending, end it with exit 0): its load counts against setupTimeout.
  // At least a second: a module takes some milliseconds to load even when nothing is wrong.
  const limit = Math.max(timeoutMs, 1000)
  const importFile = (target: string, own?: boolean) =>
    within(importModule(target, own), limit, () =>
      new PluginError(CODES.load, file, at, `cannot load plugin '${ref}': its module did not finish loading within ${limit} ms (config setupTimeout): a top-level await that never settles?`),
    )
  try {
    if (bundled) mod = await importFile(bundled)
    else if (isPath) mod = await importFile(path.resolve(configDir, ref), true)
    else {
      const pkg = ref.startsWith('relay-plugin-') || ref.startsWith('@') ? ref : `relay-plugin-${ref}`
      const entry = packageEntry(pkg, configDir)
      if (!entry) throw new PluginError(CODES.load, file, at, `unknown plugin '${ref}': not in plugins/, no npm package '${pkg}' installed, and not a path (start paths with ./ or /)`)
      // Its `import 'relay-mta'` is this Relay (docs/plugins.md), as for a plugin named by its path.
      resolveRelayMtaImports()
      mod = await importFile(entry)
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err
    if (err instanceof ConfigSyntaxError) {
      const where = err.file ? path.relative(configDir, err.file) || err.file : ref
      throw new PluginError(CODES.load, file, at, `cannot load plugin '${ref}': ${err.format} syntax error at ${where}:${err.line}:${err.column}: ${err.reason}`)
    }
    throw new PluginError(CODES.load, file, at, `cannot load plugin '${ref}': ${errorText(err)}`)
  }
  const plugin = defaultExport(mod)
  const unreadable = unreadablePlugin(plugin)
  if (unreadable) throw new PluginError(CODES.shape, file, at, unreadable)
  if (!isPlugin(plugin)) throw new PluginError(CODES.shape, file, at, `'${ref}' does not export a plugin (export default definePlugin({ name, hooks }))`)
  return plugin
}

/** An object with a name: what else is wrong with it (a `hook` for `hooks`) plugin-shape.ts names. */
export function isPlugin(v: unknown): v is Plugin {
  return typeof v === 'object' && v !== null && typeof (v as Plugin).name === 'string'
}


/**
 * The file `import(pkg)` loads for a package installed where the config is. require.resolve finds
 * most; a package whose `exports` name only an `import` condition (ESM only) it does not, so
 * those are read here with the conditions of an ES import.
 */
function packageEntry(pkg: string, configDir: string): string | undefined {
  const require = createRequire(path.join(configDir, 'relay.config.js'))
  try {
    return require.resolve(pkg)
  } catch {
    // not found by CommonJS rules: an ESM-only package, or none
  }
  for (const dir of require.resolve.paths(pkg) ?? []) {
    const root = path.join(dir, pkg)
    let manifest: { exports?: unknown }
    try {
      manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { exports?: unknown }
    } catch {
      continue
    }
    const target = exportTarget(manifest.exports)
    const file = target?.startsWith('./') ? path.resolve(root, target) : undefined
    return file && fs.existsSync(file) ? file : undefined
  }
  return undefined
}

/** The conditions Node matches for an ES import, in `exports` key order. */
const IMPORT_CONDITIONS = new Set(['node', 'import', 'module-sync', 'default'])

/** What a package's `exports` give for `.` to an ES import (Node's rules: first matching key wins). */
function exportTarget(exports: unknown): string | undefined {
  if (typeof exports === 'string') return exports
  if (Array.isArray(exports)) return exports.map(exportTarget).find((t) => t !== undefined)
  if (typeof exports !== 'object' || exports === null) return undefined
  const map = exports as Record<string, unknown>
  if (Object.keys(map).some((k) => k.startsWith('.'))) return exportTarget(map['.'])
  for (const [condition, target] of Object.entries(map)) {
    if (!IMPORT_CONDITIONS.has(condition)) continue
    const found = exportTarget(target)
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * Entries that are different plugins (another file or package) under one name: log lines, events
 * and a reload's matching could not tell them apart. The same plugin twice (two webhooks) is fine.
 */
export function sameNameWarnings(entries: readonly { at: string; name: string; source: string }[]): { path: string; message: string }[] {
  return entries.flatMap((e, i) => {
    const first = entries.find((o, j) => j < i && o.name === e.name && o.source !== e.source)
    return first ? [{ path: e.at, message: `plugin '${e.name}' (${e.source || 'an object in the config'}) has the name of ${first.at} (${first.source || 'an object in the config'}), another plugin: log lines and events cannot tell them apart; rename one` }] : []
  })
}
