import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The relay's version, from its package.json: the nearest one above this file named relay-mta
 * (the same walk from the sources and from dist/). 'unknown' when there is none (a bundled copy).
 */
export function relayVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'relay-mta' && pkg.version) return pkg.version
    } catch {
      // none here, or not JSON: look further up
    }
    const up = path.dirname(dir)
    if (up === dir) return 'unknown'
    dir = up
  }
}
