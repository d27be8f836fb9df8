// Plugin failures at load and setup: each names the plugin by its place in the config and its
// name (`plugins[2] (my-plugin) setup: …`) and carries a stable code for scripts and docs.
import { ConfigError } from '../config/load.js'

export const PLUGIN_ERROR_CODES = Object.freeze({
  /** The plugin cannot be found or imported. */
  load: 'RELAY_ERR_PLUGIN_LOAD',
  /** The module's default export is not a plugin object. */
  shape: 'RELAY_ERR_PLUGIN_SHAPE',
  /** A key of `hooks` is neither a hook nor an event name (a typo such as `rpct`). */
  unknownHook: 'RELAY_ERR_UNKNOWN_HOOK',
  /** A key of the plugin object is none of a plugin's (a typo such as `setpu`, or `hook` for `hooks`). */
  unknownKey: 'RELAY_ERR_UNKNOWN_PLUGIN_KEY',
  /** The options fail the plugin's schema. */
  options: 'RELAY_ERR_PLUGIN_OPTIONS',
  /** `ports(options)` threw, or returned something that is not a list of { host, port, key }. */
  ports: 'RELAY_ERR_PLUGIN_PORTS',
  /** `setup` threw or rejected. */
  setup: 'RELAY_ERR_PLUGIN_SETUP',
  /** `setup` did not finish within config `setupTimeout`. */
  setupTimeout: 'RELAY_ERR_PLUGIN_SETUP_TIMEOUT',
} as const)
export type PluginErrorCode = (typeof PLUGIN_ERROR_CODES)[keyof typeof PLUGIN_ERROR_CODES]

/** A ConfigError (the CLI exits 2) with a code; `at` is `plugins[2] (my-plugin)` or `plugins[2]`. */
export class PluginError extends ConfigError {
  constructor(
    readonly code: PluginErrorCode,
    file: string | undefined,
    at: string | { path: string; message: string }[],
    message = '',
  ) {
    const issues = typeof at === 'string' ? [{ path: at, message }] : at
    super(file, issues.map((i) => ({ path: i.path, message: `${i.message} [${code}]` })))
    this.name = 'PluginError'
  }
}
