// A .ts plugin fixture as a built plugin is loaded: compiled once (esbuild, as tsx would) to an .mjs
// that imports the built relay (dist/core/index.js) instead of core/*.ts. Loaded as .ts, every relay
// process (and each SMTP worker) pays tsx compiling core/ from source: about a second of CPU each.
// The same fixture code runs; only how it reaches the relay differs.
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { transformSync } from 'esbuild'
import { ROOT, tempDir } from './relay.js'

const coreImport = () => /(from\s+)(['"])(?:\.\.\/)+core\/index\.js\2/g
const compiled = new Map<string, string>()
let dir: string | undefined

/** The path of an .mjs build of the fixture `tsFile` (made once per test process). */
export function compiledPlugin(tsFile: string): string {
  const known = compiled.get(tsFile)
  if (known) return known
  const source = fs.readFileSync(tsFile, 'utf8')
  const core = pathToFileURL(path.join(ROOT, 'dist/core/index.js')).href
  const rewritten = source.replace(coreImport(), `$1'${core}'`)
  if (rewritten === source) throw new Error(`${tsFile}: no import of core/index.js to point at dist/`)
  const { code } = transformSync(rewritten, { loader: 'ts', format: 'esm', target: 'node20', sourcefile: tsFile })
  dir ??= tempDir('relay-fixtures-')
  const out = path.join(dir, path.basename(tsFile).replace(/\.ts$/, '.mjs'))
  fs.writeFileSync(out, code)
  compiled.set(tsFile, out)
  return out
}
