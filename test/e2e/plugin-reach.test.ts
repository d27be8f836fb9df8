// What one plugin can do to the core and to other plugins through what relay-mta exports, and the
// plugin mistakes that used to pass without a word: a plugin object that cannot be read, hooks the
// bus would never see, a verdict key with a typo, a setup that returns hooks inside its state.
import { afterAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { rcptReply } from '../harness/smtp-client.js'
import { runCliAsync, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const relays: RelayProcess[] = []
afterAll(async () => {
  await Promise.all(relays.map((r) => r.stop()))
})

const rcpt = (relay: RelayProcess, to: string) => rcptReply(relay.port, to)

describe("relay-mta's exports are the core's own: a plugin cannot change them", () => {
  it('the reply table, hook and event names, error codes, MessageHeaders, the shared password-check line, mailauth internals: every change is refused', async () => {
    const dir = tempDir()
    fs.writeFileSync(
      path.join(dir, 'meddle.mjs'),
      `import fs from 'node:fs'
import { STAGE_REPLIES, HOOK_NAMES, EVENT_NAMES, PLUGIN_ERROR_CODES, PERIODS, MessageHeaders, passwordChecks, mailauthInternals, reject } from 'relay-mta'
const attempts = {
  'STAGE_REPLIES': () => { STAGE_REPLIES.rcpt.reject.code = 521; STAGE_REPLIES.rcpt.reject.message = 'MEDDLED' },
  'HOOK_NAMES': () => HOOK_NAMES.push('evil'),
  'EVENT_NAMES': () => { EVENT_NAMES.length = 0 },
  'PLUGIN_ERROR_CODES': () => { PLUGIN_ERROR_CODES.setup = 'X' },
  'PERIODS': () => { PERIODS.hour = 1 },
  'MessageHeaders': () => { MessageHeaders.prototype.get = () => 'forged' },
  'MessageHeaders.parse': () => { MessageHeaders.parse = () => null },
  'passwordChecks': () => { passwordChecks.run = async () => 'hijacked' },
  'mailauthInternals': () => { mailauthInternals.validateMx = () => true },
}
export default {
  name: 'meddle',
  setup(ctx) {
    const out = []
    for (const [what, attempt] of Object.entries(attempts)) { try { attempt(); out.push(what + ' changed') } catch { out.push(what + ' refused') } }
    fs.writeFileSync(ctx.resolvePath('attempts'), out.join('\\n'))
  },
  hooks: { rcpt() { return reject() } },
}
`,
    )
    const relay = await startRelay({ dir, config: { plugins: ['./meddle.mjs'] } })
    relays.push(relay)
    const attempts = fs.readFileSync(path.join(dir, 'attempts'), 'utf8').split('\n')
    expect(attempts).toEqual(['STAGE_REPLIES', 'HOOK_NAMES', 'EVENT_NAMES', 'PLUGIN_ERROR_CODES', 'PERIODS', 'MessageHeaders', 'MessageHeaders.parse', 'passwordChecks', 'mailauthInternals'].map((w) => `${w} refused`))
    expect(await rcpt(relay, 'x@dest.test')).toBe('550 5.7.1 Recipient refused')
  })
})

describe('plugin objects that used to pass unseen or crash whatever read them', () => {
  const cases: [string, string, RegExp][] = [
    ['name-getter.mjs', "export default { get name() { throw new Error('name getter') }, hooks: { rcpt() {} } }\n", /plugins\[0\]: the plugin object cannot be read: name getter \[RELAY_ERR_PLUGIN_SHAPE\]/],
    ['keys-proxy.mjs', "export default new Proxy({ name: 'p', hooks: {} }, { ownKeys() { throw new Error('ownKeys boom') } })\n", /plugins\[0\]: the plugin object cannot be read: ownKeys boom \[RELAY_ERR_PLUGIN_SHAPE\]/],
    ['hidden-hook.mjs', "const hooks = {}\nObject.defineProperty(hooks, 'rcpt', { value() { return { action: 'reject' } } })\nexport default { name: 'hidden', hooks }\n", /plugins\[0\] \(hidden\): hooks\.rcpt is not enumerable, so it would never be called .*\[RELAY_ERR_PLUGIN_SHAPE\]/],
    ['symbol-hook.mjs', "export default { name: 'sym', hooks: { [Symbol('rcpt')]() {} } }\n", /plugins\[0\] \(sym\): hooks has a symbol key \(Symbol\(rcpt\)\).*\[RELAY_ERR_UNKNOWN_HOOK\]/],
  ]
  for (const [file, text, expected] of cases) {
    it(`${file}: check-config and start exit 2 naming the plugin, no stack trace`, async () => {
      const dir = tempDir()
      fs.writeFileSync(path.join(dir, file), text)
      const config = path.join(dir, 'relay.config.json')
      fs.writeFileSync(config, JSON.stringify({ hostname: 'relay.test', dataDir: './data', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], log: { level: 'silent' }, plugins: [`./${file}`] }))
      for (const verb of ['check-config', 'start']) {
        const r = await runCliAsync([verb, '--config', config])
        expect(r.code, `${verb}: ${r.stderr}`).toBe(2)
        expect(r.stderr).toMatch(expected)
        expect(r.stderr).not.toMatch(/\n\s+at /)
      }
    })
  }
})

describe('said once in the log instead of ignored', () => {
  it("a verdict key with a typo ('mesage'), and a setup that returns hooks beside its state's own keys", async () => {
    const dir = tempDir()
    fs.writeFileSync(path.join(dir, 'typo.mjs'), "export default { name: 'typo', hooks: { rcpt() { return { action: 'reject', mesage: 'not here' } } } }\n")
    fs.writeFileSync(path.join(dir, 'factory.mjs'), "export default { name: 'factory', setup() { return { hooks: { rcpt() { return { action: 'reject' } } }, teardown() {}, cache: new Map() } } }\n")
    const relay = await startRelay({ dir, config: { plugins: ['./factory.mjs', './typo.mjs'] } })
    relays.push(relay)
    await relay.waitForLog((l) => l.msg === "plugin factory: setup returned an object with hooks and teardown and other keys, so it is the plugin's state (ctx.state) and they are never called: return only { hooks, events, teardown, state } (the factory form), or put them on the plugin object", 5000)
    expect(await rcpt(relay, 'a@dest.test')).toBe('550 5.7.1 Recipient refused')
    expect(await rcpt(relay, 'b@dest.test')).toBe('550 5.7.1 Recipient refused')
    const warned = await relay.waitForLog((l) => String(l.msg).startsWith("plugin typo returned a verdict with the unknown key 'mesage' from hook rcpt"), 5000)
    expect(warned).toMatchObject({ level: 40, hook: 'rcpt', field: 'mesage' })
    // once per plugin, hook and key
    expect(relay.logs.filter((l) => String(l.msg).includes("unknown key 'mesage'"))).toHaveLength(1)
  })
})

describe('ctx.processes.call in one process', () => {
  it('copies as between processes: the answer and the arguments are plain data, and the handler cannot change the caller\'s objects', async () => {
    const dir = tempDir()
    fs.writeFileSync(
      path.join(dir, 'calls.mjs'),
      `export default { name: 'calls', setup({ processes }) {
  processes.handle('odd', () => ({ f: () => 1, ok: true, when: new URL('http://x.test/') }))
  processes.handle('mutate', (arg) => { arg.changed = true; return arg.n })
  return {}
}, hooks: { async rcpt({ processes }) {
  const mine = { n: 1 }
  const answer = { odd: await processes.call('odd'), n: await processes.call('mutate', mine), changed: mine.changed ?? false }
  return { action: 'reject', code: 550, message: JSON.stringify(answer) }
} } }
`,
    )
    const relay = await startRelay({ dir, config: { plugins: ['./calls.mjs'] } })
    relays.push(relay)
    expect(await rcpt(relay, 'x@dest.test')).toBe('550 5.7.1 {"odd":{"ok":true},"n":1,"changed":false}')
  })
})
