import path from 'node:path'
import { configSchema, type RelayConfig } from './schema.js'
import { freezeConfig } from './freeze.js'
import { findConfig, searchPlaces, type FoundConfig, type SearchOptions } from './find.js'
import { ConfigSyntaxError } from './syntax.js'
import { zodIssues } from './issues.js'
import { errorText } from '../error-text.js'

export { defaultExport } from './default-export.js'

/** A config that cannot be used; `issues` name each key at fault. The CLI exits with code 2. */
export class ConfigError extends Error {
  constructor(
    readonly file: string | undefined,
    /** `excerpt`: the config's own lines around a syntax error, for the operator's terminal only. */
    readonly issues: { path: string; message: string; excerpt?: string }[],
  ) {
    // The message goes to logs, the admin API and reload-result.json: never the config's text,
    // which holds secrets (tokens, passwords) next to the line at fault.
    super(`invalid config${file ? ` in ${file}` : ''}:\n` + issues.map((i) => `  ${i.path || '(top level)'}: ${i.message}`).join('\n'))
    this.name = 'ConfigError'
  }

  /** The message with the excerpts, for `relay check-config` / `relay start` on a terminal. */
  get terminalText(): string {
    if (!this.issues.some((i) => i.excerpt)) return this.message
    const lines = this.issues.map((i) => `  ${i.path || '(top level)'}: ${i.message}${i.excerpt ? `\n${i.excerpt.replace(/^/gm, '    ')}` : ''}`)
    return `invalid config${this.file ? ` in ${this.file}` : ''}:\n${lines.join('\n')}`
  }
}

export { formatPath, zodIssues } from './issues.js'

/**
 * Validates a raw config object; relative paths (dataDir, the TLS files) are taken from `configDir`.
 * The result is deep-frozen (core/config/freeze.ts): a hot reload makes a new config rather than
 * changing this one.
 */
export function parseConfig(raw: unknown, configDir: string, file?: string): RelayConfig {
  let result: ReturnType<typeof configSchema.safeParse>
  try {
    result = configSchema.safeParse(raw ?? {})
  } catch (err) {
    // A getter or Proxy in a config module that throws when read.
    throw new ConfigError(file, [{ path: '', message: `the config cannot be read: ${errorText(err)}` }])
  }
  if (!result.success) throw new ConfigError(file, zodIssues(result.error, '', raw ?? {}))
  const at = (p: string) => path.resolve(configDir, p)
  const tls = result.data.tls && {
    ...result.data.tls,
    cert: at(result.data.tls.cert),
    key: at(result.data.tls.key),
    sni: Object.fromEntries(Object.entries(result.data.tls.sni).map(([name, pair]) => [name, { cert: at(pair.cert), key: at(pair.key) }])),
  }
  return freezeConfig({ ...result.data, tls, dataDir: at(result.data.dataDir), configDir, configFile: file })
}

/**
 * Loads the config: `file` (--config), else $RELAY_CONFIG, else searched in the current directory
 * (cosmiconfig, module name `relay`: relay.config.ts/.js/.json/.yaml, .relayrc*, package.json
 * "relay"), else in /etc/relay/. None found: the defaults (`configFile` undefined).
 */
export async function loadConfig(file?: string, opts: SearchOptions = {}): Promise<RelayConfig> {
  const found = await loadRawConfig(file, opts)
  if (!found) return parseConfig({}, process.cwd())
  return parseConfig(found.config, path.dirname(found.filepath), found.filepath)
}

/** As loadConfig, but no config file found is a ConfigError that says where it looked. */
export async function requireConfig(file?: string, opts: SearchOptions = {}): Promise<RelayConfig> {
  const config = await loadConfig(file, opts)
  if (!config.configFile) throw noConfigError(opts)
  return config
}

/** "no config file found", with the places looked in. */
export function noConfigError(opts: SearchOptions = {}): ConfigError {
  const looked = searchPlaces(undefined, process.env, process.cwd(), opts).map((p) => `  ${p}`).join('\n')
  const err = new ConfigError(undefined, [{ path: '', message: 'no config file found' }])
  err.message = `no config file found; looked in:\n${looked}\ngive one with --config <file> or RELAY_CONFIG=<file>`
  return err
}

/**
 * The config file as written, not validated (`relay reload` finds the running relay's data
 * directory with it even when the edited config is invalid); null when none was found.
 */
export async function loadRawConfig(file?: string, opts: SearchOptions = {}): Promise<FoundConfig | null> {
  try {
    return await findConfig(file, process.env, process.cwd(), opts)
  } catch (err) {
    const named = file ?? (process.env.RELAY_CONFIG || undefined)
    const where = (err as { filepath?: string }).filepath ?? (named ? path.resolve(named) : undefined)
    if (err instanceof ConfigSyntaxError) {
      // The file at fault: the config, or a module it imports (named relative to the config's directory).
      const at = err.file && err.file !== where ? (where ? path.relative(path.dirname(where), err.file) : err.file) : where && path.basename(where)
      // Logs and the admin API get the reason with quoted text masked (a token, a password); the
      // terminal gets it whole, with the lines around it (secret values starred out: syntax.ts).
      const masked = err.message.replace(/"[^"\n]{4,}"|'[^'\n]{4,}'|`[^`\n]{4,}`/g, '"…"')
      const excerpt = [masked === err.message ? '' : err.reason, err.snippet].filter(Boolean).join('\n') || undefined
      throw new ConfigError(where, [{ path: at ? `${at}:${err.line}:${err.column}` : '', message: `cannot load config: ${masked}`, excerpt }])
    }
    if ((err as { unsafe?: boolean }).unsafe) throw new ConfigError(where, [{ path: '', message: (err as Error).message }])
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && named) {
      throw new ConfigError(where, [{ path: '', message: `config file not found: ${where}${file ? '' : ' (from $RELAY_CONFIG)'}` }])
    }
    throw new ConfigError(where, [{ path: '', message: `cannot load config: ${errorText(err)}` }])
  }
}
