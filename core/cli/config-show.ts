import { loadConfig, parseConfig } from '../config/load.js'
import { redactConfig } from '../config/redact.js'
import type { RelayConfig } from '../config/schema.js'
import { resolvePlugin } from '../hooks/find-plugin.js'
import { pluginOptions } from '../hooks/plugin-options.js'
import type { Plugin } from '../hooks/types.js'

export interface ConfigShowOptions {
  config?: string
  json?: boolean
  /** Only what differs from the defaults (postconf -n). */
  changed?: boolean
  /** The defaults alone, as an empty config gives them (postconf -d). */
  defaults?: boolean
}

/**
 * The plugins as `{ plugin, options }`, options with the plugin's defaults filled in when its
 * schema accepts them (else as written: `relay check-config` says what is wrong).
 */
async function effectivePlugins(config: RelayConfig, problems: string[] = []): Promise<unknown[]> {
  const out: unknown[] = []
  for (const [i, entry] of config.plugins.entries()) {
    const [ref, raw] = Array.isArray(entry) ? entry : [entry, undefined]
    const name = typeof ref === 'string' ? ref : `<plugin object '${(ref as { name: string }).name}'>`
    let options: unknown = raw ?? {}
    try {
      const plugin = typeof ref === 'string' ? await resolvePlugin(ref, config.configDir, `plugins[${i}]`, config.configFile, config.setupTimeout) : ref
      options = pluginOptions(plugin as Plugin, options, `plugins[${i}] (${name})`)
    } catch (err) {
      // Unloadable, or options its schema refuses: shown as written, and said on stderr (exit 2).
      const issues = (err as { issues?: { path: string; message: string }[] }).issues
      if (issues?.length) for (const issue of issues) problems.push(`${issue.path}: ${issue.message}`)
      else problems.push(`plugins[${i}] (${name}): ${(err as Error).message}`)
    }
    out.push({ plugin: name, options })
  }
  return out
}

/** Settings as `key = value` lines: dotted keys, [i] for list items, values as JSON. */
function flatten(value: unknown, prefix: string, out: Map<string, string>): Map<string, string> {
  const isLeaf = value === null || typeof value !== 'object' || Object.keys(value).length === 0
  if (isLeaf) {
    out.set(prefix, JSON.stringify(value) ?? 'undefined')
    return out
  }
  for (const [k, v] of Object.entries(value)) {
    if (v === undefined) continue
    flatten(v, Array.isArray(value) ? `${prefix}[${k}]` : prefix ? `${prefix}.${k}` : k, out)
  }
  return out
}

/** The config as shown: plain data, plugins with their options, secrets redacted, no bookkeeping keys. */
async function shown(config: RelayConfig, problems?: string[]): Promise<Record<string, unknown>> {
  const { configDir: _dir, configFile: _file, ...settings } = config
  return redactConfig({ ...settings, plugins: await effectivePlugins(config, problems) }) as Record<string, unknown>
}

/** A plugin that cannot be loaded or whose options are refused: the config is not valid (exit 2, as check-config). */
function sayProblems(problems: string[]): void {
  for (const p of problems) process.stderr.write(`relay: ${p} (shown as written; relay check-config lists every problem)\n`.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?'))
  if (problems.length) process.exitCode = 2
}

/**
 * `relay config show`: the effective config with every default filled in and secrets redacted, as
 * `key = value` lines (like `postconf`) or `--json`. Durations are in milliseconds, sizes in bytes.
 */
export async function configShow(opts: ConfigShowOptions): Promise<void> {
  const config = await loadConfig(opts.config)
  const defaults = parseConfig({}, config.configDir)
  const problems: string[] = []
  const settings = await shown(opts.defaults ? defaults : config, problems)
  let entries = flatten(settings, '', new Map())
  if (opts.changed && !opts.defaults) {
    const base = flatten(await shown(defaults), '', new Map())
    // A list that differs is shown whole (`listen[0]` as well as the added `listen[1]`).
    const listOf = (k: string) => (k.includes('[') ? k.slice(0, k.indexOf('[')) : undefined)
    const changedLists = new Set([...entries].filter(([k, v]) => base.get(k) !== v).map(([k]) => listOf(k)))
    for (const k of base.keys()) if (!entries.has(k)) changedLists.add(listOf(k))
    entries = new Map([...entries].filter(([k, v]) => base.get(k) !== v || (listOf(k) !== undefined && changedLists.has(listOf(k)))))
  }
  if (opts.json) {
    const body = opts.changed && !opts.defaults ? Object.fromEntries([...entries].map(([k, v]) => [k, JSON.parse(v) as unknown])) : settings
    process.stdout.write(JSON.stringify({ configFile: config.configFile ?? null, ...body }, null, 2) + '\n')
    return sayProblems(problems)
  }
  const source = opts.defaults ? 'defaults' : config.configFile ? `config file ${config.configFile}` : 'no config file found: defaults'
  const lines = [`# ${source}; durations in ms, sizes in bytes`]
  for (const [k, v] of entries) lines.push(`${k} = ${v}`)
  process.stdout.write(lines.join('\n') + '\n')
  sayProblems(problems)
}
