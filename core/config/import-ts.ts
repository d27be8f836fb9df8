// A TypeScript config loads with Node's own type stripping where Node strips types without a
// warning (22.18+, 24.3+) and the file needs nothing more: about 0.1 s less CPU for every `relay`
// command and start than tsx, which starts a module hooks thread and an esbuild process. tsx loads
// everything else as before: Node 20, and files that need its compiler or its CommonJS output.

import { resolveRelayMtaImports } from './relay-mta-imports.js'

const [NODE_MAJOR, NODE_MINOR] = process.versions.node.split('.').map(Number) as [number, number]
const QUIET_STRIPPING = (NODE_MAJOR === 22 && NODE_MINOR >= 18) || (NODE_MAJOR === 24 && NODE_MINOR >= 3) || NODE_MAJOR >= 25
const STRIPS_TYPES = QUIET_STRIPPING && Boolean((process.features as { typescript?: unknown }).typescript)

/**
 * What Node's stripping does not do as tsx does: relative imports (tsx resolves './helper' without
 * its extension, and re-reads the files on each load, which a hot reload relies on), require(),
 * __dirname and __filename (tsx compiles a file outside a "type": "module" package to CommonJS).
 */
const needsTsx = (content: string) => /(?:\bfrom\s*|\bimport\s*\(?\s*)['"`]\.\.?\/|\brequire\s*\(|\b__dirname\b|\b__filename\b/.test(content)

/**
 * Node could not parse or link the file, so nothing of it has run: TypeScript-only syntax (enum,
 * parameter properties, namespaces), a type imported without `type`, a package import tsx resolves
 * differently, JSON without `with { type: 'json' }`. tsx gets the file then.
 */
const NOT_STRIPPABLE = new Set([
  'ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX',
  'ERR_INVALID_TYPESCRIPT_SYNTAX',
  'ERR_MODULE_NOT_FOUND',
  'ERR_UNSUPPORTED_DIR_IMPORT',
  'ERR_IMPORT_ATTRIBUTE_MISSING',
  'ERR_UNKNOWN_FILE_EXTENSION',
  'ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING',
])
const notStrippable = (err: unknown) => err instanceof SyntaxError || NOT_STRIPPABLE.has((err as { code?: string } | null)?.code ?? '')

/** Imports the .ts/.mts file at `url` (whose text is `content`) and returns its module namespace. */
export async function importTypeScript(url: string, content: string, parentUrl: string): Promise<unknown> {
  if (STRIPS_TYPES && !needsTsx(content)) {
    try {
      return await import(url)
    } catch (err) {
      // A SyntaxError thrown while the file runs (its own JSON.parse) runs it a second time under
      // tsx, which throws the same: a config that fails either way.
      if (!notStrippable(err)) throw err
    }
    // Node keeps the failed module under its URL: tsx gets the file under another one.
    url += `${url.includes('?') ? '&' : '?'}relay-tsx=1`
  }
  const tsx = await import('tsx/esm/api')
  // CommonJS output (require, __dirname): tsx's tsImport, which loads every module under it afresh.
  if (COMMON_JS.test(content)) return tsx.tsImport(url, parentUrl)
  // Otherwise tsx registered once for the process, behind the relay-mta hooks. tsImport makes a
  // namespace of its own per call, and in it a new copy of every module the file imports, the
  // whole core through 'relay-mta' included: 10–15 MB that no reload ever gave back. Here the
  // file's URL (marked) is fresh at each load, so are the .ts files it imports (the mark carries
  // over), and 'relay-mta' and npm packages are the ones this process runs.
  if (!tsxRegistered) {
    resolveRelayMtaImports()
    tsx.register()
    tsxRegistered = true
  }
  return import(url)
}

let tsxRegistered = false
const COMMON_JS = /\brequire\s*\(|\b__dirname\b|\b__filename\b|\bmodule\.exports\b/
