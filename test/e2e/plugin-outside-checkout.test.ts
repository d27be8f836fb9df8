// A third-party plugin as a newcomer writes it, entirely outside the checkout, with real processes:
// `relay plugin new` → the printed `npm install -D <relay-mta>` (a path install) → the plugin's own
// `npm test` → `npm pack` → a project that installs the plugin's folder and one that installs its
// tarball, each naming it by package name in relay.config.ts: `relay check-config` loads it and a
// real `relay start` on loopback refuses a blocked recipient through its hook.
//
// npm runs with --offline: packages come from the npm cache that the project's own install filled,
// and nothing beyond loopback is reached. relay-mta is installed by path (a link to this checkout):
// its tarball would compile better-sqlite3 again (minutes); plugin-kit.test.ts covers the tarball.
import { afterAll, beforeAll, expect, it } from 'vitest'
import { execFile, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { BIN, ROOT, eventually, tempDir } from '../harness/relay.js'
import { installedRelayConfig, startInstalledRelay } from '../harness/installed-relay.js'
import { send } from '../../testing/index.js'

let dns: TestDns
let mx: TestReceiver
let top: string // every folder of this test is below it, outside the checkout
const timings: string[] = [] // each step's time, printed once at the end: where a slow run spent it

beforeAll(async () => {
  top = fs.realpathSync(tempDir('relay-outside-'))
  mx = await startReceiver({ host: '127.0.0.1' })
  dns = await startDns({
    'example.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }] },
    'mx.example.test': { A: ['127.0.0.1'] },
  })
})

afterAll(async () => {
  console.log(`plugin-outside-checkout steps: ${timings.join('; ')}`)
  await Promise.all([dns?.close(), mx?.close()])
  if (top) fs.rmSync(top, { recursive: true, force: true })
})

/**
 * Environment for child tools: without vitest's variables, nor those npm sets for the `npm test`
 * running the suite (its package, prefix, lifecycle), but with the npm cache and user config it used.
 */
function cleanEnv(): NodeJS.ProcessEnv {
  const keep = /^npm_config_(cache|userconfig)$/i
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => keep.test(k) || !/^(VITEST|TEST$|NODE_ENV$|NODE_OPTIONS$|npm_|INIT_CWD$)/i.test(k)))
  return { ...env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' }
}

/** Runs one step to completion within `timeoutMs`; a failure names the step and shows its output. */
function step(label: string, cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<string> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, env: cleanEnv(), timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      timings.push(`${label} ${((Date.now() - started) / 1000).toFixed(1)} s`)
      if (!err) return resolve(stdout)
      const missing = [...stderr.matchAll(/request to https?:\/\/[^/\s]+\/(\S+?) failed[^\n]*(?:only-if-cached|ENOTCACHED)/g)].map((m) => decodeURIComponent(m[1]!))
      const why = missing.length > 0
        ? `npm's cache lacks ${[...new Set(missing)].join(', ')} (an --offline install reaches no registry): fill the cache with an online install of the same packages, e.g. \`npm install\` in a scaffolded plugin, then run again`
        : (err as { killed?: boolean }).killed ? `killed after ${timeoutMs} ms` : err.message
      reject(new Error(`${label} (${cmd} ${args.join(' ')} in ${cwd}): ${why}\n--- stdout\n${stdout.slice(-3000)}\n--- stderr\n${stderr.slice(-3000)}`))
    })
  })
}

const npmOffline = ['--offline', '--no-audit', '--no-fund']

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

/**
 * A project that installs relay-mta (by path) and the plugin from `pluginSpec`, names it `hello` in
 * relay.config.ts, checks the config and starts the relay: the hook refuses `nobody`, bob's copy is
 * delivered to the test MX. `delivered` is how many messages the MX has after this one.
 */
async function useByName(name: string, pluginSpec: string, delivered: number): Promise<void> {
  const dir = path.join(top, name)
  fs.mkdirSync(dir)
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true, type: 'module' }, null, 2) + '\n')
  await step(`${name}: npm install relay-mta and the plugin`, 'npm', ['install', ROOT, pluginSpec, ...npmOffline], dir, 180_000)
  expect(fs.existsSync(path.join(dir, 'node_modules/relay-plugin-hello/dist/index.js'))).toBe(true)
  fs.writeFileSync(
    path.join(dir, 'relay.config.ts'),
    installedRelayConfig('hello', dns.server, mx.port),
  )
  const checked = await step(`${name}: relay check-config`, process.execPath, [path.join(dir, 'node_modules/.bin/relay'), 'check-config'], dir, 60_000)
  expect(checked).toContain(`config ok: ${path.join(dir, 'relay.config.ts')}`)
  expect(checked).toContain('plugins hello, relay-acl')

  const relay = await startInstalledRelay(dir, cleanEnv())
  try {
    const r = await send({ port: relay.port, from: 'alice@example.com', to: ['nobody@example.test', 'bob@example.test'], subject: name })
    expect(r.rcpt, r.replies.join('\n')).toEqual([550, 250])
    expect(r.replies).toContain('550 5.7.1 this recipient does not take mail here')
    expect(r.data).toBe(250)
    const msgs = await mx.waitForMessages(delivered, 15_000)
    expect(msgs[delivered - 1]!.to).toEqual(['bob@example.test'])
    expect(await eventually(() => relay.logs.find((l) => l.plugin === 'hello' && l.msg === 'recipient refused'), 5000, 'the refusal line')).toMatchObject({ recipient: 'nobody@example.test' })
  } finally {
    await stop(relay.child)
  }
}

it('outside the checkout: scaffold, install relay-mta by path, npm test, npm pack, load by package name from a folder and from the tarball', async () => {
  // 1. Scaffold with --dir elsewhere, and read the install step it prints.
  const work = path.join(top, 'work')
  const created = await step('relay plugin new', process.execPath, [BIN, 'plugin', 'new', 'hello', '--dir', work], top, 30_000)
  const plugin = path.join(work, 'relay-plugin-hello')
  // run from `top`: the paths it prints are relative to there
  expect(created).toContain('created work/relay-plugin-hello/: index.ts, index.test.ts, package.json, tsconfig.json, README.md')
  expect(created).toContain('  cd work/relay-plugin-hello\n')
  const install = /^ {2}npm install -D (\S+) {2,}/m.exec(created)
  expect(install, created).not.toBeNull()
  expect(fs.realpathSync(install![1]!)).toBe(fs.realpathSync(ROOT))
  // the README gives the same path install (and the tarball as the other way)
  expect(fs.readFileSync(path.join(plugin, 'README.md'), 'utf8')).toContain('npm install -D /path/to/relay-mta   # or:')

  // 2. The printed install, offline: relay-mta linked from its folder, the plugin's tools from the cache.
  await step('npm install -D <relay-mta>', 'npm', ['install', '-D', install![1]!, ...npmOffline], plugin, 180_000)
  for (const tool of ['vitest', 'typescript', 'tsx', '@types/node']) expect(fs.existsSync(path.join(plugin, 'node_modules', tool, 'package.json')), tool).toBe(true)
  const resolved = await step('resolve relay-mta/testing', process.execPath, ['--input-type=module', '-e', "console.log(import.meta.resolve('relay-mta/testing'))"], plugin, 30_000)
  expect(fs.realpathSync(fileURLToPath(resolved.trim()))).toBe(fs.realpathSync(path.join(ROOT, 'dist/testing/index.js')))

  // 3. The plugin's own test and type check, as its README says.
  const tested = await step('npm test (the plugin)', 'npm', ['test'], plugin, 120_000)
  expect(tested.replace(/\x1b\[[0-9;]*m/g, '')).toMatch(/Tests\s+1 passed \(1\)/)
  await step('npm run typecheck (the plugin)', 'npm', ['run', 'typecheck'], plugin, 120_000)

  // 4. npm pack: prepack builds dist/; the package ships JavaScript, types and maps that carry the source.
  const packed = JSON.parse(await step('npm pack (the plugin)', 'npm', ['pack', '--json'], plugin, 120_000)) as { filename: string; files: { path: string }[] }[]
  const tarball = path.join(plugin, packed[0]!.filename)
  expect(packed[0]!.files.map((f) => f.path).sort()).toEqual(['README.md', 'dist/index.d.ts', 'dist/index.js', 'dist/index.js.map', 'package.json'])
  const map = JSON.parse(fs.readFileSync(path.join(plugin, 'dist/index.js.map'), 'utf8')) as { sourcesContent?: string[] }
  expect(map.sourcesContent?.[0]).toContain("name: 'hello'")

  // 5. Named by package name in another project: from the plugin's folder, then from its tarball.
  await useByName('site-folder', plugin, 1)
  await useByName('site-tarball', tarball, 2)
  expect(fs.lstatSync(path.join(top, 'site-tarball/node_modules/relay-plugin-hello')).isSymbolicLink()).toBe(false)
}, 900_000)
