// Durations that pace a loop have a floor: `delivery.retry.base: 0` made the relay retry a failing
// message in a hot loop (1024 attempts in 4 s). Through the real CLI, as a user meets it: check-config
// and start exit 2 naming the key; a floor value is taken.
import { describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { runCli, tempDir } from './harness/relay.js'

function writeConfig(extra: Record<string, unknown>): { file: string; dir: string } {
  const dir = tempDir('relay-config-floors-')
  const file = path.join(dir, 'relay.config.json')
  fs.writeFileSync(file, JSON.stringify({ hostname: 'config.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, 'data'), log: { level: 'silent' }, ...extra }))
  return { file, dir }
}

const PG = { driver: 'postgres', url: 'postgres://relay@127.0.0.1:5432/relay' }

describe('duration floors', () => {
  const bad: { what: string; config: Record<string, unknown>; lines: RegExp[] }[] = [
    {
      what: 'retry base and max 0',
      config: { delivery: { retry: { base: 0, factor: 2, max: 0 } } },
      lines: [/^ {2}delivery\.retry\.base: expected a duration of at least 250ms/m, /^ {2}delivery\.retry\.max: expected a duration of at least 250ms/m],
    },
    { what: 'a retry base of a few ms', config: { delivery: { retry: { base: '5ms' } } }, lines: [/^ {2}delivery\.retry\.base: expected a duration of at least 250ms/m] },
    {
      what: 'a retry max under base (every retry would wait max)',
      config: { delivery: { retry: { base: '10m', max: '1s' } } },
      lines: [/^ {2}delivery\.retry\.max: must be at least base \(10m\): every retry waits at most max/m],
    },
    { what: 'a lease of 0', config: { delivery: { lease: 0 } }, lines: [/^ {2}delivery\.lease: expected a duration of at least 300ms/m] },
    { what: 'a heartbeat interval of 1ms', config: { queue: { ...PG, heartbeat: { interval: '1ms', deadAfter: '1s' } } }, lines: [/^ {2}queue\.heartbeat\.interval: expected a duration of at least 100ms/m] },
    // A timer past 2^31 - 1 ms fires at once (Node's TimeoutOverflowWarning): every hook, setup and connection would time out.
    {
      what: 'timeouts past what a timer can wait (30 days, 1e12 seconds)',
      config: { hookTimeout: '30d', setupTimeout: 1e12, smtp: { socketTimeout: '25d' }, delivery: { connectTimeout: '90d' } },
      lines: [/^ {2}hookTimeout: expected at most 24 days: a timer cannot wait longer/m, /^ {2}setupTimeout: expected at most 24 days/m, /^ {2}smtp\.socketTimeout: expected at most 24 days/m, /^ {2}delivery\.connectTimeout: expected at most 24 days/m],
    },
    {
      what: "a plugin's timeout past what a timer can wait",
      config: { plugins: [['rate-limit', { store: { redis: 'redis://127.0.0.1:6379', timeout: '40d' } }]] },
      lines: [/^ {2}plugins\[0\] \(rate-limit\) options\.store\.timeout: expected at most 24 days/m],
    },
    // Past any use, or past what the number or a date can hold: 1e308 seconds was Infinity, shown as null.
    {
      what: 'durations past 100 years, sizes of 0 bytes or past 1 TB',
      config: { delivery: { maxQueueLifetime: 1e308, suppression: { ttl: '300000000d' } }, queue: { driver: 'sqlite', retention: `${'9'.repeat(300)}d` }, smtp: { maxMessageSize: '0', maxHeaderSize: '999999999999999999999999GB' } },
      lines: [
        /^ {2}delivery\.maxQueueLifetime: expected a duration of at most 100 years, got 1e\+308$/m,
        /^ {2}delivery\.suppression\.ttl: expected a duration of at most 100 years, got "300000000d"$/m,
        /^ {2}queue\.retention: expected a duration of at most 100 years/m,
        /^ {2}smtp\.maxMessageSize: expected a size from 1 byte to 1 TB, got "0"$/m,
        /^ {2}smtp\.maxHeaderSize: expected a size from 1 byte to 1 TB/m,
      ],
    },
  ]

  for (const { what, config, lines } of bad) {
    it(`${what}: check-config and start exit 2 naming the key`, () => {
      const { file, dir } = writeConfig(config)
      for (const command of ['check-config', 'start']) {
        const r = runCli([command, '--config', file])
        expect(r.code, `${command} stderr: ${r.stderr}`).toBe(2)
        expect(r.stderr).toContain(`relay: invalid config in ${file}:`)
        for (const line of lines) expect(r.stderr).toMatch(line)
      }
      fs.rmSync(dir, { recursive: true, force: true })
    })
  }

  it('a base longer than the default max, max unset: max follows base (the config stays valid)', () => {
    const { file, dir } = writeConfig({ delivery: { retry: { base: '6h' } } })
    expect(runCli(['check-config', '--config', file]).code).toBe(0)
    const shown = runCli(['config', 'show', '--config', file])
    expect(shown.stdout).toMatch(/^delivery\.retry\.max = 21600000$/m)
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('the floor values themselves are taken', () => {
    const { file, dir } = writeConfig({ delivery: { retry: { base: '250ms', factor: 1, max: '250ms' }, lease: '300ms' } })
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('config ok')
    fs.rmSync(dir, { recursive: true, force: true })
  })
})

describe('RELAY_CONFIG_LOAD_TIMEOUT', () => {
  it('a value that is no duration, 0, or past what a timer can wait is refused naming it (was: the 30 s default without a word, or a timer firing at once)', () => {
    const dir = tempDir('relay-load-timeout-')
    const file = path.join(dir, 'relay.config.mjs')
    fs.writeFileSync(file, `export default { hostname: 'config.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: ${JSON.stringify(path.join(dir, 'data'))} }\n`)
    for (const value of ['abc', '0', '25d']) {
      const r = runCli(['check-config', '--config', file], { env: { RELAY_CONFIG_LOAD_TIMEOUT: value } })
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toContain(`RELAY_CONFIG_LOAD_TIMEOUT: expected a duration from 1ms to 24 days ('10s', '2m'), got ${JSON.stringify(value)}`)
    }
    const ok = runCli(['check-config', '--config', file], { env: { RELAY_CONFIG_LOAD_TIMEOUT: '20s' } })
    expect(ok.code, ok.stderr).toBe(0)
  })
})
