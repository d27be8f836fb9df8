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
