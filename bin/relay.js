#!/usr/bin/env node
// The `relay` command. Runs the compiled CLI in dist/ (built by `npm run build`, `npm start`, `npm test` and `npm pack`).
import { existsSync } from 'node:fs'
const main = new URL('../dist/core/cli/main.js', import.meta.url)
if (!existsSync(main)) {
  process.stderr.write('relay: dist/ is missing; run `npm run build` (or `npm start`, which builds first) in the relay directory\n')
  process.exit(1)
}
await import(main.href)
