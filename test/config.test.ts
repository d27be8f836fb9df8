// Config loading and config errors, through the real CLI (`node bin/relay.js`, the built dist/),
// as a user meets them: exit codes, what is printed, which files are found.
import { describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { runCli, tempDir } from './harness/relay.js'

/** A config that is valid apart from what `extra` changes; listens on a port no test uses. */
function baseConfig(dir: string): Record<string, unknown> {
  return { hostname: 'config.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, 'data'), log: { level: 'silent' } }
}

function writeConfig(config: Record<string, unknown>, name = 'relay.config.json'): string {
  const dir = tempDir('relay-config-')
  const file = path.join(dir, name)
  fs.writeFileSync(file, JSON.stringify({ ...baseConfig(dir), ...config }, null, 2))
  return file
}

describe('config errors', () => {
  const bad: { what: string; config: Record<string, unknown>; line: RegExp }[] = [
    {
      what: 'a duration that is not one',
      config: { delivery: { retry: { base: '5x' } } },
      line: /^ {2}delivery\.retry\.base: expected a duration like '90s', '5m', '4h', '5d' or a number of seconds, got "5x"$/m,
    },
    {
      what: 'a listener role that does not exist',
      config: { listen: [{ host: '127.0.0.1', port: 0, role: 'bogus' }] },
      line: /^ {2}listen\[0\]\.role: .*expected one of "mx"\|"submission"$/m,
    },
    {
      what: 'a misspelt top-level key',
      config: { delivry: { port: 25 } },
      line: /^ {2}delivry: unknown key \(misspelt, or not a setting of this section\)$/m,
    },
    {
      what: 'a misspelt nested key',
      config: { delivery: { retyr: { base: '1s' } } },
      line: /^ {2}delivery\.retyr: unknown key/m,
    },
    {
      what: 'a DNS server that is not an IP address',
      config: { dns: { servers: ['not-an-ip'] } },
      line: /^ {2}dns\.servers\[0\]: expected an IP address or 'ip:port', like '127\.0\.0\.1:5353'$/m,
    },
  ]

  for (const { what, config, line } of bad) {
    it(`${what}: check-config and start exit 2 naming the key and what was expected`, () => {
      const file = writeConfig(config)
      for (const command of ['check-config', 'start']) {
        const r = runCli([command, '--config', file])
        expect(r.code, `${command} stderr: ${r.stderr}`).toBe(2)
        expect(r.stderr).toContain(`relay: invalid config in ${file}:`)
        expect(r.stderr).toMatch(line)
        expect(r.stdout).not.toContain('config ok')
      }
    })
  }

  it('reports every bad key at once', () => {
    const file = writeConfig({ delivery: { retry: { base: '5x' } }, dns: { servers: ['not-an-ip'] }, delivry: {} })
    const r = runCli(['check-config', '--config', file])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('delivery.retry.base:')
    expect(r.stderr).toContain('dns.servers[0]:')
    expect(r.stderr).toContain('delivry: unknown key')
  })

  it('a missing --config file: exit 2 and a message that says so', () => {
    const file = path.join(tempDir('relay-config-'), 'nope.config.json')
    for (const command of ['check-config', 'start']) {
      const r = runCli([command, '--config', file])
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toContain(`config file not found: ${file}`)
      expect(r.stderr).not.toMatch(/at .*\.js:\d+/) // a message, not a stack trace
    }
  })

  it('an unknown plugin name: exit 2 naming plugins[0]', () => {
    const file = writeConfig({ plugins: ['no-such-plugin-xyz'] })
    for (const command of ['check-config', 'start']) {
      const r = runCli([command, '--config', file])
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toMatch(/^ {2}plugins\[0\]: unknown plugin 'no-such-plugin-xyz'/m)
    }
  })

  it('a plugin path that does not exist: exit 2 naming its index', () => {
    const file = writeConfig({ plugins: ['relay-acl', './missing-plugin.ts'] })
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/^ {2}plugins\[1\]: cannot load plugin '\.\/missing-plugin\.ts'/m)
  })
})

describe('good configs', () => {
  it('check-config exits 0, prints config ok and what it read', () => {
    const file = writeConfig({
      hostname: 'mail.good.example',
      listen: [
        { host: '127.0.0.1', port: 2525, role: 'mx' },
        { host: '127.0.0.1', port: 2587, role: 'submission' },
      ],
      localDomains: ['Good.Example'],
      plugins: [['relay-acl', { trustedNetworks: ['10.0.0.0/8'] }]],
    })
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.split('\n')[0]).toBe(`config ok: ${file}`)
    expect(r.stdout).toContain('  hostname mail.good.example\n')
    expect(r.stdout).toContain('  listen 127.0.0.1:2525 (mx)\n')
    expect(r.stdout).toContain('  listen 127.0.0.1:2587 (submission)\n')
    expect(r.stdout).toContain('  localDomains good.example\n')
    expect(r.stdout).toContain('  plugins relay-acl\n')
    expect(r.stderr).toBe('')
  })

  it("durations: '90s', '5m', '4h', '5d', '250ms' and a number of seconds are accepted; '5w' is not", () => {
    const durations = { hookTimeout: '90s', shutdownTimeout: 30, dns: { timeout: '250ms' }, smtp: { socketTimeout: '5m' }, delivery: { retry: { base: '5m', max: '4h' }, maxQueueLifetime: '5d', lease: 900, connectTimeout: 1.5 } }
    const ok = runCli(['check-config', '--config', writeConfig(durations)])
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toMatch(/^config ok: /)

    const bad = runCli(['check-config', '--config', writeConfig({ delivery: { maxQueueLifetime: '5w' } })])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/delivery\.maxQueueLifetime: expected a duration .* got "5w"/)
  })
})

describe('config file search (no --config)', () => {
  const cases: { name: string; text: string; hostname: string }[] = [
    { name: '.relayrc.yaml', text: 'hostname: yaml.search.example\ndataDir: ./maildata\n', hostname: 'yaml.search.example' },
    { name: 'relay.config.json', text: JSON.stringify({ hostname: 'json.search.example', dataDir: './maildata' }), hostname: 'json.search.example' },
    { name: 'relay.config.yaml', text: 'hostname: yaml2.search.example\ndataDir: ./maildata\n', hostname: 'yaml2.search.example' },
    {
      // TypeScript (type annotations) in a plain directory: no package.json, so tsx compiles it as CommonJS
      name: 'relay.config.ts',
      text: "const hostname: string = 'ts.search.example'\nexport default { hostname, dataDir: './maildata' as string }\n",
      hostname: 'ts.search.example',
    },
  ]
  for (const c of cases) {
    it(`finds ${c.name} in the current directory`, () => {
      const dir = tempDir('relay-search-')
      fs.writeFileSync(path.join(dir, c.name), c.text)
      const r = runCli(['check-config'], { cwd: dir })
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout.split('\n')[0]).toBe(`config ok: ${path.join(dir, c.name)}`)
      expect(r.stdout).toContain(`  hostname ${c.hostname}\n`)
      // relative paths are taken from the config file's directory
      expect(r.stdout).toContain(`  dataDir ${path.join(dir, 'maildata')}\n`)
    })
  }

  it('validates what it finds: a bad value in a found file exits 2 naming the file and key', () => {
    const dir = tempDir('relay-search-')
    fs.writeFileSync(path.join(dir, '.relayrc.yaml'), 'hostname: bad.example\ndelivery:\n  retry:\n    base: soon\n')
    const r = runCli(['check-config'], { cwd: dir })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`invalid config in ${path.join(dir, '.relayrc.yaml')}`)
    expect(r.stderr).toMatch(/delivery\.retry\.base: expected a duration .* got "soon"/)
  })

  it('loads a local .ts plugin by relative path from a TypeScript config in a plain directory', () => {
    const dir = tempDir('relay-search-')
    fs.writeFileSync(path.join(dir, 'relay.config.ts'), "export default { hostname: 'plugin.search.example', plugins: [['./my-plugin.ts', { greeting: 'hi' }]] }\n")
    fs.writeFileSync(path.join(dir, 'my-plugin.ts'), "const hooks: Record<string, unknown> = {}\nexport default { name: 'my-local-plugin', hooks }\n")
    const r = runCli(['check-config'], { cwd: dir })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('  plugins my-local-plugin\n')
  })

  it('with no config file anywhere, says it uses the defaults', () => {
    const dir = tempDir('relay-search-')
    const r = runCli(['check-config'], { cwd: dir })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.split('\n')[0]).toBe('config ok (defaults, no config file found)')
    expect(r.stdout).toContain(`  dataDir ${path.join(dir, 'data')}\n`)
  })
})
