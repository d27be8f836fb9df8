// What a plugin's setup returned: its state (ctx.state in hooks), or, in the factory form (as a
// Vite plugin factory makes its hooks), the parts it made there: `{ hooks, events, teardown, state }`.
// Told apart by the keys: a plain object with only those keys and one besides `state` is the
// factory form; anything else is the state, as before.
import { EVENT_NAMES, isHookOrEventName } from './names.js'
import { pluginShapeProblems } from './plugin-shape.js'
import { PLUGIN_ERROR_CODES as CODES, type PluginErrorCode } from './plugin-errors.js'
import type { Plugin } from './types.js'

const FACTORY_KEYS: ReadonlySet<string> = new Set(['hooks', 'events', 'teardown', 'state', 'commands'])
const EVENTS: ReadonlySet<string> = new Set(EVENT_NAMES)

export interface SetupParts {
  hooks?: unknown
  events?: unknown
  teardown?: unknown
  state?: unknown
  commands?: unknown
}

/** The factory form's parts, or undefined when `result` is the plugin's state. */
export function factoryParts(result: unknown): SetupParts | undefined {
  if (typeof result !== 'object' || result === null || Array.isArray(result)) return undefined
  const proto = Object.getPrototypeOf(result) as unknown
  if (proto !== Object.prototype && proto !== null) return undefined
  const keys = Object.keys(result)
  return keys.length > 0 && keys.every((k) => FACTORY_KEYS.has(k)) && keys.some((k) => k !== 'state') ? (result as SetupParts) : undefined
}

type Made = { plugin: Plugin; problem?: undefined } | { problem: { code: PluginErrorCode; message: string } }

const kindOf = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v)
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/**
 * The plugin as its setup made it: the hooks and events setup returned beside the object's own,
 * its teardown; or the first problem (a name that is no hook, one hook in both places), checked as
 * the plugin object itself is (plugin-shape.ts), so a typo stops the start here too.
 */
export function withSetupParts(plugin: Plugin, parts: SetupParts): Made {
  const problem = (message: string, code: PluginErrorCode = CODES.shape): Made => ({ problem: { code, message: `setup returned ${message}` } })
  if (parts.commands !== undefined) return problem('commands: CLI verbs are declared on the plugin object (relay --help lists them without running setup)')
  if (parts.teardown !== undefined && typeof parts.teardown !== 'function') return problem(`teardown that is ${kindOf(parts.teardown)}, not a function`)
  if (parts.teardown !== undefined && plugin.teardown !== undefined) return problem('a teardown, and the plugin object has one too: keep one of them')
  const merged: Record<string, unknown> = { ...plugin.hooks }
  for (const [part, given] of [['hooks', parts.hooks], ['events', parts.events]] as const) {
    if (given === undefined) continue
    if (!isRecord(given)) return problem(`${part} that is ${kindOf(given)}, not an object of ${part === 'hooks' ? 'hook' : 'event'} functions`)
    for (const [name, fn] of Object.entries(given)) {
      if (part === 'events' && !EVENTS.has(name)) {
        return problem(`events.${name}: ${isHookOrEventName(name) ? 'a hook, not an event (return it under hooks)' : 'no such event'} (events: ${EVENT_NAMES.join(', ')})`, CODES.unknownHook)
      }
      if (name in merged) return problem(`${part}.${name}, and the plugin object has hooks.${name} too: keep one of them`)
      merged[name] = fn
    }
  }
  const made = { ...plugin, hooks: merged as Plugin['hooks'], ...(parts.teardown ? { teardown: parts.teardown as Plugin['teardown'] } : {}) }
  const [first] = pluginShapeProblems(made)
  return first ? problem(`${first.message}`, first.code) : { plugin: made }
}
