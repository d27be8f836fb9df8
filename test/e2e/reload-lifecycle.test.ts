// Reload and plugin lifecycle as an operator and a plugin author meet them: which file a reload
// reads, which answer `relay reload` prints when reloads overlap, a setup that calls reload or
// finishes after its timeout, and event listeners that must not hold up delivery.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { spawn } from 'node:child_process'
import { BIN, eventually, runCliAsync, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const relays: RelayProcess[] = []
let dns: TestDns
let rx: TestReceiver

beforeAll(async () => {
  rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] } })
})

afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()))
  await Promise.all([dns, rx].map((x) => x?.close()))
})

/** A plugin file in `dir`: its setup and teardown write what they do to `<dir>/trace`. */
function tracedPlugin(dir: string, name: string, body: string): string {
  const file = path.join(dir, `${name}.mjs`)
  fs.writeFileSync(file, `import fs from 'node:fs'\nconst trace = (ctx, what) => fs.appendFileSync(ctx.resolvePath('trace'), what + '\\n')\n${body}\n`)
  return file
}
const trace = (dir: string) => (fs.existsSync(path.join(dir, 'trace')) ? fs.readFileSync(path.join(dir, 'trace'), 'utf8').split('\n').filter(Boolean) : [])

describe('relay reload: which file, and whose answer', () => {
  it('--config naming another file than the relay runs: the relay re-reads its own, and the CLI says the other was not applied (exit 1)', async () => {
    const relay = await startRelay({ config: { localDomains: ['local.test'] } })
    relays.push(relay)
    const other = path.join(relay.dir, 'other.config.json')
    fs.writeFileSync(other, JSON.stringify({ ...JSON.parse(fs.readFileSync(relay.configFile, 'utf8')), localDomains: ['other.test'] }))
    const r = await runCliAsync(['reload', '--config', other])
    expect(r.code).toBe(1)
    expect(r.stdout).toContain('config reloaded')
    expect(r.stderr).toContain(`relay: relay ${relay.child.pid} runs ${relay.configFile} and re-read that file; ${other} was not applied`)
    const same = await runCliAsync(['reload', '--config', relay.configFile])
    expect(same.code, same.stderr).toBe(0)
    expect(same.stderr).toBe('')
  })

  it('two reloads asked for at once: each `relay reload` prints the answer to its own', async () => {
    const dir = tempDir()
    // At reload the setup takes 1.5 s, so the second reload is asked for while the first runs.
    const slow = tracedPlugin(dir, 'slow', `export default { name: 'slow', async setup(ctx) { if (ctx.mode === 'reload') { trace(ctx, 'reload read'); await new Promise((r) => setTimeout(r, 1500)) } return {} }, hooks: { connect() {} } }`)
    const relay = await startRelay({ dir, config: { plugins: [slow] } })
    relays.push(relay)
    const written = JSON.parse(fs.readFileSync(relay.configFile, 'utf8')) as Record<string, unknown>
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...written, localDomains: ['first.test'] }))
    const first = runCliAsync(['reload', '--config', relay.configFile])
    // (its setup runs once the file was read)
    await eventually(() => trace(dir).includes('reload read'), 10_000, 'the first reload reading the file')
    // The second edit does not validate: its reload is refused, while the first one was taken.
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...written, localDomains: ['second.test'], smtp: { maxRecipients: 0 } }))
    const second = await runCliAsync(['reload', '--config', relay.configFile])
    const one = await first
    expect(one.code, one.stderr).toBe(0)
    expect(one.stdout).toContain('changed: localDomains')
    expect(second.code).toBe(1)
    expect(second.stderr).toMatch(/reload refused, the running config stays in force:\n.*\n {2}smtp\.maxRecipients: /)
  })
})

describe('plugin setup at reload', () => {
  it('ctx.relay.reload() called from setup is refused at once (it would wait for itself); the reload goes on', async () => {
    const dir = tempDir()
    const caller = tracedPlugin(
      dir,
      'caller',
      `export default { name: 'caller', async setup(ctx) { if (ctx.mode === 'reload') await ctx.relay.reload().then(() => trace(ctx, 'reloaded'), (e) => trace(ctx, 'refused: ' + e.message)); return {} }, hooks: { connect() {} } }`,
    )
    const relay = await startRelay({ dir, config: { setupTimeout: '20s', plugins: [caller] } })
    relays.push(relay)
    const started = Date.now()
    const r = await runCliAsync(['reload', '--config', relay.configFile])
    expect(r.code, r.stderr).toBe(0)
    expect(Date.now() - started).toBeLessThan(15_000)
    expect(trace(dir)).toEqual(['refused: plugins[0] (caller): ctx.relay.reload() cannot be called from setup (the reload would wait for this setup); call it later'])
  })

  it('a setup that finishes after setupTimeout: the reload is refused, and what the setup made is torn down once it finishes', async () => {
    const dir = tempDir()
    const late = tracedPlugin(
      dir,
      'late',
      `export default { name: 'late', async setup(ctx) { if (ctx.mode === 'reload') { await new Promise((r) => setTimeout(r, 2500)); trace(ctx, 'set up late') } return { made: ctx.mode } }, teardown(ctx) { trace(ctx, 'torn down ' + ctx.state.made) }, hooks: { connect() {} } }`,
    )
    const relay = await startRelay({ dir, config: { setupTimeout: '1s', plugins: [late] } })
    relays.push(relay)
    const r = await runCliAsync(['reload', '--config', relay.configFile])
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('setup did not finish within 1000 ms (config setupTimeout) [RELAY_ERR_PLUGIN_SETUP_TIMEOUT]')
    await eventually(() => trace(dir).includes('torn down reload'), 10_000, 'the late setup torn down')
    expect(trace(dir)).toEqual(['set up late', 'torn down reload'])
    await relay.waitForLog((l) => l.msg === 'plugins[0] (late): setup finished after its timeout; it was torn down', 5000)
    // The running generation is still in force, and is torn down at the stop.
    await relay.stop()
    expect(trace(dir)).toEqual(['set up late', 'torn down reload', 'torn down start'])
  })
})

describe('event listeners', () => {
  it('a listener that hangs holds up no delivery: every message goes at once, one connection at a time', async () => {
    const dir = tempDir()
    const hangs = tracedPlugin(dir, 'hangs', `export default { name: 'hangs', hooks: { delivered(e, ctx) { trace(ctx, 'heard ' + e.recipient); return new Promise(() => {}) } } }`)
    const relay = await startRelay({
      dir,
      config: {
        hookTimeout: '60s',
        dns: { servers: [dns.server], timeout: '1s' },
        delivery: { port: rx.port, concurrency: { global: 1, perDomain: 1 } },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }], hangs],
      },
    })
    relays.push(relay)
    const subjects = ['one', 'two', 'three'].map((s) => `hanging-listener ${s}`)
    for (const subject of subjects) {
      const sent = await sendMail(relay.port, { from: 'a@sender.test', to: ['x@dest.test'], data: `From: <a@sender.test>\r\nSubject: ${subject}\r\n\r\nhi\r\n` })
      expect(sent.lastReply).toMatch(/^250 /)
    }
    // With the listener holding the only delivery slot, the second message would wait 60 s.
    await eventually(() => subjects.every((s) => rx.messages.some((m) => m.raw.toString().includes(`Subject: ${s}`))), 20_000, 'all three delivered')
    // The receiver has the third message a moment before the relay has recorded its delivery and told the listener.
    await eventually(() => trace(dir).length === 3 || undefined, 5000, 'the listener told of the third delivery')
    expect(trace(dir)).toEqual(['heard x@dest.test', 'heard x@dest.test', 'heard x@dest.test'])
  })
})

describe('TypeScript config and plugins across reloads', () => {
  it("each reload runs the files now on disk (a helper they import too) against the relay's own relay-mta, not a new copy of the core per reload", async () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'helper.ts'), "export const version: string = 'v1'\n")
    // The plugin records whether the relay-mta it imports is the one of its first load, and the helper's version.
    fs.writeFileSync(
      path.join(dir, 'probe.ts'),
      `import fs from 'node:fs'
import { definePlugin, z, HOOK_NAMES } from 'relay-mta'
import { version } from './helper.ts'
const g = globalThis as { __probe?: { z: unknown; names: unknown } }
g.__probe ??= { z, names: HOOK_NAMES }
export default definePlugin({
  name: 'probe',
  setup(ctx) { fs.appendFileSync(ctx.resolvePath('trace'), ctx.mode + ' ' + version + ' same core: ' + (g.__probe!.z === z && g.__probe!.names === HOOK_NAMES) + '\\n') },
  hooks: { connect() { return undefined } },
})
`,
    )
    const relay = await startRelay({ dir, config: { plugins: ['./probe.ts'] } })
    relays.push(relay)
    // The same settings as a relay.config.ts that imports relay-mta, next to the JSON the harness wrote.
    const settings = fs.readFileSync(relay.configFile, 'utf8')
    const tsConfig = path.join(dir, 'relay.config.ts')
    fs.writeFileSync(tsConfig, `import { defineConfig } from 'relay-mta'\nexport default defineConfig(${settings.trim()} as never)\n`)
    await relay.stop()
    fs.rmSync(path.join(dir, 'trace'))
    const child = spawn(process.execPath, [BIN, 'start', '--config', tsConfig], { cwd: dir, stdio: 'ignore' })
    try {
      await eventually(() => trace(dir).length === 1, 30_000, 'the relay started on relay.config.ts')
      for (const v of ['v2', 'v3', 'v4']) {
        fs.writeFileSync(path.join(dir, 'helper.ts'), `export const version: string = '${v}'\n`)
        const r = await runCliAsync(['reload', '--config', tsConfig])
        expect(r.code, r.stderr).toBe(0)
      }
      expect(trace(dir)).toEqual(['start v1 same core: true', 'reload v2 same core: true', 'reload v3 same core: true', 'reload v4 same core: true'])
    } finally {
      child.kill('SIGTERM')
      await new Promise((r) => child.once('exit', r))
    }
  })
})
