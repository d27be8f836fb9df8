import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { makeDirs } from '../../core/index.js'

/**
 * `relay plugin new <name> [--dir D]`: writes D/relay-plugin-<name>/ with a working plugin (one
 * `rcpt` hook and a zod options schema), its test on `relay-mta/testing`, a package.json ready for
 * npm (enabled by name as `<name>` once installed), a tsconfig and a README.
 */
export async function pluginNew(rawName: string, opts: { dir?: string }): Promise<void> {
  const name = rawName.replace(/^relay-plugin-/, '')
  if (!/^[a-z0-9][a-z0-9-]{0,60}$/.test(name)) {
    process.stderr.write(`relay: plugin name '${rawName}': use lower-case letters, digits and '-' (e.g. 'block-list')\n`)
    process.exit(2)
  }
  const pkgName = `relay-plugin-${name}`
  const dir = path.resolve(opts.dir ?? '.', pkgName)
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
    process.stderr.write(`relay: ${dir} already exists and is not empty; nothing written\n`)
    process.exit(1)
  }
  const relay = relayPackage()
  const files = templates(name, pkgName, relay)
  makeDirs(dir)
  for (const [file, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, file), text)
  process.stdout.write(`created ${shown(dir)}/: ${Object.keys(files).join(', ')}\n\n${nextSteps(dir, name, pkgName, relay)}`)
}

/** A path as the user should type it from here: relative below the current directory, else absolute. */
function shown(p: string): string {
  const rel = path.relative(process.cwd(), p)
  return rel === '' ? '.' : rel.startsWith('..') || path.isAbsolute(rel) ? p : rel
}

/** True when `pkg` is installed where Node looks from `dir`: node_modules here or in a folder above. */
function resolvable(dir: string, pkg: string): boolean {
  for (let d = dir; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'node_modules', pkg, 'package.json'))) return true
    if (path.dirname(d) === d) return false
  }
}

/**
 * What to do next, right from wherever the folder was written: `npm test` runs in the folder itself,
 * and relay-mta (not on the npm registry) is installed from this relay's own folder unless a project
 * above already has it and vitest.
 */
function nextSteps(dir: string, name: string, pkgName: string, relay: RelayPackage): string {
  const installed = resolvable(dir, 'relay-mta') && resolvable(dir, 'vitest')
  const install = installed
    ? `  (no install needed: relay-mta and vitest are found in a node_modules above it)\n`
    : `  npm install -D ${relay.dir ?? '/path/to/relay-mta'}    (relay-mta is not on the npm registry: a path to it or its \`npm pack\` tarball; also vitest, typescript, tsx)\n`
  const entry = shown(path.join(dir, 'index.ts'))
  return (
    `next:\n` +
    `  cd ${shown(dir)}\n` +
    install +
    `  npm test    (its test: a real relay, DNS and SMTP server on loopback)\n` +
    `  in relay.config.ts:  plugins: [['${path.isAbsolute(entry) ? entry : `./${entry}`}', { block: ['nobody'] }], 'relay-acl']\n` +
    `  once installed as the package ${pkgName}:  plugins: [['${name}', { block: ['nobody'] }], 'relay-acl']\n`
  )
}

interface RelayPackage {
  version: string
  /** the folder of relay-mta's package.json (the checkout, or node_modules/relay-mta) */
  dir?: string
  pins: Record<string, string>
}

/** This relay's version and the tool versions it is tested with (its own package.json). */
function relayPackage(): RelayPackage {
  const fallback: Record<string, string> = { vitest: '~4.1.12', typescript: '~6.0.2', tsx: '^4.23.15', '@types/node': '^20.19.0' }
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json')
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string; dependencies?: Record<string, string>; devDependencies?: Record<string, string> }
      if (pkg.name === 'relay-mta') {
        const all = { ...pkg.dependencies, ...pkg.devDependencies }
        const pins = Object.fromEntries(Object.entries(fallback).map(([k, v]) => [k, all[k] ?? v]))
        return { version: pkg.version ?? '0.1.0', pins, dir }
      }
    }
    if (path.dirname(dir) === dir) return { version: '0.1.0', pins: fallback }
  }
}

function templates(name: string, pkgName: string, relay: RelayPackage): Record<string, string> {
  const peer = `^${relay.version}`
  const index = `// ${pkgName}: refuses mail to the recipients listed in its \`block\` option (a starting point:
// change the hook, the options and the test). Hooks, context and verdicts: docs/plugins.md of relay-mta.
import { definePlugin, reject, z } from 'relay-mta'

const options = z
  .object({
    /** Recipients to refuse: whole addresses (\`nobody@example.com\`) or local parts (\`nobody\`). */
    block: z.array(z.string().toLowerCase()).default([]),
    /** The text of the 550 reply. */
    message: z.string().default('this recipient does not take mail here'),
  })
  .strict()

export default definePlugin({
  name: '${name}',
  options,
  hooks: {
    rcpt({ recipient, options, log }) {
      const address = recipient.address.toLowerCase()
      const local = address.slice(0, address.lastIndexOf('@'))
      if (options.block.includes(address) || options.block.includes(local)) {
        log.info({ recipient: recipient.address }, 'recipient refused')
        return reject('5.7.1', options.message)
      }
      // No verdict: the next plugin (or the relay's localDomains rule) decides.
    },
  },
})
`
  const test = `// Runs a real relay with this plugin, a DNS server and a receiving SMTP server on loopback.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { startTestRelay, type TestRelay } from 'relay-mta/testing'

let t: TestRelay
beforeAll(async () => {
  t = await startTestRelay({ plugins: [[new URL('./index.ts', import.meta.url), { block: ['nobody'] }]] })
}, 30_000)
afterAll(() => t?.close())

it('refuses a blocked recipient with 550 5.7.1 and delivers to the others', async () => {
  const r = await t.send({ from: 'alice@sender.test', to: ['nobody@example.test', 'bob@example.test'] })
  expect(r.rcpt).toEqual([550, 250])
  expect(r.replies).toContain('550 5.7.1 this recipient does not take mail here')
  expect(r.data).toBe(250)
  const [msg] = await t.receiver.waitForMessages(1, 10_000)
  expect(msg!.to).toEqual(['bob@example.test'])
  expect(t.relay.logs.some((l) => l.plugin === '${name}' && l.msg === 'recipient refused')).toBe(true)
}, 30_000)
`
  const pkg = {
    name: pkgName,
    version: '0.1.0',
    description: `A Relay plugin: ${name}`,
    type: 'module',
    license: 'MIT',
    keywords: ['relay-mta', 'relay-plugin'],
    engines: { node: '>=20' },
    main: './dist/index.js',
    types: './dist/index.d.ts',
    exports: { '.': { types: './dist/index.d.ts', default: './dist/index.js' } },
    files: ['dist', 'README.md'],
    scripts: {
      build: 'tsc -p tsconfig.json',
      typecheck: 'tsc -p tsconfig.json --noEmit',
      test: 'vitest run',
      prepack: 'tsc -p tsconfig.json',
    },
    peerDependencies: { 'relay-mta': peer },
    devDependencies: relay.pins,
    // npm 11 asks a project to approve its dependencies' install scripts: tsx's esbuild checks its
    // binary, better-sqlite3 (under a tarball install of relay-mta) compiles its addon.
    allowScripts: { 'better-sqlite3': true, esbuild: true },
  }
  const tsconfig = {
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib: ['ES2023'],
      types: ['node'],
      strict: true,
      skipLibCheck: true,
      declaration: true,
      sourceMap: true,
      // the maps carry index.ts, which the package does not ship (files: dist, README.md)
      inlineSources: true,
      rootDir: '.',
      outDir: 'dist',
    },
    include: ['index.ts'],
  }
  const readme = `# ${pkgName}

A plugin for Relay (the \`relay-mta\` package): refuses mail to the recipients in
its \`block\` option with \`550 5.7.1\`. Made with \`relay plugin new ${name}\`.

## Options

| option | default | meaning |
|---|---|---|
| \`block\` | \`[]\` | addresses (\`nobody@example.com\`) or local parts (\`nobody\`) to refuse |
| \`message\` | \`'this recipient does not take mail here'\` | text of the 550 reply |

## Use

In the project where the relay runs, install the tarball that \`npm pack\` makes here (or this
folder after \`npm run build\`). relay-mta is its peer dependency and is not on the npm registry,
so that project installs it too, from a path or its tarball, before or in the same command:

\`\`\`sh
npm install /path/to/relay-mta /path/to/${pkgName}-0.1.0.tgz
\`\`\`

Then name it by its package name, without \`relay-plugin-\`:

\`\`\`ts
// relay.config.ts
plugins: [
  ['${name}', { block: ['nobody'] }],
  'relay-acl',                          // after it: relay-acl accepts, and the first to decide wins
],
\`\`\`

\`npx relay check-config\` lists it under \`plugins\`. While developing, name the file instead:
\`['./${pkgName}/index.ts', { ... }]\`.

## Develop

relay-mta is not on the npm registry, so \`npm install\` alone cannot fetch it (it is this plugin's
peer dependency): install it from its folder (a link: quick) or from the tarball \`npm pack\` makes
there (a copy: better-sqlite3 compiles, a minute or two), which also installs vitest, typescript
and tsx. \`relay-mta/testing\` then resolves from this folder.

\`\`\`sh
npm install -D /path/to/relay-mta   # or: npm install -D /path/to/relay-mta-${relay.version}.tgz
npm test             # a real relay on loopback: see index.test.ts
npm run typecheck
npm pack             # builds dist/ first (prepack): ${pkgName}-0.1.0.tgz, to install where the relay runs
\`\`\`

(Inside a project that already has relay-mta and vitest in its \`node_modules\`, \`npm test\` works
without an install.)
`
  return {
    'index.ts': index,
    'index.test.ts': test,
    'package.json': JSON.stringify(pkg, null, 2) + '\n',
    'tsconfig.json': JSON.stringify(tsconfig, null, 2) + '\n',
    'README.md': readme,
  }
}
