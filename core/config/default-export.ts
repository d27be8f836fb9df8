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

/** A config module that gives Relay nothing to read: an error, never a silent run on the defaults. */
export class NoConfigExportError extends Error {
  constructor(
    readonly filepath: string,
    what = 'no default export',
  ) {
    super(`${what}: the file holds no config (write \`export default defineConfig({ … })\`; in CommonJS \`module.exports = { … }\`; \`{}\` asks for the defaults)`)
    this.name = 'NoConfigExportError'
  }
}

/**
 * A config module's settings: its default export, or module.exports from CommonJS. A module with
 * only named exports, or none (`defineConfig({ … })` without `export default`), throws
 * NoConfigExportError. `source` tells an empty CommonJS module.exports (no `export`/`exports` in the
 * text: nothing was exported) from an explicit `export default {}` (the defaults), which import()
 * hands over alike.
 */
export function configExport(mod: unknown, filepath: string, source: string): unknown {
  const ns = mod as Record<string, unknown> | null
  if (!ns || typeof ns !== 'object' || !('default' in ns)) throw new NoConfigExportError(filepath)
  let value = ns.default
  if (value && typeof value === 'object' && (value as { __esModule?: unknown }).__esModule === true) {
    // tsx's CommonJS build of an ES module: its `export default` one level deeper.
    if (!('default' in value)) throw new NoConfigExportError(filepath)
    value = (value as { default: unknown }).default
  }
  // cosmiconfig takes null or undefined for "no config here": a file named as the config would then
  // start a relay on the defaults, saying no config file was found.
  if (value === null || value === undefined) throw new NoConfigExportError(filepath, `the default export is ${String(value)}`)
  const empty = value !== null && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype && Object.keys(value).length === 0
  if (empty && !/\bexports?\b/.test(source)) throw new NoConfigExportError(filepath)
  return value
}
