// How a plugin's module is imported: an operator's own file afresh at each load (a reload runs the
// code now on disk), with 'relay-mta' resolving to this Relay.
import fs from 'node:fs'
import { pathToFileURL } from 'node:url'
import { CONFIG_MARK, importsRelayMta, resolveRelayMtaImports } from '../config/relay-mta-imports.js'
import { importTypeScript } from '../config/import-ts.js'
import { moduleSyntaxError } from '../config/syntax.js'

/**
 * Imports a plugin module. An operator's own plugin file (`own`: named by a path) that imports
 * 'relay-mta' is loaded as the config is (core/config/relay-mta-imports.ts): as ESM, with
 * 'relay-mta' resolving to this Relay, whether it is .ts or .mts and wherever it is. Without that a
 * .ts file outside a "type": "module" package is compiled to CommonJS by tsx, whose
 * require('relay-mta') looks in the file's directory and finds nothing.
 */
let ownLoads = 0

export async function importModule(file: string, own = false): Promise<unknown> {
  let url = pathToFileURL(file).href
  let content: string | undefined
  if (own) {
    try {
      content = fs.readFileSync(file, 'utf8')
    } catch {
      // not readable: the import below says why
    }
    // Each load of an operator's own plugin is a fresh module, as each load of the config is
    // (config/find.ts): a reload runs the code now on disk. Node caches an ES module by its URL,
    // so a .js/.mjs plugin fixed on disk went on running its old code after a reload that said
    // "plugins loaded again".
    const load = ++ownLoads
    const ts = /\.[mc]?tsx?$/.test(file)
    if (content !== undefined && (ts || importsRelayMta(content))) {
      if (!ts) resolveRelayMtaImports()
      // The mark carries over to the .ts files it imports (relay-mta-imports.ts): they load afresh too.
      url += `?${CONFIG_MARK}=plugin-${load}`
    } else url += `?relay-plugin-load=${load}`
    // An own .ts file loads as a config does (import-ts.ts): 'relay-mta' is this Relay, not a copy per load.
    if (ts && content !== undefined) return importTypeScript(url, content, import.meta.url).catch((err: unknown) => Promise.reject(moduleSyntaxError(err, file, content) ?? err))
  }
  try {
    if (/\.[mc]?tsx?$/.test(file)) {
      const { tsImport } = await import('tsx/esm/api')
      return await tsImport(url, import.meta.url)
    }
    return await import(url)
  } catch (err) {
    // A file that does not parse: its file, line and column, not esbuild's bare "Transform failed".
    throw moduleSyntaxError(err, file, content) ?? err
  }
}

