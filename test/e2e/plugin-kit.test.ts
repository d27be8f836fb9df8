// The plugin kit as a new user meets it (docs/plugins.md, "From zero to a working plugin"): the
// packed npm tarball, `relay plugin new`, the generated test run by vitest against the installed
// `relay-mta/testing`, the plugin enabled in a relay.config.ts, and swaks seeing it act.
//
// "Installed" here means the tarball unpacked as node_modules/relay-mta of a fresh project outside
// the repo, with its dependencies linked from the repo's node_modules: a real `npm install` compiles
// better-sqlite3 (1-2 minutes). Set RELAY_TEST_NPM_INSTALL=1 to run the real `npm install` as the
// docs do (`--prefer-offline`, from the npm cache when it has everything).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { ROOT, eventually, tempDir } from '../harness/relay.js'
import { installedRelayConfig, startInstalledRelay } from '../harness/installed-relay.js'

const run = promisify(execFile)
const FULL_INSTALL = process.env.RELAY_TEST_NPM_INSTALL === '1'

let dns: TestDns
let mx: TestReceiver
let tarball: string
let files: string[]
const made: string[] = [] // temp directories, removed at the end (symlinks are removed, not followed)

beforeAll(async () => {
  if (!FULL_INSTALL) console.warn('plugin-kit: the tarball is unpacked with linked dependencies; RELAY_TEST_NPM_INSTALL=1 runs a real `npm install` (1-2 min: better-sqlite3 compiles)')
  mx = await startReceiver({ host: '127.0.0.1' })
  dns = await startDns({
    'example.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }] },
    'mx.example.test': { A: ['127.0.0.1'] },
  })
  // dist/ is built by `npm test`'s pretest (and by `prepare` on a real `npm pack`); here the scripts
  // are skipped so that no second build rewrites dist/ under the other test files.
  const out = tempDir('relay-pack-')
  made.push(out)
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', out], { cwd: ROOT, timeout: 60_000 })
  const [info] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[]
  tarball = path.join(out, info!.filename)
  files = info!.files.map((f) => f.path)
}, 60_000)

afterAll(async () => {
  await Promise.all([dns?.close(), mx?.close()])
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true })
})

/** Environment for child tools: without the variables of the vitest running this file. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(VITEST|TEST$|NODE_ENV$|NODE_OPTIONS$)/.test(k)))
}

/** A fresh project outside the repo with relay-mta (from the tarball) and vitest installed. */
async function newProject(): Promise<string> {
  const dir = tempDir('relay-newuser-')
  made.push(dir)
  // No overrides: relay-mta ships mailauth with the undici that runs on Node 20 (bundleDependencies).
  const pkg = { name: 'try-relay', version: '1.0.0', type: 'module', private: true }
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2))
  if (FULL_INSTALL) {
    const vitest = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).devDependencies.vitest as string
    await run('npm', ['install', tarball, `vitest@${vitest}`, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: dir, env: cleanEnv(), timeout: 400_000 })
  } else {
    const target = path.join(dir, 'node_modules/relay-mta')
    fs.mkdirSync(target, { recursive: true })
    execFileSync('tar', ['-xzf', tarball, '-C', target, '--strip-components=1'])
    // The tarball brings its bundled packages (mailauth, dns2) in node_modules/; the rest come from the checkout's.
    fs.mkdirSync(path.join(target, 'node_modules'), { recursive: true })
    for (const name of fs.readdirSync(path.join(ROOT, 'node_modules'))) {
      const link = path.join(target, 'node_modules', name)
      if (!fs.existsSync(link)) fs.symlinkSync(path.join(ROOT, 'node_modules', name), link)
    }
    fs.symlinkSync(path.join(ROOT, 'node_modules/vitest'), path.join(dir, 'node_modules/vitest'))
    fs.mkdirSync(path.join(dir, 'node_modules/.bin'))
    fs.symlinkSync('../relay-mta/bin/relay.js', path.join(dir, 'node_modules/.bin/relay'))
    fs.symlinkSync('../vitest/vitest.mjs', path.join(dir, 'node_modules/.bin/vitest'))
  }
  return dir
}

const bin = (dir: string, name: string) => path.join(dir, 'node_modules/.bin', name)

function swaks(port: number, to: string): string {
  try {
    return execFileSync('swaks', ['--server', `127.0.0.1:${port}`, '--from', 'alice@example.com', '--to', to], { encoding: 'utf8', timeout: 15_000 })
  } catch (err) {
    return (err as { stdout?: string }).stdout ?? '' // swaks exits 24 when the server refuses the recipient
  }
}

describe('the plugin kit from a packed tarball', () => {
  it('the tarball carries bin, README, docs and the built dist (core, plugins, testing), no sources or tests', () => {
    for (const f of ['package.json', 'README.md', 'bin/relay.js', 'docs/plugins.md', 'dist/core/index.js', 'dist/core/index.d.ts', 'dist/core/cli/main.js', 'dist/plugins/plugin-kit/new.js', 'dist/plugins/relay-acl/index.js', 'dist/testing/index.js', 'dist/testing/index.d.ts']) {
      expect(files, f).toContain(f)
    }
    expect(files.filter((f) => /^(test|core|testing|examples)\//.test(f) || /^plugins\/.*\.ts$/.test(f))).toEqual([])
  })

  it(`scaffolds a plugin whose test passes, enables it in relay.config.ts, and swaks sees it refuse a recipient${FULL_INSTALL ? ' (real npm install)' : ''}`, async () => {
    const dir = await newProject()

    const created = await run(process.execPath, [bin(dir, 'relay'), 'plugin', 'new', 'hello'], { cwd: dir, env: cleanEnv() })
    expect(created.stdout).toContain('created relay-plugin-hello/: index.ts, index.test.ts, package.json, tsconfig.json, README.md')
    // relay-mta and vitest are in this project's node_modules: no install step, `npm test` in the folder
    expect(created.stdout).toContain('  cd relay-plugin-hello\n  (no install needed')
    expect(created.stdout).toContain('  npm test ')
    expect(created.stdout).toContain(`plugins: [['./relay-plugin-hello/index.ts', { block: ['nobody'] }], 'relay-acl']`)
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'relay-plugin-hello/package.json'), 'utf8'))
    const ours = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
    expect(pkg.name).toBe('relay-plugin-hello')
    expect(pkg.type).toBe('module')
    expect(pkg.peerDependencies).toEqual({ 'relay-mta': `^${ours.version}` })
    expect(pkg.devDependencies.vitest).toBe(ours.devDependencies.vitest)
    expect(pkg.devDependencies.typescript).toBe(ours.devDependencies.typescript)
    expect(pkg.devDependencies.tsx).toBe(ours.dependencies.tsx)

    // The generated test, run as the printed steps say (`npm test` in its folder): it imports the
    // relay-mta/testing installed in the project above.
    const tested = await run('npm', ['test'], { cwd: path.join(dir, 'relay-plugin-hello'), env: cleanEnv(), timeout: 60_000 })
    const summary = tested.stdout.replace(/\x1b\[[0-9;]*m/g, '')
    expect(summary).toMatch(/Tests\s+1 passed \(1\)/)

    fs.writeFileSync(
      path.join(dir, 'relay.config.ts'),
      installedRelayConfig('./relay-plugin-hello/index.ts', dns.server, mx.port),
    )
    const relay = await startInstalledRelay(dir, cleanEnv())
    try {
      const refused = swaks(relay.port, 'nobody@example.test')
      expect(refused).toContain('<** 550 5.7.1 this recipient does not take mail here')
      const accepted = swaks(relay.port, 'bob@example.test')
      expect(accepted).toMatch(/<- {2}250 2\.0\.0 Ok: queued as \w+/)
      const [msg] = await mx.waitForMessages(1, 10_000)
      expect(msg!.to).toEqual(['bob@example.test'])
      expect(await eventually(() => relay.logs.find((l) => l.plugin === 'hello' && l.msg === 'recipient refused'), 5000, 'the refusal line')).toMatchObject({ recipient: 'nobody@example.test' })
    } finally {
      relay.child.kill('SIGTERM')
      await new Promise((r) => (relay.child.exitCode !== null ? r(undefined) : relay.child.once('exit', r)))
    }
  }, FULL_INSTALL ? 600_000 : 60_000)

  it('with --dir elsewhere, prints next steps for that folder: cd there, install relay-mta from a path, npm test', async () => {
    const dir = await newProject()
    const elsewhere = tempDir('relay-elsewhere-')
    made.push(elsewhere)
    const created = await run(process.execPath, [bin(dir, 'relay'), 'plugin', 'new', 'far', '--dir', elsewhere], { cwd: dir, env: cleanEnv() })
    const folder = path.join(elsewhere, 'relay-plugin-far')
    expect(created.stdout).toContain(`created ${folder}/: index.ts, index.test.ts, package.json, tsconfig.json, README.md`)
    expect(created.stdout).toContain(`  cd ${folder}\n`)
    expect(fs.existsSync(path.join(folder, 'index.test.ts'))).toBe(true)
    // relay-mta is not on the registry: the install step names the folder of the relay that ran it
    const install = /^ {2}npm install -D (\S+) /m.exec(created.stdout)
    expect(install, created.stdout).not.toBeNull()
    expect(JSON.parse(fs.readFileSync(path.join(install![1]!, 'package.json'), 'utf8')).name).toBe('relay-mta')
    expect(created.stdout).toMatch(/^ {2}npm test /m)
    expect(created.stdout).toContain(`plugins: [['${path.join(folder, 'index.ts')}', { block: ['nobody'] }], 'relay-acl']`)
    expect(created.stdout).not.toContain('npx vitest run')

    const readme = fs.readFileSync(path.join(folder, 'README.md'), 'utf8')
    expect(readme).toContain('npm install -D /path/to/relay-mta')
    expect(readme).toContain('relay-mta is not on the npm registry')
    expect(readme).not.toMatch(/comes as the peer dependency|npmjs\.com/)
  })
})
