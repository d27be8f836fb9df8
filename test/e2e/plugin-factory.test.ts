// A plugin as its author writes it beyond the plain object: a setup that makes the hooks (the
// factory form), a package that is ESM only, a setup that throws from a timer or ends the process,
// a bundled plugin another plugin tries to change, a reload while a hook of the old generation runs.
import { afterAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { rcptReply, sendMail } from '../harness/smtp-client.js'
import { ROOT, eventually, runCliAsync, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const relays: RelayProcess[] = []
afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()))
})

const rcpt = (relay: RelayProcess, to: string, localAddress?: string) => rcptReply(relay.port, to, { localAddress })

const read = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '')

function configFile(dir: string, plugins: unknown[], more: Record<string, unknown> = {}): string {
  const file = path.join(dir, 'relay.config.json')
  fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', dataDir: './data', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], log: { level: 'silent' }, plugins, ...more }))
  return file
}

// The factory form: setup returns { hooks, events, teardown, state }.
const FACTORY = `import fs from 'node:fs'
export default {
  name: 'factory',
  setup(ctx) {
    const state = { made: 'in setup', role: ctx.processes.role }
    return {
      state,
      hooks: { rcpt({ state, envelope }) { return { action: 'reject', code: 550, message: 'factory ' + state.made } } },
      events: { rejected() { fs.appendFileSync(ctx.resolvePath('heard'), 'rejected\\n') } },
      teardown({ state }) { fs.appendFileSync(ctx.resolvePath('torn'), state.made + '\\n') },
    }
  },
}
`

describe('setup returns { hooks, events, teardown, state } (the factory form)', () => {
  for (const workers of [undefined, 2]) {
    it(`its hooks decide, its events are heard, its state is ctx.state, its teardown runs at stop${workers ? ' (workers: 2: in every SMTP worker)' : ''}`, async () => {
      const dir = tempDir()
      fs.writeFileSync(path.join(dir, 'factory.mjs'), FACTORY)
      const relay = await startRelay({ dir, config: { plugins: ['./factory.mjs'], ...(workers ? { workers } : {}) } })
      try {
        for (let i = 0; i < 4; i++) expect(await rcpt(relay, `u${i}@dest.test`)).toBe('550 5.7.1 factory in setup')
        await eventually(() => expect(read(path.join(dir, 'heard')).split('\n').filter(Boolean).length).toBe(4))
        expect(relay.logs.some((l) => String(l.msg).includes('never called'))).toBe(false)
      } finally {
        await relay.stop()
      }
      expect(read(path.join(dir, 'torn'))).toMatch(/^(in setup\n)+$/)
    })
  }

  const refused: [string, string, RegExp][] = [
    ['a hook name that is none', "return { hooks: { rpct() {} }, teardown() { fs.writeFileSync(ctx.resolvePath('undone'), 'yes') } }", /plugins\[0\] \(made\): setup returned unknown hook 'rpct' .*\[RELAY_ERR_UNKNOWN_HOOK\]/],
    ['a hook under events', "return { events: { rcpt() {} }, teardown() { fs.writeFileSync(ctx.resolvePath('undone'), 'yes') } }", /setup returned events\.rcpt: a hook, not an event .*\[RELAY_ERR_UNKNOWN_HOOK\]/],
    ['a hook the object has too', "return { hooks: { mail() {} }, teardown() { fs.writeFileSync(ctx.resolvePath('undone'), 'yes') } }", /setup returned hooks\.mail, and the plugin object has hooks\.mail too.*\[RELAY_ERR_PLUGIN_SHAPE\]/],
    ['CLI verbs', "return { hooks: { rcpt() {} }, commands() {}, teardown() { fs.writeFileSync(ctx.resolvePath('undone'), 'yes') } }", /setup returned commands: CLI verbs are declared on the plugin object.*\[RELAY_ERR_PLUGIN_SHAPE\]/],
  ]
  for (const [what, body, expected] of refused) {
    it(`${what}: check-config and start exit 2 naming the plugin, and what setup made is torn down`, async () => {
      const dir = tempDir()
      fs.writeFileSync(path.join(dir, 'made.mjs'), `import fs from 'node:fs'\nexport default { name: 'made', setup(ctx) { ${body} }, hooks: { mail() {} } }\n`)
      const config = configFile(dir, ['./made.mjs'])
      for (const verb of ['check-config', 'start']) {
        fs.rmSync(path.join(dir, 'undone'), { force: true })
        const r = await runCliAsync([verb, '--config', config])
        expect(r.code, `${verb}: ${r.stderr}`).toBe(2)
        expect(r.stderr).toMatch(expected)
        expect(read(path.join(dir, 'undone')), verb).toBe('yes')
      }
    })
  }

  it('an object with hooks beside other keys is the state, and the log says its hooks are never called', async () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'mixed.mjs'), "export default { name: 'mixed', setup() { return { hooks: { rcpt() { return { action: 'reject' } } }, cache: new Map() } }, hooks: { mail() {} } }\n")
    const relay = await startRelay({ dir, config: { plugins: ['./mixed.mjs'] } })
    relays.push(relay)
    await relay.waitForLog((l) => String(l.msg).startsWith('plugin mixed: setup returned an object with hooks and other keys, so it is the plugin\'s state (ctx.state) and they are never called'), 5000)
    expect(await rcpt(relay, 'a@dest.test')).toMatch(/^550 5\.7\.1 Relaying denied/)
  })
})

describe('a bundled plugin cannot be changed by another plugin', () => {
  it('assigning to relay-acl’s hooks, when loading or in a hook, is refused: relaying stays denied', async () => {
    const dir = tempDir()
    const acl = path.join(ROOT, 'dist/plugins/relay-acl/index.js')
    fs.writeFileSync(
      path.join(dir, 'meddle.mjs'),
      `import fs from 'node:fs'
import acl from ${JSON.stringify(acl)}
const attempt = (what, fn) => { try { fn(); return what + ' changed' } catch { return what + ' refused' } }
const atLoad = [attempt('hooks.rcpt', () => { acl.hooks.rcpt = () => ({ action: 'accept' }) }), attempt('hooks', () => { acl.hooks = {} })]
export default { name: 'meddle', hooks: { connect(ctx) {
  fs.writeFileSync(ctx.resolvePath('attempts'), [...atLoad, attempt('at connect', () => { acl.hooks.rcpt = () => ({ action: 'accept' }) })].join('\\n'))
} } }
`,
    )
    const relay = await startRelay({ dir, config: { plugins: ['./meddle.mjs', ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }]], smtp: { trustedNetworks: ['127.0.0.1/32'] } } })
    relays.push(relay)
    for (let i = 0; i < 2; i++) expect(await rcpt(relay, 'x@remote.test', '127.0.0.9')).toMatch(/^550 5\.7\.1 Relaying denied/)
    expect(read(path.join(dir, 'attempts')).split('\n')).toEqual(['hooks.rcpt refused', 'hooks refused', 'at connect refused'])
  })
})

describe('a reload while a hook of the old generation runs', () => {
  it('the old plugin is torn down only after that hook finished: the message is queued with its state intact', async () => {
    const dir = tempDir()
    fs.writeFileSync(
      path.join(dir, 'slow.mjs'),
      `import fs from 'node:fs'
export default { name: 'slow', setup() { return { open: true } }, teardown({ state }) { state.open = false },
  hooks: { async queue(ctx) {
    fs.writeFileSync(ctx.resolvePath('started'), 'yes')
    await new Promise((r) => setTimeout(r, 1500))
    if (!ctx.state.open) throw new Error('torn down under me')
  } } }
`,
    )
    const relay = await startRelay({ dir, config: { plugins: ['./slow.mjs'], hookTimeout: '10s', localDomains: ['dest.test'] } })
    relays.push(relay)
    const sent = sendMail(relay.port, { from: 'a@sender.test', to: ['u@dest.test'], data: 'Subject: x\r\n\r\nhello\r\n' })
    await eventually(() => expect(fs.existsSync(path.join(dir, 'started'))).toBe(true))
    const reload = await runCliAsync(['reload', '--config', relay.configFile])
    expect(reload.code, reload.stderr).toBe(0)
    expect((await sent).lastReply).toMatch(/^250 /)
    expect(relay.logs.some((l) => String(l.msg).includes('failed in hook queue'))).toBe(false)
  })
})

describe('an npm package plugin', () => {
  it('whose exports name only an import condition (ESM only) loads, and its relay-mta is this Relay', async () => {
    const dir = tempDir()
    const pkg = path.join(dir, 'node_modules', 'relay-plugin-esmonly')
    fs.mkdirSync(path.join(pkg, 'lib'), { recursive: true })
    fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: 'relay-plugin-esmonly', type: 'module', exports: { '.': { import: './lib/index.js' } } }))
    fs.writeFileSync(path.join(pkg, 'lib', 'index.js'), "import { definePlugin, reject } from 'relay-mta'\nexport default definePlugin({ name: 'esmonly', hooks: { rcpt() { return reject('from the package') } } })\n")
    const config = configFile(dir, ['esmonly'])
    const check = await runCliAsync(['check-config', '--config', config])
    expect(check.code, check.stderr).toBe(0)
    expect(check.stdout).toMatch(/plugins esmonly/)
    const relay = await startRelay({ dir, config: { plugins: ['esmonly'] } })
    relays.push(relay)
    expect(await rcpt(relay, 'a@dest.test')).toBe('550 5.7.1 from the package')
  })
})

describe('relay check-config always ends with a verdict', () => {
  const cases: [string, string, RegExp][] = [
    ['a setup whose timer throws', "setup() { setTimeout(() => { throw new Error('late async throw') }, 10); return new Promise((r) => setTimeout(r, 300)) }", /plugins: an error thrown outside any setup's promise .*: late async throw \[RELAY_ERR_PLUGIN_SETUP\]/],
    ['a setup that leaves a rejection unhandled', "setup() { Promise.reject(new Error('nobody awaited')); return new Promise((r) => setTimeout(r, 300)) }", /plugins: an error thrown outside any setup's promise .*: nobody awaited \[RELAY_ERR_PLUGIN_SETUP\]/],
    ['a setup that ends the process', 'setup() { process.exit(0) }', /the process was ended before a verdict \(a plugin called process\.exit\(\)\?\)/],
    ['a watched file that does not parse', "setup(ctx) { ctx.watchFile('list.txt', (t) => JSON.parse(t)) }", /plugins\[0\] \(p\): setup: watchFile \S+list\.txt: .*JSON/],
  ]
  for (const [what, setup, expected] of cases) {
    it(`${what}: exit 2 and the reason, no stack trace`, async () => {
      const dir = tempDir()
      fs.writeFileSync(path.join(dir, 'list.txt'), 'not json')
      fs.writeFileSync(path.join(dir, 'p.mjs'), `export default { name: 'p', ${setup}, hooks: { rcpt() {} } }\n`)
      const r = await runCliAsync(['check-config', '--config', configFile(dir, ['./p.mjs'])])
      expect(r.code, r.stderr + r.stdout).toBe(2)
      expect(r.stderr).toMatch(expected)
      expect(r.stdout).not.toMatch(/config ok/)
      expect(r.stderr).not.toMatch(/\n\s+at /)
    })
  }

  it('relay start with a setup that ends the process: exit 1, saying the process was ended while starting (it exited 0 in silence)', async () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'p.mjs'), "export default { name: 'p', setup() { process.exit(0) }, hooks: { rcpt() {} } }\n")
    const r = await runCliAsync(['start', '--config', configFile(dir, ['./p.mjs'])])
    expect(r.code, r.stderr).toBe(1)
    expect(r.stderr).toMatch(/relay: cannot start: the process was ended while starting \(exit 0\): a plugin called process\.exit\(\)\?/)
  })

  it('two different plugins under one name: a warning naming both (the same plugin twice is fine)', async () => {
    const dir = tempDir()
    for (const f of ['a.mjs', 'b.mjs']) fs.writeFileSync(path.join(dir, f), `export default { name: 'same', hooks: { rcpt() {} } }\n`)
    const twice = await runCliAsync(['check-config', '--config', configFile(dir, ['./a.mjs', './a.mjs'])])
    expect(twice.code, twice.stderr).toBe(0)
    expect(twice.stderr).not.toMatch(/name of/)
    const r = await runCliAsync(['check-config', '--config', configFile(dir, ['./a.mjs', './b.mjs'])])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/warning: plugins\[1\]: plugin 'same' \(\S+b\.mjs\) has the name of plugins\[0\] \(\S+a\.mjs\), another plugin/)
  })
})
