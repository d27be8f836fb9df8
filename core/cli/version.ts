import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The version in Relay's package.json: the first package.json named relay-mta above this file
 * (core/cli/ in a checkout, dist/core/cli/ once built or installed).
 */
export function packageVersion(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'relay-mta' && pkg.version) return pkg.version
    } catch {
      // no package.json here: look further up
    }
    if (path.dirname(dir) === dir) return 'unknown'
  }
}
