// Config loading and config errors, through the real CLI (`node bin/relay.js`, the built dist/),
// as a user meets them: exit codes, what is printed, which files are found.
import { describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT, runCli, tempDir } from './harness/relay.js'

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
      line: /^ {2}listen\[0\]\.role: expected "mx" or "submission", got "bogus"$/m,
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
    // Ports out of range: Node would wrap 70000 to 4464 (70000 - 65536) and use that silently.
    {
      what: 'a DNS server port above 65535',
      config: { dns: { servers: ['127.0.0.1', '127.0.0.1:70000', '8.8.8.8:99999'] } },
      line: /^ {2}dns\.servers\[1\]: port '70000' is not a port number from 1 to 65535$/m,
    },
    {
      what: 'a DNS server [ipv6]:port with port 0',
      config: { dns: { servers: ['[::1]:0'] } },
      line: /^ {2}dns\.servers\[0\]: port '0' is not a port number from 1 to 65535$/m,
    },
    {
      what: 'a DNS server that is not a valid IPv4 address',
      config: { dns: { servers: ['999.1.1.1:53'] } },
      line: /^ {2}dns\.servers\[0\]: .*'999\.1\.1\.1' is not a valid IPv4 address$/m,
    },
    {
      what: 'delivery.port above 65535',
      config: { delivery: { port: 70000 } },
      line: /^ {2}delivery\.port: expected a port from 1 to 65535$/m,
    },
    {
      what: 'a listen port above 65535',
      config: { listen: [{ host: '127.0.0.1', port: 65536, role: 'mx' }] },
      line: /^ {2}listen\[0\]\.port: expected a port from 0 to 65535$/m,
    },
    {
      what: 'a listen host with a port in it',
      config: { listen: [{ host: '127.0.0.1:25', port: 2525, role: 'mx' }] },
      line: /^ {2}listen\[0\]\.host: expected a host name or IP address, without a port$/m,
    },
    {
      what: 'a Redis URL with a port above 65535 (its password not repeated)',
      config: { delivery: { throttle: { redis: 'redis://:s3cret@127.0.0.1:70000' } } },
      line: /^ {2}delivery\.throttle\.redis: port '70000' is not a port number from 1 to 65535 \(expected a URL like 'redis:\/\/127\.0\.0\.1:6379'\)$/m,
    },
    {
      what: 'a PostgreSQL URL with a port above 65535',
      config: { queue: { driver: 'postgres', url: 'postgres://relay:s3cret@127.0.0.1:99999/relay' } },
      line: /^ {2}queue\.url: port '99999' is not a port number from 1 to 65535/m,
    },
    {
      what: 'mtaSts.connectTo with a port above 65535',
      config: { delivery: { mtaSts: { connectTo: '127.0.0.1:99999' } } },
      line: /^ {2}delivery\.mtaSts\.connectTo: port '99999' is not a port number from 1 to 65535$/m,
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

  it("libpq's unix-socket URL with a password (no host, ?host=/path) is a valid queue.url, shown redacted", () => {
    const file = writeConfig({ queue: { driver: 'postgres', url: 'postgresql://relay:s3cret@/relay?host=/var/run/postgresql' } })
    const r = runCli(['config', 'show', '--config', file])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/^queue\.url = "postgresql:\/\/relay:<redacted>@\/relay\?host=\/var\/run\/postgresql"$/m)
    expect(r.stdout).not.toContain('s3cret')
  })

  it('a URL with a password that fails is not echoed', () => {
    const file = writeConfig({ delivery: { throttle: { redis: 'redis://:s3cret@127.0.0.1:70000' } }, queue: { driver: 'postgres', url: 'postgres://relay:s3cret@127.0.0.1:99999/relay' } })
    const r = runCli(['check-config', '--config', file])
    expect(r.code).toBe(2)
    expect(r.stderr).not.toContain('s3cret')
  })

  it('a routing smarthost host that is not a host name: exit 2 naming it, the password not repeated', () => {
    const file = writeConfig({ plugins: [['routing', { routes: [{ kind: 'smarthost', tls: 'starttls', host: 'apikey:s3cret@smtp.sendgrid.net:587' }, { kind: 'smarthost', tls: 'implicit', host: 'https://smtp.sendgrid.net' }] }]] })
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(routing\) options\.routes\[0\]\.host: .*contains '@'/m)
    expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(routing\) options\.routes\[1\]\.host: .*not a URL/m)
    expect(r.stderr).not.toContain('s3cret')
  })

  it('ports 1 and 65535, [ipv6]:port and plain IPv6 DNS servers are accepted', () => {
    const file = writeConfig({ dns: { servers: ['127.0.0.1:65535', '[::1]:1', '::1', '10.0.0.1'] }, delivery: { port: 65535, throttle: { redis: 'redis://127.0.0.1:6379' }, mtaSts: { connectTo: 'localhost:8443' } } })
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(0)
  })

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

describe('valid settings that are almost certainly a mistake', () => {
  it('check-config says each on stderr as a warning naming the key, and still passes (exit 0)', () => {
    const file = writeConfig({
      hostname: 'vm',
      listen: [{ host: '127.0.0.1', port: 2525, role: 'mx' }],
      delivery: { maxQueueLifetime: '1d', delayWarning: '10d', attemptTimeout: '1s', connectTimeout: '30s', concurrency: { perDomain: 5 }, throttle: { domains: { 'gmail.com': { concurrency: 50 }, 'small.example': { concurrency: 5 } } } },
    })
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr.split('\n').filter(Boolean)).toEqual([
      "relay: warning: hostname: 'vm' is not a fully qualified name (the default is the machine's name): mail servers may refuse EHLO vm; set hostname to this relay's public name, e.g. mail.example.com",
      'relay: warning: delivery.delayWarning: 10d is not shorter than delivery.maxQueueLifetime (1d): no delay warning is ever sent',
      'relay: warning: delivery.attemptTimeout: 1s is shorter than delivery.connectTimeout (30s): an attempt ends before a slow host has connected',
      "relay: warning: delivery.throttle.domains['gmail.com'].concurrency: 50 is more than delivery.concurrency.perDomain (5), which caps every domain: at most 5 at once; raise perDomain to allow more",
    ])
    // AUTH but nothing that lets an authenticated user relay (relay-acl does).
    const lonely = writeConfig({
      listen: [{ host: '127.0.0.1', port: 2587, role: 'submission', allowPlaintextAuth: true }],
      plugins: [['auth-file', { file: './users.json' }]],
    })
    const s = runCli(['check-config', '--config', lonely])
    expect(s.code, s.stderr).toBe(0)
    expect(s.stderr).toContain("relay: warning: listen[0]: a submission listener, and no relay-acl in plugins: authenticated users may send only to localDomains (Relaying denied for the rest): add 'relay-acl'\n")
    const withAcl = writeConfig({
      listen: [{ host: '127.0.0.1', port: 2587, role: 'submission', allowPlaintextAuth: true }],
      plugins: [['auth-file', { file: './users.json' }], ['relay-acl', { trustedNetworks: [] }]],
    })
    expect(runCli(['check-config', '--config', withAcl]).stderr).not.toContain('relay-acl')
  })
})

describe('good configs', () => {
  it('check-config exits 0, prints config ok and what it read', () => {
    const file = writeConfig({
      hostname: 'mail.good.example',
      listen: [
        { host: '127.0.0.1', port: 2525, role: 'mx' },
        { host: '127.0.0.1', port: 2587, role: 'submission', allowPlaintextAuth: true },
        { host: '127.0.0.1', port: 2526, role: 'mx', auth: false },
      ],
      localDomains: ['Good.Example'],
      // A submission listener needs a plugin that answers AUTH.
      plugins: [[path.join(ROOT, 'test/fixtures/static-auth.plugin.ts'), { users: {} }], ['relay-acl', { trustedNetworks: ['10.0.0.0/8'] }]],
    })
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.split('\n')[0]).toBe(`config ok: ${file}`)
    expect(r.stdout).toContain('  hostname mail.good.example\n')
    // No tls section: no TLS on either (the mode is said, 587's STARTTLS from 465's implicit TLS).
    expect(r.stdout).toContain('  listen 127.0.0.1:2525 (mx, tls none)\n')
    expect(r.stdout).toContain('  listen 127.0.0.1:2587 (submission, tls none)\n')
    expect(r.stdout).toContain('  listen 127.0.0.1:2526 (mx, tls none, no AUTH)\n')
    expect(r.stdout).toContain('  localDomains good.example\n')
    expect(r.stdout).toContain('  plugins static-auth, relay-acl\n')
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

// Node 24 strips the types of a .ts config itself (core/config/import-ts.ts); tsx loads what needs
// more. Each of these loads on every Node, whichever of the two it goes through.
describe('TypeScript configs that Node can strip and ones that need tsx', () => {
  const cases: { what: string; files: Record<string, string> }[] = [
    { what: 'type annotations only', files: { 'relay.config.ts': "const hostname: string = 'strip.example'\nexport default { hostname } satisfies { hostname: string }\n" } },
    {
      what: 'an enum and a parameter property (TypeScript-only syntax)',
      files: { 'relay.config.ts': "enum Tld { example = 'example' }\nclass Name { constructor(readonly host: string) {} }\nexport default { hostname: new Name(`strip.${Tld.example}`).host }\n" },
    },
    {
      what: "a type imported from 'relay-mta' without `type`",
      files: { 'relay.config.mts': "import { defineConfig, RelayConfigInput } from 'relay-mta'\nconst input: RelayConfigInput = { hostname: 'strip.example' }\nexport default defineConfig(input)\n" },
    },
    {
      what: 'a helper imported without its extension',
      files: { 'relay.config.ts': "import { hostname } from './names'\nexport default { hostname }\n", 'names.ts': "export const hostname: string = 'strip.example'\n" },
    },
    { what: '__dirname (tsx compiles it to CommonJS outside a "type": "module" package)', files: { 'relay.config.ts': "export default { hostname: 'strip.example', dataDir: __dirname + '/maildata' }\n" } },
  ]
  for (const c of cases) {
    it(`${c.what}: loads`, () => {
      const dir = tempDir('relay-strip-')
      for (const [name, text] of Object.entries(c.files)) fs.writeFileSync(path.join(dir, name), text)
      const config = Object.keys(c.files)[0]!
      const r = runCli(['check-config', '--config', path.join(dir, config)])
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toContain('  hostname strip.example\n')
      expect(r.stderr).toBe('')
    })
  }

  it('a config that throws while it runs is run once, and the error names it', () => {
    const dir = tempDir('relay-strip-')
    const runs = path.join(dir, 'runs.log')
    fs.writeFileSync(path.join(dir, 'relay.config.ts'), `import fs from 'node:fs'\nfs.appendFileSync(${JSON.stringify(runs)}, 'ran\\n')\nconst missing: string | undefined = process.env.RELAY_TEST_NOT_SET\nif (!missing) throw new Error('RELAY_TEST_NOT_SET is not set')\nexport default { hostname: missing }\n`)
    const r = runCli(['check-config', '--config', path.join(dir, 'relay.config.ts')])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('RELAY_TEST_NOT_SET is not set')
    expect(fs.readFileSync(runs, 'utf8')).toBe('ran\n')
  })
})

describe('TypeScript and JavaScript files that do not parse: file, line, column and reason', () => {
  const broken = "export default {\n  hostname: 'x.example',\n  listen: [ { port: 2525, role: 'mx' ]\n}\n"

  for (const name of ['relay.config.ts', 'relay.config.mts', 'relay.config.js', 'relay.config.mjs']) {
    it(`${name}: exit 2, naming ${name}:3:38 with the line and a caret`, () => {
      const dir = tempDir('relay-syntax-')
      fs.writeFileSync(path.join(dir, name), broken)
      const r = runCli(['check-config', '--config', path.join(dir, name)])
      expect(r.code, r.stderr).toBe(2)
      const format = name.endsWith('ts') ? 'TypeScript' : 'JavaScript'
      expect(r.stderr).toMatch(new RegExp(`^ {2}${name.replace(/\./g, '\\.')}:3:38: cannot load config: ${format} syntax error at line 3, column 38: \\S`, 'm'))
      expect(r.stderr).not.toMatch(/Transform failed with 1 error:\s*$/m)
      expect(r.stderr).toMatch(/^ {4}3 \| {3}listen: \[/m)
      expect(r.stderr).toMatch(/^ {4} {2}\| {38}\^$/m)
    })
  }

  it('a module the config imports: named by its own file, line and column', () => {
    const dir = tempDir('relay-syntax-')
    fs.writeFileSync(path.join(dir, 'relay.config.ts'), "import { routes } from './routes.ts'\nexport default { hostname: 'x.example', plugins: [['routing', { routes }]] }\n")
    fs.writeFileSync(path.join(dir, 'routes.ts'), 'export const routes = [\n  { kind: "mx" ,, },\n]\n')
    const r = runCli(['check-config', '--config', path.join(dir, 'relay.config.ts')])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/^ {2}routes\.ts:2:\d+: cannot load config: TypeScript syntax error at line 2, column \d+: \S/m)
  })

  it('a .ts plugin that does not parse: plugins[0] with its file, line and column', () => {
    const dir = tempDir('relay-syntax-')
    fs.writeFileSync(path.join(dir, 'relay.config.json'), JSON.stringify({ hostname: 'x.example', dataDir: './data', plugins: ['./bad-plugin.ts'] }))
    fs.writeFileSync(path.join(dir, 'bad-plugin.ts'), "export default {\n  name: 'bad',\n  hooks: { rcpt() { ] } },\n}\n")
    const r = runCli(['check-config', '--config', path.join(dir, 'relay.config.json')])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/^ {2}plugins\[0\]: cannot load plugin '\.\/bad-plugin\.ts': TypeScript syntax error at bad-plugin\.ts:3:21: \S.* \[RELAY_ERR_PLUGIN_LOAD\]$/m)
  })

  it('a .js plugin that does not parse: its line and column too', () => {
    const dir = tempDir('relay-syntax-')
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module' }))
    fs.writeFileSync(path.join(dir, 'relay.config.json'), JSON.stringify({ hostname: 'x.example', dataDir: './data', plugins: ['./bad-plugin.js'] }))
    fs.writeFileSync(path.join(dir, 'bad-plugin.js'), "export default {\n  name: 'bad',\n  hooks: { rcpt() { ] } },\n}\n")
    const r = runCli(['check-config', '--config', path.join(dir, 'relay.config.json')])
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/^ {2}plugins\[0\]: cannot load plugin '\.\/bad-plugin\.js': JavaScript syntax error at bad-plugin\.js:3:21: \S.* \[RELAY_ERR_PLUGIN_LOAD\]$/m)
  })
})

describe("a plugin file beside the config imports 'relay-mta' (the README's no-ceo.ts)", () => {
  const plugin =
    "import { definePlugin, reject, z } from 'relay-mta'\n" +
    'export default definePlugin({\n' +
    "  name: 'no-ceo',\n" +
    '  options: z.object({ addresses: z.array(z.string()) }),\n' +
    '  hooks: { async rcpt({ recipient, options }) { if (options.addresses.includes(recipient.address)) return reject(\'5.7.1\', \'no\') } },\n' +
    '})\n'
  const entry = (file: string) => `[['${file}', { addresses: ['ceo@example.com'] }]]`
  const configs: Record<string, (file: string) => string> = {
    'relay.config.ts': (file) => `import { defineConfig } from 'relay-mta'\nexport default defineConfig({ hostname: 'x.example', dataDir: './data', plugins: ${entry(file)} })\n`,
    'relay.config.mts': (file) => `export default { hostname: 'x.example', dataDir: './data', plugins: ${entry(file)} }\n`,
    'relay.config.json': (file) => JSON.stringify({ hostname: 'x.example', dataDir: './data', plugins: [[file, { addresses: ['ceo@example.com'] }]] }),
    'relay.config.yaml': (file) => `hostname: x.example\ndataDir: ./data\nplugins: ${entry(file)}\n`,
  }

  for (const ext of ['.ts', '.mts']) {
    for (const [name, config] of Object.entries(configs)) {
      it(`no-ceo${ext} listed in ${name}, in a plain directory (no package.json, no node_modules)`, () => {
        const dir = tempDir('relay-plugin-import-')
        fs.writeFileSync(path.join(dir, `no-ceo${ext}`), plugin)
        fs.writeFileSync(path.join(dir, name), config(`./no-ceo${ext}`))
        const r = runCli(['check-config', '--config', path.join(dir, name)])
        expect(r.code, r.stderr).toBe(0)
        expect(r.stdout).toContain('  plugins no-ceo\n')
      })
    }
  }

  it("a .ts plugin whose .ts helper imports 'relay-mta' too", () => {
    const dir = tempDir('relay-plugin-import-')
    fs.writeFileSync(path.join(dir, 'helper.ts'), "import { reject } from 'relay-mta'\nexport const refuse = () => reject('5.7.1', 'no')\n")
    fs.writeFileSync(path.join(dir, 'p.ts'), "import { definePlugin } from 'relay-mta'\nimport { refuse } from './helper.ts'\nexport default definePlugin({ name: 'with-helper', hooks: { rcpt: () => refuse() } })\n")
    fs.writeFileSync(path.join(dir, 'relay.config.json'), JSON.stringify({ hostname: 'x.example', dataDir: './data', plugins: ['./p.ts'] }))
    const r = runCli(['check-config', '--config', path.join(dir, 'relay.config.json')])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('  plugins with-helper\n')
  })
})
