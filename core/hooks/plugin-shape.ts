// What a plugin object must look like, checked before anything of it runs: a key nothing reads
// (`setpu`), a hook name that is none (`rpct`) or a part of the wrong kind (`options` that is no zod
// schema, `ports: [25]`, `teardown: 5`) would otherwise be silently ignored or fail later with a
// bare TypeError. Each problem carries the code the start and `relay check-config` report it with.
import { EVENT_NAMES, HOOK_NAMES, isHookOrEventName } from './names.js'
import { PLUGIN_ERROR_CODES as CODES, type PluginErrorCode } from './plugin-errors.js'
import type { Plugin } from './types.js'
import { errorText } from '../error-text.js'

/** What a plugin object may hold (types.ts `Plugin`). */
const PLUGIN_KEYS = ['name', 'options', 'setup', 'teardown', 'hooks', 'ports', 'keepOnReload', 'commands', 'doctor'] as const
const FUNCTIONS = ['setup', 'teardown', 'ports', 'commands', 'doctor'] as const

const kindOf = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v)

/**
 * Why the plugin object cannot even be looked at (a getter of `name` that throws, a Proxy whose
 * key listing throws), or undefined: checked before anything reads it, so that such a plugin is a
 * shape error naming it, not a crash of whatever read it first.
 */
export function unreadablePlugin(plugin: unknown): string | undefined {
  if (typeof plugin !== 'object' || plugin === null) return undefined
  try {
    for (const key of Reflect.ownKeys(plugin)) if (key !== 'hooks') void (plugin as Record<PropertyKey, unknown>)[key]
    const hooks = (plugin as { hooks?: unknown }).hooks
    if (typeof hooks === 'object' && hooks !== null) Reflect.ownKeys(hooks)
    return undefined
  } catch (err) {
    return `the plugin object cannot be read: ${errorText(err)}`
  }
}

/** Everything wrong with the shape of `plugin` (an empty list when nothing is). */
export function pluginShapeProblems(plugin: Plugin): { code: PluginErrorCode; message: string }[] {
  const out: { code: PluginErrorCode; message: string }[] = []
  const p = plugin as unknown as Record<string, unknown>
  for (const key of Object.keys(p)) {
    if (!(PLUGIN_KEYS as readonly string[]).includes(key)) out.push({ code: CODES.unknownKey, message: `unknown key '${key}' (a plugin has: ${PLUGIN_KEYS.join(', ')})` })
  }
  const nameProblem = namedBadly(p.name)
  if (nameProblem) out.push({ code: CODES.shape, message: nameProblem })
  if (p.hooks === undefined && p.setup === undefined && p.commands === undefined && p.doctor === undefined) {
    out.push({ code: CODES.shape, message: 'has no hooks, setup, commands or doctor: it would do nothing' })
  }
  const options = p.options as { safeParse?: unknown } | undefined
  if (options !== undefined && (typeof options !== 'object' || options === null || typeof options.safeParse !== 'function')) {
    out.push({ code: CODES.shape, message: `options is ${kindOf(options)}, not a zod schema (z.object({ ... }) with the z that relay-mta exports)` })
  }
  for (const key of FUNCTIONS) if (p[key] !== undefined && typeof p[key] !== 'function') out.push({ code: CODES.shape, message: `${key} is ${kindOf(p[key])}, not a function` })
  if (p.keepOnReload !== undefined && typeof p.keepOnReload !== 'boolean') out.push({ code: CODES.shape, message: `keepOnReload is ${kindOf(p.keepOnReload)}, not true or false` })
  const hooks = p.hooks
  if (hooks !== undefined && (typeof hooks !== 'object' || hooks === null || Array.isArray(hooks))) {
    out.push({ code: CODES.shape, message: `hooks is ${kindOf(hooks)}, not an object of hook functions` })
    return out
  }
  // Only its own keys are read: a Map's entries, or the methods of a class instance (on its
  // prototype), would never be called, and a typo among them never named.
  const proto = hooks === undefined ? null : (Object.getPrototypeOf(hooks) as object | null)
  if (proto !== null && proto !== Object.prototype) {
    const kind = hooks instanceof Map ? 'a Map' : `an instance of ${(proto.constructor as { name?: string } | undefined)?.name || 'a class'}`
    out.push({ code: CODES.shape, message: `hooks is ${kind}, not a plain object of hook functions ({ rcpt(ctx) { … } }: methods on a prototype are not seen)` })
    return out
  }
  // The bus reads a plugin's enumerable string keys: a hook defined otherwise would never be called.
  for (const key of Reflect.ownKeys((hooks ?? {}) as object)) {
    if (typeof key === 'symbol') {
      out.push({ code: CODES.unknownHook, message: `hooks has a symbol key (${String(key)}): hooks are named by strings` })
      continue
    }
    if (!Object.getOwnPropertyDescriptor(hooks, key)?.enumerable) {
      out.push({ code: CODES.shape, message: `hooks.${key} is not enumerable, so it would never be called (define it as a plain property)` })
      continue
    }
    let fn: unknown
    try {
      fn = (hooks as Record<string, unknown>)[key]
    } catch (err) {
      out.push({ code: CODES.shape, message: `hooks.${key} cannot be read: ${errorText(err)}` })
      continue
    }
    if (!isHookOrEventName(key)) out.push({ code: CODES.unknownHook, message: `unknown hook '${key}' (hooks: ${HOOK_NAMES.join(', ')}; events: ${EVENT_NAMES.join(', ')})` })
    else if (fn !== undefined && typeof fn !== 'function') out.push({ code: CODES.shape, message: `hooks.${key} is ${kindOf(fn)}, not a function` })
  }
  return out
}

/** Longest plugin name: it is printed in every line about the plugin. */
const MAX_NAME = 100

/** What is wrong with a plugin's name (it goes into log lines, CLI output and error messages), if anything. */
function namedBadly(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.trim() === '') return 'name must be a non-empty string'
  if (/[\x00-\x1f\x7f-\x9f]/.test(name)) return 'name must not hold control characters (a newline or an ESC would forge lines in the output)'
  if (name.length > MAX_NAME) return `name is ${name.length} characters long; at most ${MAX_NAME}`
  return undefined
}
