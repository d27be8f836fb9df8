// A hot reload reads the config file as it is now, whatever its format. A CommonJS config (.cjs,
// or .js in a package without "type": "module") goes through Node's require cache, which a query
// on the import URL does not bypass: it used to come back as the first read forever.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { execFileSync } from 'node:child_process'
import { pathToFileURL } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'

// In plain Node, as the relay runs (vitest's own module loader has no require cache in the way).
const FIND = pathToFileURL(path.resolve(import.meta.dirname, '../../dist/core/config/find.js')).href
/** Reads `file` twice in one process, with `edit` between: both configs. */
function readTwice(file: string, second: string): unknown[] {
  const script = `const { findConfig } = await import(${JSON.stringify(FIND)})
const fs = await import('node:fs')
const a = (await findConfig(${JSON.stringify(file)})).config
fs.writeFileSync(${JSON.stringify(file)}, ${JSON.stringify(second)})
const b = (await findConfig(${JSON.stringify(file)})).config
console.log(JSON.stringify([a, b]))`
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }).trim().split('\n').pop()!)
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-reread-'))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const formats: [string, (hostname: string) => string, Record<string, string>?][] = [
  ['relay.config.cjs', (h) => `module.exports = { hostname: '${h}' }\n`],
  ['relay.config.js', (h) => `module.exports = { hostname: '${h}' }\n`, { 'package.json': '{ "type": "commonjs" }\n' }],
  ['relay.config.mjs', (h) => `export default { hostname: '${h}' }\n`],
  ['relay.config.ts', (h) => `const config: { hostname: string } = { hostname: '${h}' }\nexport default config\n`],
  ['relay.config.json', (h) => JSON.stringify({ hostname: h })],
]

describe('reading the config again', () => {
  it.each(formats)('%s: the second read sees the edit', (name, body, extra = {}) => {
    const own = fs.mkdtempSync(path.join(dir, 'f-'))
    for (const [f, text] of Object.entries(extra)) fs.writeFileSync(path.join(own, f), text)
    const file = path.join(own, name)
    fs.writeFileSync(file, body('first.example'))
    expect(readTwice(file, body('second.example'))).toEqual([{ hostname: 'first.example' }, { hostname: 'second.example' }])
  })
})
