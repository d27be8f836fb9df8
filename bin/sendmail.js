#!/usr/bin/env node
// The `sendmail` command: the same code as `relay sendmail` (sendmail(1) options, message on stdin).
import { existsSync } from 'node:fs'
const main = new URL('../dist/core/cli/sendmail.js', import.meta.url)
if (!existsSync(main)) {
  process.stderr.write('sendmail: dist/ is missing; run `npm run build` in the relay directory\n')
  process.exit(75)
}
const { sendmail } = await import(main.href)
process.exit(await sendmail(process.argv.slice(2)))
