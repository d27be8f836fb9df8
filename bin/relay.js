#!/usr/bin/env node
// The `relay` command. Runs the compiled CLI (npm install builds it into dist/).
import { existsSync } from 'node:fs'
const main = new URL('../dist/core/cli/main.js', import.meta.url)
if (!existsSync(main)) {
  process.stderr.write('relay: dist/ is missing; run `npm install` (or `npm run build`) in the relay directory\n')
  process.exit(1)
}
await import(main.href)
