// A plugin's options and declared ports as the start, a reload, `relay check-config` and `relay
// config show` take them. Both run the plugin's own code (its schema's refinements, its `ports`
// function), which may throw anything or return the wrong thing: that is named as the plugin's
// fault, with a code, instead of a TypeError from the core with a stack.
import { zodIssues } from '../config/load.js'
import { errorText } from '../error-text.js'
import { PLUGIN_ERROR_CODES as CODES, PluginError } from './plugin-errors.js'
import type { Plugin } from './types.js'

/** A port a plugin binds itself (`ports(options)`): `key` names the option that sets it. */
export interface DeclaredPort {
  host: string
  port: number
  key: string
}

/** The options through the plugin's schema (defaults filled in); a PluginError when they fail it, or it throws. */
export function pluginOptions(plugin: Plugin, raw: unknown, named: string, file?: string): unknown {
  if (!plugin.options) return raw
  let parsed: ReturnType<NonNullable<Plugin['options']>['safeParse']>
  try {
    parsed = plugin.options.safeParse(raw)
  } catch (err) {
    throw new PluginError(CODES.options, file, named, `options: the plugin's schema threw: ${errorText(err)}`)
  }
  // A schema-like object that is no zod schema (its own safeParse): named, not a TypeError of the core.
  if (typeof parsed !== 'object' || parsed === null || typeof parsed.success !== 'boolean') {
    throw new PluginError(CODES.options, file, named, `options: the plugin's schema's safeParse returned ${parsed === null ? 'null' : typeof parsed}, not { success, data } (options must be a zod schema)`)
  }
  if (!parsed.success) {
    const issues = (parsed.error as { issues?: unknown } | undefined)?.issues
    if (!Array.isArray(issues)) throw new PluginError(CODES.options, file, named, `options: ${errorText(parsed.error)}`)
    throw new PluginError(CODES.options, file, zodIssues(parsed.error, `${named} options`, raw))
  }
  return parsed.data
}

const isPort = (p: unknown): p is DeclaredPort => {
  const d = p as Partial<DeclaredPort> | null
  return typeof d === 'object' && d !== null && typeof d.host === 'string' && typeof d.key === 'string' && Number.isInteger(d.port) && d.port! >= 0 && d.port! <= 65535
}

/** What `ports(options)` declares; a PluginError when it throws or returns anything but a list of { host, port, key }. */
export function declaredPorts(plugin: Plugin, options: unknown, named: string, file?: string): DeclaredPort[] {
  if (typeof plugin.ports !== 'function') return []
  let list: unknown
  try {
    list = plugin.ports(options)
  } catch (err) {
    throw new PluginError(CODES.ports, file, named, `ports(options) threw: ${errorText(err)}`)
  }
  if (!Array.isArray(list)) throw new PluginError(CODES.ports, file, named, `ports(options) returned ${list === null ? 'null' : typeof list}, not a list of { host, port, key }`)
  const bad = list.findIndex((p) => !isPort(p))
  if (bad >= 0) throw new PluginError(CODES.ports, file, named, `ports(options)[${bad}] is not { host: string, port: 0 to 65535, key: string }`)
  return list as DeclaredPort[]
}
