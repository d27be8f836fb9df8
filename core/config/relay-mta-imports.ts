// A TypeScript or JavaScript config anywhere (/etc/relay/relay.config.ts) imports `relay-mta` and
// `relay-mta/testing`: they resolve to the Relay that loads the config, wherever it is installed
// (globally, as a dependency, or this checkout), not from the config file's directory, which has
// no node_modules. One copy of the core, the same version that validates the config.
import module from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** The query a config file is imported with: its module is always ESM (see the load hook). */
export const CONFIG_MARK = 'relay-config'

/** This installation's entry points: .ts when run from source (tsx, vitest), .js once built. */
export function relayMtaEntries(): Record<string, string> {
  const ext = path.extname(fileURLToPath(import.meta.url)) === '.ts' ? '.ts' : '.js'
  return {
    'relay-mta': new URL(`../index${ext}`, import.meta.url).href,
    'relay-mta/testing': new URL(`../../testing/index${ext}`, import.meta.url).href,
  }
}

// Runs in Node's module hooks thread (module.register), so it is plain JavaScript with no imports.
// The config file itself is loaded as ESM even outside a "type": "module" package, where tsx would
// compile it to CommonJS: a CommonJS `require('relay-mta')` would bypass these hooks (and cannot
// load the ESM core on Node 20).
const HOOKS = `
let entries = {}
export function initialize(data) { entries = data.entries }
const marked = (url) => { try { return new URL(url).searchParams.has(${JSON.stringify(CONFIG_MARK)}) } catch { return false } }
// tsx (whose hooks run before these) compiles 'module-typescript' as ESM.
const esm = (url) => (/\\.[cm]?tsx?$/.test(new URL(url).pathname) ? 'module-typescript' : 'module')
// A .ts/.tsx file that a marked module imports (a helper beside the config or a plugin) is marked too,
// so its own 'relay-mta' imports resolve the same way; not a package's file (node_modules).
const ownTs = (url) => url.startsWith('file:') && /\\.tsx?$/.test(new URL(url).pathname) && !new URL(url).pathname.includes('/node_modules/')
export async function resolve(specifier, context, next) {
  if (Object.hasOwn(entries, specifier)) return { url: entries[specifier], shortCircuit: true }
  const resolved = await next(specifier, context)
  if (!marked(resolved.url) && context.parentURL && marked(context.parentURL) && ownTs(resolved.url)) {
    const url = new URL(resolved.url)
    url.searchParams.set(${JSON.stringify(CONFIG_MARK)}, new URL(context.parentURL).searchParams.get(${JSON.stringify(CONFIG_MARK)}) ?? '')
    return { ...resolved, url: url.href, format: esm(url.href) }
  }
  return marked(resolved.url) ? { ...resolved, format: esm(resolved.url) } : resolved
}
export async function load(url, context, next) {
  if (!marked(url)) return next(url, context)
  return { ...(await next(url, { ...context, format: 'module' })), format: esm(url) }
}
`

let registered = false

/** Whether a module's text imports 'relay-mta' or 'relay-mta/<entry>' (then the hooks are needed). */
export function importsRelayMta(content: string): boolean {
  return /['"]relay-mta(\/[\w-]+)?['"]/.test(content)
}

/** Registers the hooks once per process (module.register: Node 20.6 and later). */
export function resolveRelayMtaImports(): void {
  if (registered) return
  registered = true
  if (typeof module.register !== 'function') return
  module.register(`data:text/javascript,${encodeURIComponent(HOOKS)}`, {
    parentURL: import.meta.url,
    data: { entries: relayMtaEntries() },
  })
}
