// The plugin API as a plugin author meets it: state from setup, watched files resolved against the
// config's directory, teardown, CLI verbs of a third-party plugin, and the named, coded failures
// (unknown hook or plugin key, a part of the plugin object of the wrong kind, setup that throws or
// never finishes) at start, reload and check-config.
import { afterEach, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { startDns } from '../harness/dns-server.js'
import { connectRaw } from '../harness/smtp-client.js'

const fixture = (name: string) => path.join(ROOT, 'test/fixtures/plugin-api', `${name}.plugin.ts`)
const relays: RelayProcess[] = []

afterEach(async () => {
  await Promise.all(relays.splice(0).map((r) => r.stop()))
})

/** A config file in a directory of its own (not the working directory of the CLI run). */
function writeConfig(plugins: unknown[], extra: Record<string, unknown> = {}): { dir: string; file: string } {
  const dir = tempDir()
  const file = path.join(dir, 'relay.config.json')
  const config = { hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, 'data'), localDomains: ['local.test'], plugins, ...extra }
  fs.writeFileSync(file, JSON.stringify(config))
  return { dir, file }
}

describe('failures name the plugin and carry a code', () => {
  it('an unknown hook name stops start and check-config with exit 2 and RELAY_ERR_UNKNOWN_HOOK', () => {
    const { file } = writeConfig([fixture('typo-hook')])
    for (const verb of ['check-config', 'start']) {
      const r = runCli([verb, '--config', file])
      expect(r.code).toBe(2)
      expect(r.stderr).toContain("plugins[0] (typo-hook): unknown hook 'rpct'")
      expect(r.stderr).toContain('RELAY_ERR_UNKNOWN_HOOK')
    }
  })

  it('a key a plugin does not have (setpu for setup) or a hook that is no function stops start and check-config with exit 2, naming it', () => {
    const cases = [
      { plugin: fixture('typo-key'), text: "plugins[0] (typo-key): unknown key 'setpu'", code: 'RELAY_ERR_UNKNOWN_PLUGIN_KEY' },
      { plugin: fixture('hook-not-function'), text: 'plugins[0] (hook-not-function): hooks.rcpt is string, not a function', code: 'RELAY_ERR_PLUGIN_SHAPE' },
    ]
    for (const { plugin, text, code } of cases) {
      const { file } = writeConfig([plugin])
      for (const verb of ['check-config', 'start']) {
        const r = runCli([verb, '--config', file])
        expect(r.code, r.stderr).toBe(2)
        expect(r.stderr).toContain(text)
        expect(r.stderr).toContain(code)
      }
    }
  })

  it('hooks that would never be called (a Map, a class instance, a `hook` key), a schema that is not zod, an unreadable hook, a name that would forge output: exit 2 naming each, never a TypeError', () => {
    const dir = tempDir()
    const cases: [string, string, string][] = [
      ["{ name: 'maphooks', hooks: new Map([['rcpt', () => ({ action: 'reject' })]]) }", "plugins[0] (maphooks): hooks is a Map, not a plain object of hook functions", 'RELAY_ERR_PLUGIN_SHAPE'],
      ["{ name: 'classhooks', hooks: new (class H { rcpt() { return { action: 'reject' } } })() }", 'plugins[0] (classhooks): hooks is an instance of H, not a plain object of hook functions', 'RELAY_ERR_PLUGIN_SHAPE'],
      ["{ name: 'hookkey', hook: { rcpt: () => ({ action: 'reject' }) } }", "plugins[0] (hookkey): unknown key 'hook'", 'RELAY_ERR_UNKNOWN_PLUGIN_KEY'],
      ["{ name: 'fake', options: { safeParse: (v) => ({ success: false, error: new Error('ok must be set') }) }, hooks: {} }", 'plugins[0] (fake): options: ok must be set', 'RELAY_ERR_PLUGIN_OPTIONS'],
      ["{ name: 'fake2', options: { safeParse: () => undefined }, hooks: {} }", "plugins[0] (fake2): options: the plugin's schema's safeParse returned undefined, not { success, data }", 'RELAY_ERR_PLUGIN_OPTIONS'],
      ["{ name: 'getter', hooks: { get rcpt() { throw new Error('lazy hook failed') } } }", 'plugins[0] (getter): hooks.rcpt cannot be read: lazy hook failed', 'RELAY_ERR_PLUGIN_SHAPE'],
      ["{ name: 'evil\\nplugins fake-ok', hooks: {} }", 'name must not hold control characters', 'RELAY_ERR_PLUGIN_SHAPE'],
      [`{ name: '${'n'.repeat(150)}', hooks: {} }`, 'name is 150 characters long; at most 100', 'RELAY_ERR_PLUGIN_SHAPE'],
    ]
    for (const [i, [plugin, text, code]] of cases.entries()) {
      const file = path.join(dir, `c${i}.mjs`)
      fs.writeFileSync(file, `export default { hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: ${JSON.stringify(path.join(dir, 'data'))}, plugins: [${plugin}] }\n`)
      for (const verb of ['check-config', 'start']) {
        const r = runCli([verb, '--config', file])
        expect(r.code, `${verb} ${plugin}: ${r.stderr}`).toBe(2)
        expect(r.stderr).toContain(text)
        expect(r.stderr).toContain(code)
        expect(r.stderr).not.toMatch(/TypeError|\n\s+at /)
      }
    }
  })

  it('config show prints options JSON cannot hold (a BigInt, an object that contains itself) instead of crashing with a stack', () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'odd.mjs'), "import { z } from 'relay-mta'\nexport default { name: 'odd', options: z.object({ big: z.coerce.bigint().default(10n), tree: z.any().transform((v) => { const t = { a: 'x' }; t.self = t; return t }) }), hooks: {} }\n")
    const { file } = writeConfig([[path.join(dir, 'odd.mjs'), { tree: 1 }]])
    const r = runCli(['config', 'show', '--config', file])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('plugins[0].options.big = "10n"\n')
    expect(r.stdout).toContain('plugins[0].options.tree.a = "x"\n')
    expect(r.stdout).toContain('plugins[0].options.tree.self = "<circular>"\n')
    const json = runCli(['config', 'show', '--json', '--config', file])
    expect(json.code, json.stderr).toBe(0)
    expect(JSON.parse(json.stdout).plugins[0].options).toEqual({ big: '10n', tree: { a: 'x', self: '<circular>' } })
  })

  it("check-config: a plugin's teardown that throws is a warning after the verdict (exit 0); a setup's function is the state when the plugin has a teardown of its own; an async watchFile parse stops the start naming the plugin", () => {
    const dir = tempDir()
    const write = (name: string, text: string) => fs.writeFileSync(path.join(dir, name), text)
    write('td.mjs', "export default { name: 'td', setup: () => ({}), teardown: () => { throw new TypeError('teardown oops') }, hooks: {} }\n")
    write('fnstate.mjs', "export default { name: 'fnstate', setup: () => (a) => a === 'x', teardown: () => { console.error('TEARDOWN RAN') }, hooks: { rcpt: ({ state }) => { if (typeof state !== 'function') throw new Error('state is ' + typeof state) } } }\n")
    write('list.json', '["a@b.test"')
    write('asyncparse.mjs', "export default { name: 'asyncparse', setup: ({ watchFile }) => ({ list: watchFile('list.json', async (t) => JSON.parse(t)) }), hooks: {} }\n")
    const td = runCli(['check-config', '--config', writeConfig([path.join(dir, 'td.mjs')]).file])
    expect(td.code, td.stderr).toBe(0)
    expect(td.stdout).toContain('config ok')
    expect(td.stderr).toContain('relay: warning: plugins[0] (td) teardown failed: teardown oops')
    expect(td.stderr).not.toMatch(/\n\s+at /)
    const fn = runCli(['check-config', '--config', writeConfig([path.join(dir, 'fnstate.mjs')]).file])
    expect(fn.code, fn.stderr).toBe(0)
    expect(fn.stderr).toContain('TEARDOWN RAN')
    const { file } = writeConfig([path.join(dir, 'asyncparse.mjs')])
    fs.copyFileSync(path.join(dir, 'list.json'), path.join(path.dirname(file), 'list.json'))
    for (const verb of ['check-config', 'start']) {
      const r = runCli([verb, '--config', file])
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toContain('plugins[0] (asyncparse): setup: watchFile(')
      expect(r.stderr).toContain('parse returned a Promise')
      expect(r.stderr).toContain('RELAY_ERR_PLUGIN_SETUP')
    }
  })

  it('a plugin object of the wrong shape (options no schema, ports a list, teardown a number): check-config lists every problem, start stops at the first, both exit 2 without a stack trace', () => {
    const dir = tempDir()
    const file = path.join(dir, 'relay.config.mjs')
    const plugin = "{ name: 'misshapen', options: { port: 1 }, ports: [25], teardown: 5, hooks: { rcpt: 'accept' } }"
    fs.writeFileSync(file, `export default { hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: ${JSON.stringify(path.join(dir, 'data'))}, plugins: [${plugin}] }\n`)
    const check = runCli(['check-config', '--config', file])
    expect(check.code, check.stderr).toBe(2)
    for (const line of [
      'plugins[0] (misshapen): options is object, not a zod schema',
      'plugins[0] (misshapen): teardown is number, not a function',
      'plugins[0] (misshapen): ports is a list, not a function',
      'plugins[0] (misshapen): hooks.rcpt is string, not a function',
    ]) expect(check.stderr).toContain(line)
    const start = runCli(['start', '--config', file])
    expect(start.code, start.stderr).toBe(2)
    expect(start.stderr).toContain('plugins[0] (misshapen): options is object, not a zod schema (z.object({ ... }) with the z that relay-mta exports) [RELAY_ERR_PLUGIN_SHAPE]')
    for (const r of [check, start]) expect(r.stderr).not.toMatch(/TypeError|\n\s+at /)
  })

  it('whatever plugin or config code throws (a string, null, an object without toString), and a ports() or options schema that throws or returns the wrong thing: exit 2 naming it, never a TypeError of the core', () => {
    const dir = tempDir()
    const data = JSON.stringify(path.join(dir, 'data'))
    const config = (plugins: string, name = 'relay.config.mjs', before = '') => {
      const file = path.join(dir, name)
      fs.writeFileSync(file, `${before}export default { hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: ${data}, plugins: [${plugins}] }\n`)
      return file
    }
    fs.writeFileSync(path.join(dir, 'throws-at-import.mjs'), "throw 'cannot reach the licence server'\n")
    const cases = [
      { file: config('', 'throws-null.config.mjs', 'throw null\n'), text: 'cannot load config: null (not an Error)' },
      { file: config('', 'rejects.config.mjs', 'await Promise.reject(42)\n'), text: 'cannot load config: 42 (not an Error)' },
      { file: config("'./throws-at-import.mjs'", 'import.config.mjs'), text: "plugins[0]: cannot load plugin './throws-at-import.mjs': cannot reach the licence server [RELAY_ERR_PLUGIN_LOAD]" },
      { file: config("{ name: 'bare', setup() { throw Object.create(null) } }", 'setup.config.mjs'), text: 'plugins[0] (bare): setup: {} (not an Error) [RELAY_ERR_PLUGIN_SETUP]' },
      { file: config("{ name: 'undef', setup() { throw undefined } }", 'undef.config.mjs'), text: 'plugins[0] (undef): setup: undefined (not an Error) [RELAY_ERR_PLUGIN_SETUP]' },
      { file: config("{ name: 'ports', ports() { throw null }, hooks: {} }", 'ports-throw.config.mjs'), text: 'plugins[0] (ports): ports(options) threw: null (not an Error) [RELAY_ERR_PLUGIN_PORTS]' },
      { file: config("{ name: 'ports', ports() { return 2525 }, hooks: {} }", 'ports-number.config.mjs'), text: 'plugins[0] (ports): ports(options) returned number, not a list of { host, port, key } [RELAY_ERR_PLUGIN_PORTS]' },
      { file: config("{ name: 'ports', ports() { return [{ port: '25' }] }, hooks: {} }", 'ports-item.config.mjs'), text: 'plugins[0] (ports): ports(options)[0] is not { host: string, port: 0 to 65535, key: string } [RELAY_ERR_PLUGIN_PORTS]' },
      { file: config("{ name: 'schema', options: { safeParse() { throw 'refinement failed' } }, hooks: {} }", 'schema.config.mjs'), text: "plugins[0] (schema): options: the plugin's schema threw: refinement failed [RELAY_ERR_PLUGIN_OPTIONS]" },
    ]
    const getter = path.join(dir, 'getter.config.mjs')
    fs.writeFileSync(getter, "export default { hostname: 'relay.test', get dataDir() { throw new Error('vault lookup failed') } }\n")
    cases.push({ file: getter, text: 'the config cannot be read: vault lookup failed' })
    for (const { file, text } of cases) {
      for (const verb of ['check-config', 'start']) {
        const r = runCli([verb, '--config', file])
        expect(r.stderr, `${verb} ${path.basename(file)}`).toContain(text)
        expect(r.code, `${verb} ${path.basename(file)}: ${r.stderr}`).toBe(2)
        expect(r.stderr).not.toMatch(/TypeError|Cannot (read|set|create) propert|\n\s+at /)
      }
    }
    // A plugin's CLI verb that throws an object without toString: its text, exit 1, no crash of the error report.
    const verb = config("{ name: 'verbs', commands(program) { program.command('explode').option('-c, --config <file>').action(() => { throw Object.create(null) }) } }", 'verb.config.mjs')
    const r = runCli(['explode', '--config', verb])
    expect(r.stderr).toBe('relay: {} (not an Error)\n')
    expect(r.code).toBe(1)
  }, 90_000)

  it('a config file or plugin module whose top-level await never settles: exit 2 naming it within the limit, never a hang or a silent exit 0', () => {
    const dir = tempDir()
    const data = JSON.stringify(path.join(dir, 'data'))
    const config = (plugins: string, name: string, before = '') => {
      const file = path.join(dir, name)
      fs.writeFileSync(file, `${before}export default { hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: ${data}, setupTimeout: '1s', plugins: [${plugins}] }\n`)
      return file
    }
    // Nothing pending (the process would simply end) and a timer pending (it would hang).
    fs.writeFileSync(path.join(dir, 'never.mjs'), "await new Promise(() => {})\nexport default { name: 'never', hooks: {} }\n")
    fs.writeFileSync(path.join(dir, 'slow.mjs'), "await new Promise((r) => setTimeout(r, 3_600_000))\nexport default { name: 'slow', hooks: {} }\n")
    for (const module of ['never', 'slow']) {
      const file = config(`'./${module}.mjs'`, `${module}.config.mjs`)
      for (const verb of ['check-config', 'start']) {
        const began = Date.now()
        const r = runCli([verb, '--config', file])
        expect(r.stderr, `${verb} ${module}`).toContain(`plugins[0]: cannot load plugin './${module}.mjs': its module did not finish loading within 1000 ms (config setupTimeout)`)
        expect(r.stderr).toContain('[RELAY_ERR_PLUGIN_LOAD]')
        expect(r.code).toBe(2)
        expect(Date.now() - began).toBeLessThan(15_000)
      }
    }
    for (const [name, wait] of [['never-config.mjs', 'await new Promise(() => {})\n'], ['slow-config.mjs', 'await new Promise((r) => setTimeout(r, 3_600_000))\n']] as const) {
      const file = config('', name, wait)
      for (const verb of ['check-config', 'start']) {
        const r = runCli([verb, '--config', file], { env: { RELAY_CONFIG_LOAD_TIMEOUT: '1s' } })
        expect(r.stderr, `${verb} ${name}`).toContain('cannot load config: the file did not finish loading within 1000 ms')
        expect(r.code).toBe(2)
      }
    }
    // A plugin's verb waiting on a promise that never settles: said, exit 1 (not a silent 0).
    const verb = config("{ name: 'verbs', commands(program) { program.command('wait-forever').option('-c, --config <file>').action(() => new Promise(() => {})) } }", 'verb.config.mjs')
    const r = runCli(['wait-forever', '--config', verb])
    expect(r.stderr).toContain('relay: the command did not finish: what it waited for can never happen')
    expect(r.code).toBe(1)
    // Nine CLI runs one after the other: about 18 s on a quiet machine, twice that on a busy one.
  }, 90_000)

  it('a setup that throws: exit 2 naming plugins[1] and its message', () => {
    const { file } = writeConfig([['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }], fixture('setup-throws')])
    for (const verb of ['check-config', 'start']) {
      const r = runCli([verb, '--config', file])
      expect(r.code).toBe(2)
      expect(r.stderr).toContain('plugins[1] (setup-throws): setup: backend unreachable at db.example:5432')
      expect(r.stderr).toContain('RELAY_ERR_PLUGIN_SETUP')
    }
  })

  it('a setup that never finishes: start and check-config end within setupTimeout with exit 2', () => {
    // 3 s: the bound covers the module's load too (a .ts fixture compiled by tsx), slow on a busy machine.
    const { file } = writeConfig([fixture('setup-hangs')], { setupTimeout: '3s' })
    for (const verb of ['check-config', 'start']) {
      const began = Date.now()
      const r = runCli([verb, '--config', file])
      expect(r.code).toBe(2)
      expect(r.stderr).toContain('plugins[0] (setup-hangs): setup did not finish within 3000 ms')
      expect(r.stderr).toContain('RELAY_ERR_PLUGIN_SETUP_TIMEOUT')
      expect(Date.now() - began).toBeLessThan(20_000)
    }
  })

  it('check-config prints its verdict and exits 0 for a good config', () => {
    const { dir, file } = writeConfig([[fixture('stateful'), { blockFile: 'blocked.txt' }]])
    fs.writeFileSync(path.join(dir, 'blocked.txt'), 'nobody@local.test\n')
    const r = runCli(['check-config', '--config', file])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('config ok')
    expect(r.stdout).toContain('plugins stateful')
  })

  it('a teardown that never finishes holds up neither a reload nor the stop: each gives up after setupTimeout, naming the plugin', async () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'stuck.mjs'), "export default { name: 'stuck', setup: () => ({}), teardown: () => new Promise(() => {}), hooks: {} }\n")
    const relay = await startRelay({ dir, config: { localDomains: ['local.test'], setupTimeout: '1s', shutdownTimeout: '2s', plugins: [path.join(dir, 'stuck.mjs')] } })
    relays.push(relay)
    for (const round of [1, 2]) {
      relay.child.kill('SIGHUP')
      await relay.waitForLog((l) => l.msg === 'config reloaded' && relay.logs.filter((x) => x.msg === 'config reloaded').length === round, 10_000)
    }
    const gaveUp = relay.logs.filter((l) => String(l.msg).startsWith('plugin stuck teardown failed: teardown did not finish within 1000 ms'))
    expect(gaveUp.length).toBeGreaterThanOrEqual(1)
    expect(await rcptReplies(relay.port, ['someone@local.test'])).toEqual([expect.stringMatching(/^250 /)])
    const began = Date.now()
    expect(await relay.stop('SIGTERM', 20_000)).toBe(0)
    expect(Date.now() - began).toBeLessThan(10_000)
    expect(relay.logs.some((l) => l.msg === 'relay stopped')).toBe(true)
  })

  it('a reload to a plugin whose setup hangs is refused within setupTimeout; the running plugins stay', async () => {
    const relay = await startRelay({ config: { localDomains: ['local.test'], setupTimeout: '3s', plugins: [] } })
    relays.push(relay)
    const written = JSON.parse(fs.readFileSync(relay.configFile, 'utf8')) as Record<string, unknown>
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...written, plugins: [fixture('setup-hangs')] }))
    relay.child.kill('SIGHUP')
    const refused = await relay.waitForLog((l) => String(l.msg).startsWith('config reload refused'), 10_000)
    expect(String(refused.msg)).toContain('plugins[0] (setup-hangs): setup did not finish')
    // A second reload is not blocked behind the first.
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...written, smtp: { reverseLookup: false, maxRecipients: 7 } }))
    relay.child.kill('SIGHUP')
    await relay.waitForLog((l) => l.msg === 'config reloaded', 10_000)
    // A plugin module whose top-level await never settles is refused the same way.
    const never = path.join(path.dirname(relay.configFile), 'never.mjs')
    fs.writeFileSync(never, "await new Promise(() => {})\nexport default { name: 'never', hooks: {} }\n")
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...written, plugins: [never] }))
    relay.child.kill('SIGHUP')
    const again = await relay.waitForLog((l) => String(l.msg).startsWith('config reload refused') && String(l.msg).includes('never.mjs'), 10_000)
    expect(String(again.msg)).toContain('its module did not finish loading within 3000 ms')
    expect(await rcptReplies(relay.port, ['someone@local.test'])).toEqual([expect.stringMatching(/^250 /)])
  })

  it('a reload runs the plugin code now on disk, for .mjs, .js and .ts plugins alike (and a .ts one that imports relay-mta)', async () => {
    const dir = tempDir()
    const files = { 'v.mjs': '', 'v.js': '', 'v.ts': '', 'vm.ts': "import { reject } from 'relay-mta'\n" }
    const write = (version: string) => {
      for (const [name, head] of Object.entries(files)) {
        const verdict = head ? `reject('5.7.1', '${name} ${version}')` : `({ action: 'reject', code: 550, message: '${name} ${version}' })`
        fs.writeFileSync(path.join(dir, name), `${head}export default { name: '${name}', hooks: { rcpt: ({ recipient }) => recipient.address.startsWith('${name}@') ? ${verdict} : undefined } }\n`)
      }
    }
    fs.writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n')
    write('one')
    const relay = await startRelay({ dir, config: { localDomains: ['local.test'], plugins: Object.keys(files).map((f) => path.join(dir, f)) } })
    relays.push(relay)
    const replies = () => rcptReplies(relay.port, Object.keys(files).map((f) => `${f}@local.test`))
    expect(await replies()).toEqual(Object.keys(files).map((f) => expect.stringContaining(`${f} one`)))
    write('two')
    const r = runCli(['reload', '--config', relay.configFile])
    expect(r.code, r.stderr).toBe(0)
    expect(await replies()).toEqual(Object.keys(files).map((f) => expect.stringContaining(`${f} two`)))
  })
})

describe('keepOnReload', () => {
  it('a kept plugin swapped for another file of the same name keeps running, and the reload names it as needing a restart', async () => {
    const dir = tempDir()
    for (const v of ['A', 'B']) fs.writeFileSync(path.join(dir, `kept${v}.mjs`), `export default { name: 'kept', keepOnReload: true, hooks: { rcpt: () => ({ action: 'reject', code: 550, message: 'file ${v}' }) } }\n`)
    const relay = await startRelay({ dir, config: { localDomains: ['local.test'], plugins: [path.join(dir, 'keptA.mjs')] } })
    relays.push(relay)
    expect(await rcptReplies(relay.port, ['x@local.test'])).toEqual([expect.stringContaining('file A')])
    const written = JSON.parse(fs.readFileSync(relay.configFile, 'utf8')) as Record<string, unknown>
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...written, plugins: [path.join(dir, 'keptB.mjs')] }))
    const r = runCli(['reload', '--config', relay.configFile])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('needs a restart to take effect: plugins[0] (kept)')
    expect(await rcptReplies(relay.port, ['x@local.test'])).toEqual([expect.stringContaining('file A')])
  })
})

/** RCPT replies for `to` in one session (no DATA). */
async function rcptReplies(port: number, to: string[]): Promise<string[]> {
  const { client } = await connectRaw(port)
  await client.command('EHLO client.test')
  await client.command('MAIL FROM:<a@sender.test>')
  const replies: string[] = []
  for (const r of to) replies.push(await client.command(`RCPT TO:<${r}>`))
  await client.command('QUIT').catch(() => undefined)
  client.close()
  return replies
}

describe('state, watched files and commands', () => {
  it("setup's state reaches the hooks; the watched file is resolved against the config's directory and re-read on change", async () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'blocked.txt'), 'nobody@local.test\n')
    const relay = await startRelay({ dir, config: { localDomains: ['local.test'], plugins: [[fixture('stateful'), { blockFile: 'blocked.txt', marker: 'teardown.txt' }]] } })
    relays.push(relay)
    const first = await rcptReplies(relay.port, ['nobody@local.test', 'somebody@local.test'])
    expect(first[0]).toMatch(/^550 5\.7\.1 blocked by list \(1 seen\)/)
    expect(first[1]).toMatch(/^250/)
    fs.writeFileSync(path.join(dir, 'blocked.txt'), 'somebody@local.test\n')
    await relay.waitForLog((l) => l.msg === 'watched file reloaded')
    const second = await rcptReplies(relay.port, ['nobody@local.test', 'somebody@local.test'])
    expect(second[0]).toMatch(/^250/)
    expect(second[1]).toMatch(/^550 5\.7\.1 blocked by list \(4 seen\)/)
    await relay.stop()
    // The teardown ran with the state of its generation: 4 recipients seen.
    expect(fs.readFileSync(path.join(dir, 'teardown.txt'), 'utf8')).toBe('seen 4\n')
  })

  it("a plugin that writes to the session it was handed (the user's senders, the listener's role and PROXY senders) changes nothing for the core or for later sessions", async () => {
    const dir = tempDir()
    const meddler = `export default { name: 'meddler', hooks: { mail: ({ session }) => {
      session.senders?.push('*')
      session.trusted = true
      Object.assign(session.listener, { role: 'submission', proxyProtocol: ['0.0.0.0/0'], allowPlaintextAuth: true })
    } } }\n`
    fs.writeFileSync(path.join(dir, 'meddler.mjs'), meddler)
    const relay = await startRelay({
      dir,
      config: {
        listen: [{ host: '127.0.0.1', port: 0, role: 'mx', allowPlaintextAuth: true }],
        localDomains: ['local.test'],
        plugins: [[path.join(ROOT, 'test/fixtures/static-auth.plugin.ts'), { users: { 'u@own.test': { password: 'pw', senders: ['u@own.test'] } } }], path.join(dir, 'meddler.mjs')],
      },
    })
    relays.push(relay)
    const { client } = await connectRaw(relay.port)
    await client.command('EHLO client.test')
    expect(await client.command(`AUTH PLAIN ${Buffer.from('\0u@own.test\0pw').toString('base64')}`)).toMatch(/^235 /)
    expect(await client.command('MAIL FROM:<u@own.test>')).toMatch(/^250 /)
    await client.command('RSET')
    // The user's senders are as its backend gave them.
    expect(await client.command('MAIL FROM:<someone@else.test>')).toMatch(/^553 5\.7\.1 /)
    await client.command('QUIT').catch(() => undefined)
    client.close()
    // The next sessions on the listener: still an MX listener that takes mail for local domains
    // without AUTH, and a PROXY header from this client is not trusted.
    for (let i = 0; i < 2; i++) {
      const next = (await connectRaw(relay.port)).client
      await next.command('EHLO other.test')
      expect(await next.command('MAIL FROM:<a@sender.test>')).toMatch(/^250 /)
      expect(await next.command('RCPT TO:<someone@local.test>')).toMatch(/^250 /)
      await next.command('QUIT').catch(() => undefined)
      next.close()
    }
    const proxied = (await connectRaw(relay.port)).client
    const reply = await proxied.command('PROXY TCP4 192.0.2.7 127.0.0.1 40000 25').catch((e: Error) => e.message)
    expect(reply).not.toMatch(/^2/)
    proxied.close()
  })

  it("a plugin that rewrites the recipient, sender or session it was shown changes neither what the next plugin sees nor the core's checks (a suppressed address stays refused)", async () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'canon.mjs'), `export default { name: 'canon', hooks: {
      mail: ({ sender, session }) => { sender.address = 'forged@local.test'; sender.args.SIZE = '1'; session.trusted = true },
      rcpt: ({ recipient, envelope, session }) => { recipient.address = recipient.address.replace(/[+][^@]*/, ''); envelope.recipients.length = 0; session.listener.role = 'submission' },
    } }\n`)
    fs.writeFileSync(path.join(dir, 'spy.mjs'), `export default { name: 'spy', hooks: {
      mail: ({ sender, session, log }) => { log.info({ saw: sender.address, size: sender.args.SIZE ?? null, trusted: session.trusted }, 'spy: mail') },
      rcpt: ({ recipient, session, log }) => { log.info({ saw: recipient.address, role: session.listener.role }, 'spy: rcpt') },
    } }\n`)
    const relay = await startRelay({ dir, config: { localDomains: ['local.test'], plugins: [path.join(dir, 'canon.mjs'), path.join(dir, 'spy.mjs')] } })
    relays.push(relay)
    const added = runCli(['suppression', 'add', 'bob+news@local.test', '--config', relay.configFile])
    expect(added.code, added.stderr).toBe(0)
    const { client } = await connectRaw(relay.port)
    await client.command('EHLO client.test')
    expect(await client.command('MAIL FROM:<a@sender.test> SIZE=100')).toMatch(/^250 /)
    expect(await client.command('RCPT TO:<bob+news@local.test>')).toMatch(/^550 5\.1\.1 <bob\+news@local\.test>: recipient suppressed/)
    expect(await client.command('RCPT TO:<carol+x@local.test>')).toMatch(/^250 /)
    await client.command('QUIT').catch(() => undefined)
    client.close()
    const mail = await relay.waitForLog((l) => l.msg === 'spy: mail')
    expect(mail).toMatchObject({ saw: 'a@sender.test', size: '100', trusted: false })
    await relay.waitForLog((l) => l.msg === 'spy: rcpt' && l.saw === 'carol+x@local.test')
    const rcpts = relay.logs.filter((l) => l.msg === 'spy: rcpt')
    expect(rcpts.map((l) => [l.saw, l.role])).toEqual([['bob+news@local.test', 'mx'], ['carol+x@local.test', 'mx']])
  })

  it("the operator API (ctx.relay) is one frozen object: a plugin cannot replace a queue verb under the others", () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'swapper.mjs'), "export default { name: 'swapper', setup: ({ relay }) => { relay.queue.list = async () => []; return {} }, hooks: {} }\n")
    fs.writeFileSync(path.join(dir, 'swapper2.mjs'), "export default { name: 'swapper2', setup: ({ relay }) => { relay.inject = async () => ({ queueId: 'x' }); return {} }, hooks: {} }\n")
    for (const [name, key] of [['swapper', 'list'], ['swapper2', 'inject']]) {
      const file = path.join(dir, `${name}.json`)
      fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, 'data'), plugins: [path.join(dir, `${name}.mjs`)] }))
      const r = runCli(['start', '--config', file])
      expect(r.stderr).toContain(`plugins[0] (${name}): setup: Cannot assign to read only property '${key}'`)
      expect(r.code).toBe(2)
    }
  })

  it("ctx.resolver answers queries but will not be re-pointed for everyone: setServers is refused, naming the plugin", async () => {
    const dir = tempDir()
    const dns = await startDns({ 'where.test': { TXT: ['v=ok'] } })
    try {
      // A query through ctx.resolver works (config dns.servers); setServers at setup stops the start naming the plugin.
      fs.writeFileSync(path.join(dir, 'asks.mjs'), "export default { name: 'asks', hooks: { rcpt: async ({ resolver }) => { const txt = await resolver.resolveTxt('where.test'); return { action: 'reject', message: 'txt ' + txt.flat().join('') } } } }\n")
      fs.writeFileSync(path.join(dir, 'repoints.mjs'), "export default { name: 'repoints', setup: ({ resolver }) => { resolver.setServers(['127.0.0.1:1']); return {} }, hooks: {} }\n")
      const base = { hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, 'data'), localDomains: ['local.test'], dns: { servers: [dns.server], timeout: '1s' } }
      const file = path.join(dir, 'repoints.json')
      fs.writeFileSync(file, JSON.stringify({ ...base, plugins: [path.join(dir, 'repoints.mjs')] }))
      const r = runCli(['check-config', '--config', file])
      expect(r.stderr).toContain("plugins[0] (repoints): setup: ctx.resolver.setServers: the relay's resolver is shared (config dns.servers)")
      expect(r.code).toBe(2)
      // Nor can a method be replaced under the core, by assignment or by defineProperty.
      for (const [name, how] of [['assigns', "resolver.resolveMx = async () => []"], ['defines', "Object.defineProperty(resolver, 'resolveMx', { value: async () => [] })"], ['deletes', 'delete resolver.resolveMx']]) {
        fs.writeFileSync(path.join(dir, `${name}.mjs`), `export default { name: '${name}', setup: ({ resolver }) => { ${how}; return {} }, hooks: {} }\n`)
        fs.writeFileSync(file, JSON.stringify({ ...base, plugins: [path.join(dir, `${name}.mjs`)] }))
        const w = runCli(['check-config', '--config', file])
        expect(w.code, w.stderr).toBe(2)
        expect(w.stderr).toContain(`plugins[0] (${name}): setup: ctx.resolver.resolveMx cannot be changed: the relay's resolver is shared`)
      }
      const relay = await startRelay({ dir, config: { localDomains: ['local.test'], dns: base.dns, plugins: [path.join(dir, 'asks.mjs')] } })
      relays.push(relay)
      expect(await rcptReplies(relay.port, ['someone@local.test'])).toEqual([expect.stringMatching(/^550 .*txt v=ok/)])
    } finally {
      await dns.close()
    }
  })

  it("a third-party plugin's CLI verb is available when the plugin is in the config", () => {
    const { dir, file } = writeConfig([[fixture('stateful'), { blockFile: 'blocked.txt' }]])
    fs.writeFileSync(path.join(dir, 'blocked.txt'), '')
    const r = runCli(['stateful-hello', 'world', '--config', file])
    expect(r.stderr).toBe('')
    expect(r.stdout).toBe('hello world from the stateful plugin\n')
    expect(r.code).toBe(0)
    const help = runCli(['--help', '--config', file])
    expect(help.stdout).toContain('stateful-hello')
    // Without it in the config, the verb is unknown.
    expect(runCli(['stateful-hello', 'world']).code).not.toBe(0)
  })

  it("plugin verbs: a plugin adds its own and cannot reach others' (replace an action, hook every verb, take a name in use)", () => {
    const dir = tempDir()
    fs.writeFileSync(
      path.join(dir, 'meddle.mjs'),
      `export default { name: 'meddle', hooks: {}, commands(program) {
  for (const c of program.commands) if (c.name() === 'queue') for (const s of c.commands) s.action(() => console.log('hijacked'))
  program.hook('preAction', (_this, cmd) => console.log('saw ' + cmd.name() + ' ' + JSON.stringify(cmd.opts())))
  program.command('queue').action(() => console.log('my queue'))
  program.command('meddle-hello').option('-c, --config <file>').action(() => console.log('meddle ok'))
} }\n`,
    )
    const { file } = writeConfig([path.join(dir, 'meddle.mjs')])
    const list = runCli(['queue', 'list', '--config', file])
    expect(list.code, list.stderr).toBe(0)
    expect(list.stdout).not.toMatch(/hijacked|saw |my queue/)
    expect(list.stderr).toContain("relay: plugin meddle's verb 'queue' is not added: `relay queue` is there already")
    const own = runCli(['meddle-hello', '--config', file])
    expect(own.stdout, own.stderr).toBe('meddle ok\n')
    expect(own.code).toBe(0)
  })

  it("plugin verbs: an async commands() counts once it settles, its rejection costs that plugin's verbs only, two plugins of one name keep theirs, and an unknown verb says which plugin could not be loaded", () => {
    const dir = tempDir()
    const write = (name: string, text: string) => fs.writeFileSync(path.join(dir, name), text)
    write('late.mjs', "export default { name: 'late', hooks: {}, async commands(program) { await new Promise((r) => setTimeout(r, 20)); program.command('late-hello').option('-c, --config <file>').action(() => console.log('late ok')) } }\n")
    write('rejects.mjs', "export default { name: 'rejects', hooks: {}, async commands(program) { throw new Error('no licence for the verbs') } }\n")
    write('twin1.mjs', "export default { name: 'twin', hooks: {}, commands(program) { program.command('twin-one').option('-c, --config <file>').action(() => console.log('one ok')) } }\n")
    write('twin2.mjs', "export default { name: 'twin', hooks: {}, commands(program) { program.command('twin-two').option('-c, --config <file>').action(() => console.log('two ok')) } }\n")
    write('broken.mjs', "JSON.parse('')\nexport default { name: 'broken', hooks: {}, commands(program) { program.command('broken-hello') } }\n")
    const { file } = writeConfig(['late.mjs', 'rejects.mjs', 'twin1.mjs', 'twin2.mjs', 'broken.mjs'].map((f) => path.join(dir, f)))
    for (const [verb, out] of [['late-hello', 'late ok'], ['twin-one', 'one ok'], ['twin-two', 'two ok']]) {
      const r = runCli([verb!, '--config', file])
      expect(r.stdout, r.stderr).toBe(`${out}\n`)
      expect(r.code).toBe(0)
      expect(r.stderr).toContain('relay: the commands of plugin rejects are unavailable: no licence for the verbs')
      expect(r.stderr).not.toMatch(/\n\s+at |Node\.js v/)
    }
    // The core's and the bundled plugins' verbs are not taken down by one plugin's rejection.
    const list = runCli(['queue', 'list', '--config', file])
    expect(list.code, list.stderr).toBe(0)
    const unknown = runCli(['broken-hello', '--config', file])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain("relay: plugins[4] cannot be loaded, so its verbs are unavailable: plugins[4]: cannot load plugin")
    expect(unknown.stderr).toContain('Unexpected end of JSON input [RELAY_ERR_PLUGIN_LOAD]')
    expect(unknown.stderr).toContain("unknown command 'broken-hello'")
    // A config that does not load says so too, for a verb that is then unknown.
    fs.writeFileSync(file, JSON.stringify({ hostnme: 'x', plugins: [path.join(dir, 'late.mjs')] }))
    const bad = runCli(['late-hello', '--config', file])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain("relay: the config cannot be loaded, so its plugins' verbs are unavailable: hostnme: unknown key")
  })
})
