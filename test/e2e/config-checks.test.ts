// Configs that cannot be what the operator meant are refused by `relay check-config` and `relay
// start` (exit 2, nothing bound): a config file with no default export or nothing in it (not a
// silent run on the defaults), and two listeners on one address (not EADDRINUSE half-way up).
import { describe, expect, it } from 'vitest'
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { BIN, runCli, startRelay, tempDir } from '../harness/relay.js'

const ENV = { RELAY_CONFIG: undefined, RELAY_SYSTEM_CONFIG_DIR: tempDir('relay-etc-empty-') }
const LISTEN = [{ host: '127.0.0.1', port: 37520, role: 'mx' }]

function fileIn(name: string, text: string): string {
  const file = path.join(tempDir('relay-cfgchk-'), name)
  fs.writeFileSync(file, text)
  return file
}

/** `relay start`: its exit, or null if it was still running after `ms` (then stopped). */
function startBriefly(file: string, ms = 8000): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'start', '--config', file], { cwd: path.dirname(file), env: { ...process.env, ...ENV }, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), ms)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code: signal === 'SIGKILL' ? null : code, stderr })
    })
  })
}

/** Does anything accept connections on 127.0.0.1:port? */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy()
      resolve(true)
    })
    s.on('error', () => resolve(false))
  })
}

describe('a config file that holds no config', () => {
  const settings = `{ hostname: 'mine.example', listen: ${JSON.stringify(LISTEN)}, dataDir: './data' }`
  const noExport: [string, string][] = [
    ['relay.config.ts', `import { defineConfig } from 'relay-mta'\ndefineConfig(${settings})\n`],
    ['relay.config.ts', 'const x = 1\n'],
    ['relay.config.ts', `export const config = ${settings}\n`],
    ['relay.config.mjs', `const config = ${settings}\n`],
    ['relay.config.js', 'const x = 1\n'],
    ['relay.config.cjs', 'const x = 1\n'],
  ]

  it.each(noExport)('%s without a default export: check-config says so, exit 2 (%#)', (name, text) => {
    const file = fileIn(name, text)
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain(`invalid config in ${file}:`)
    expect(r.stderr).toContain('no default export: the file holds no config')
    expect(r.stdout).not.toContain('config ok')
  })

  it.each([
    ['relay.config.mjs', 'export default null\n', 'null'],
    ['relay.config.ts', `export default (process.env.NOT_SET ? ${settings} : undefined)\n`, 'undefined'],
    ['relay.config.cjs', 'module.exports = null\n', 'null'],
  ])('%s whose default export is null or undefined is an error, not "no config file found" and the defaults', (name, text, what) => {
    const file = fileIn(name, text)
    for (const r of [runCli(['check-config', '--config', file], { env: ENV }), runCli(['check-config'], { cwd: path.dirname(file), env: ENV })]) {
      expect(r.code, r.stdout).toBe(2)
      expect(r.stderr).toContain(`invalid config in ${file}:`)
      expect(r.stderr).toContain(`the default export is ${what}: the file holds no config`)
      expect(r.stdout).not.toContain('config ok')
    }
  })

  it.each([
    ['relay.config.json', ''],
    ['relay.config.yaml', '# settings to come\n'],
    ['relay.config.ts', '\n'],
    ['.relayrc', ''],
  ])('an empty %s is an error, not the defaults', (name, text) => {
    const file = fileIn(name, text)
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain(`invalid config in ${file}:`)
    expect(r.stderr).toContain('the file is empty: it holds no config')
    // Found by the search in the current directory too, rather than skipped for the next place.
    const found = runCli(['check-config'], { cwd: path.dirname(file), env: ENV })
    expect(found.code, found.stdout).toBe(2)
    expect(found.stderr).toContain(`invalid config in ${file}:`)
  })

  it('a JSON file that holds null says so, not that it is empty (exit 2)', () => {
    const file = fileIn('relay.config.json', 'null\n')
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain('cannot load config: the file holds null: no config ({} asks for the defaults)')
  })

  it('start refuses it (exit 2) and runs nothing on the defaults', async () => {
    const file = fileIn('relay.config.ts', `import { defineConfig } from 'relay-mta'\ndefineConfig(${settings})\n`)
    const r = await startBriefly(file)
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toContain(`invalid config in ${file}:`)
    expect(r.stderr).toContain('no default export')
    expect(fs.existsSync(path.join(path.dirname(file), 'data'))).toBe(false)
  })

  it('`export default {}` and module.exports still mean what they say', () => {
    for (const [name, text, hostname] of [
      ['relay.config.mjs', 'export default {}\n', undefined],
      ['relay.config.cjs', "module.exports = { hostname: 'cjs.example' }\n", 'cjs.example'],
      ['relay.config.json', '{}', undefined],
    ] as const) {
      const r = runCli(['check-config', '--config', fileIn(name, text)], { env: ENV })
      expect(r.code, r.stderr).toBe(0)
      if (hostname) expect(r.stdout).toContain(`hostname ${hostname}`)
    }
  })
})

describe('listen addresses that clash', () => {
  const listen = [
    { host: '127.0.0.1', port: 37521, role: 'mx' },
    { host: '127.0.0.1', port: 37521, role: 'submission', allowPlaintextAuth: true },
    { host: '0.0.0.0', port: 37522, role: 'mx' },
    { host: '127.0.0.1', port: 37522, role: 'mx' },
    { host: '::1', port: 37523, role: 'mx' },
    { host: '0.0.0.0', port: 37523, role: 'mx' },
    { host: '127.0.0.1', port: 0, role: 'mx' },
    { host: '127.0.0.1', port: 0, role: 'mx' },
  ]

  it('check-config names each listener another one already takes; start binds nothing (exit 2)', async () => {
    const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'dup.example', listen, dataDir: './data', log: { level: 'silent' } }))
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain('  listen[1]: 127.0.0.1:37521 is already listen[0]\n')
    expect(r.stderr).toContain('  listen[3]: 127.0.0.1:37522 clashes with listen[2] (0.0.0.0:37522): 0.0.0.0 takes every IPv4 address on port 37522\n')
    // [::1] and 0.0.0.0 on one port both bind; two listeners on port 0 each get a free port.
    expect(r.stderr).not.toMatch(/listen\[[5-7]\]/)

    const s = await startBriefly(file)
    expect(s.code, s.stderr).toBe(2)
    expect(s.stderr).toContain('listen[1]: 127.0.0.1:37521 is already listen[0]')
    expect(await listening(37521)).toBe(false)
  })

  // A plugin that binds its own port (the admin plugin's API) on a listener's address: check-config
  // said "config ok" and start failed with EADDRINUSE. Plugins declare their ports (`ports`) now.
  const admin = (port: number) => ['admin', { host: '127.0.0.1', port, insecureNoToken: true }]

  it("a plugin's port that a listener or another plugin takes: check-config and start name both keys", async () => {
    const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'dup.example', listen: [{ host: '127.0.0.1', port: 37524, role: 'mx' }], dataDir: './data', log: { level: 'silent' }, plugins: [admin(37524), admin(37525), admin(37525)] }))
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain('  plugins[0].options.port: 127.0.0.1:37524 (admin) is already listen[0]\n')
    expect(r.stderr).toContain('  plugins[2].options.port: 127.0.0.1:37525 (admin) is already plugins[1].options.port (admin)\n')

    const s = await startBriefly(file)
    expect(s.code, s.stderr).toBe(2)
    expect(s.stderr).toContain('plugins[0].options.port: 127.0.0.1:37524 (admin) is already listen[0]')
    expect(await listening(37524)).toBe(false)
    expect(await listening(37525)).toBe(false)
  })

  it("'localhost' and an IPv4-mapped address are the loopback addresses they stand for: a clash with 127.0.0.1 is named, for listeners and plugin ports alike", () => {
    const cases: [unknown[], unknown[], string][] = [
      [[{ host: '127.0.0.1', port: 37528, role: 'mx' }, { host: 'localhost', port: 37528, role: 'mx' }], [], '  listen[1]: localhost:37528 clashes with listen[0] (127.0.0.1:37528): both bind 127.0.0.1 on port 37528\n'],
      [[{ host: '127.0.0.1', port: 37529, role: 'mx' }, { host: '::ffff:127.0.0.1', port: 37529, role: 'mx' }], [], '  listen[1]: [::ffff:127.0.0.1]:37529 is already listen[0]\n'],
      [[{ host: '127.0.0.1', port: 37530, role: 'mx' }], [['admin', { host: 'localhost', port: 37530, insecureNoToken: true }]], '  plugins[0].options.port: localhost:37530 (admin) clashes with listen[0] (127.0.0.1:37530): both bind 127.0.0.1 on port 37530\n'],
    ]
    for (const [listen, plugins, line] of cases) {
      const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'dup.example', listen, dataDir: './data', log: { level: 'silent' }, plugins }))
      const r = runCli(['check-config', '--config', file], { env: ENV })
      expect(r.code, r.stdout).toBe(2)
      expect(r.stderr).toContain(line)
    }
  })

  it("the admin plugin's host is an address or host name without a port: check-config names the option (exit 2), not a start that fails with exit 1 and restarts forever", () => {
    for (const [host, said] of [['0.0.0.0:8025', 'without a port'], ['mail .example', 'contains a space'], ['999.1.1.1', 'not a valid IPv4 address']]) {
      const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'dup.example', listen: LISTEN, dataDir: './data', plugins: [['admin', { host, port: 0, token: 't'.repeat(24) }]] }))
      const r = runCli(['check-config', '--config', file], { env: ENV })
      expect(r.code, r.stdout).toBe(2)
      expect(r.stderr).toMatch(new RegExp(`plugins\\[0\\] \\(admin\\) options\\.host: .*${said}`))
    }
  })

  it("a reload that would put a plugin's port on a listener's is refused, naming both keys", async () => {
    const relay = await startRelay({ config: { listen: [{ host: '127.0.0.1', port: 37526, role: 'mx' }], plugins: [admin(37527)] } })
    try {
      const config = JSON.parse(fs.readFileSync(relay.configFile, 'utf8')) as Record<string, unknown>
      fs.writeFileSync(relay.configFile, JSON.stringify({ ...config, plugins: [admin(37526)] }))
      const r = runCli(['reload', '--config', relay.configFile])
      expect(r.code).not.toBe(0)
      expect(r.stderr).toContain('plugins[0].options.port: 127.0.0.1:37526 (admin) is already listen[0]')
      expect(await listening(37527)).toBe(true)
    } finally {
      await relay.stop()
    }
  }, 30_000)
})

describe('a data directory that cannot be made', () => {
  // Where mkdir answers ENOENT under an existing parent (/proc), Node's recursive mkdir retried
  // forever at full CPU and the relay no longer stopped on SIGTERM: start hung with no word.
  it('dataDir under /proc: start exits 2 naming dataDir, at once', async () => {
    const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'proc.example', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: '/proc/relay-data-test/queue', log: { level: 'silent' } }))
    const s = await startBriefly(file)
    expect(s.code, s.stderr).toBe(2)
    expect(s.stderr).toContain('dataDir: cannot create /proc/relay-data-test/queue')
  })
})

describe('a key of the wrong type, or missing', () => {
  // zod's own words were "workers: Invalid input" for a union (a duration, a size, `workers`,
  // `delayWarning`) and "Invalid input: expected number, received undefined" for a key left out:
  // the operator could not tell what to write. Each line now says what is expected, what was given.
  const DURATION = "expected a duration like '90s', '5m', '4h', '5d' or a number of seconds"
  it('check-config says what each key takes, core keys and plugin options alike (exit 2)', () => {
    const file = fileIn(
      'relay.config.json',
      JSON.stringify({
        hostname: 'types.example',
        listen: [{ host: '127.0.0.1', port: 37524 }, { host: '127.0.0.1', role: 'mx' }],
        dataDir: './data',
        workers: 'two',
        smtp: { maxMessageSize: true },
        delivery: { retry: { base: true }, delayWarning: 'yes' },
        plugins: [['auth-file', { checkInterval: true }]],
      }),
    )
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).not.toContain('Invalid input')
    expect(r.stderr).toContain('  listen[0].role: required: expected "mx" or "submission"\n')
    expect(r.stderr).toContain('  listen[1].port: required: expected a number\n')
    expect(r.stderr).toContain('  workers: expected "auto" or a number, got a string\n')
    expect(r.stderr).toContain("  smtp.maxMessageSize: expected a size like '25MB', '512KB' or a number of bytes, got a boolean\n")
    expect(r.stderr).toContain(`  delivery.retry.base: ${DURATION}, got a boolean\n`)
    expect(r.stderr).toContain(`  delivery.delayWarning: expected false or a duration like '90s', '5m', '4h', '5d' or a number of seconds, got "yes"\n`)
    expect(r.stderr).toContain('  plugins[0] (auth-file) options.file: required: expected a string [RELAY_ERR_PLUGIN_OPTIONS]\n')
    expect(r.stderr).toContain(`  plugins[0] (auth-file) options.checkInterval: ${DURATION}, got a boolean [RELAY_ERR_PLUGIN_OPTIONS]\n`)
  })
})

describe('a config in a format Relay does not read', () => {
  it('found in the current directory (relay.config.toml), or named: check-config says so (exit 2), naming the formats, instead of running on the defaults', () => {
    const file = fileIn('relay.config.toml', 'hostname = "toml.example"\n')
    const found = runCli(['check-config'], { env: ENV, cwd: path.dirname(file) })
    expect(found.code, found.stdout).toBe(2)
    expect(found.stderr).toContain(`relay.config.toml in ${path.dirname(file)} is in a format Relay does not read (it reads .ts, .mts, .js, .mjs, .cjs, .json, .yaml, .yml)`)
    const named = runCli(['check-config', '--config', file], { env: ENV })
    expect(named.code, named.stdout).toBe(2)
    expect(named.stderr).toContain('.toml is not a config format Relay reads (it reads .ts, .mts, .js, .mjs, .cjs, .json, .yaml, .yml)')
    expect(named.stderr).not.toContain('No loader')
  })
})

describe('AUTH in clear text', () => {
  it('allowPlaintextAuth on a listener other hosts can reach, or where auth is false: check-config warns naming it (exit 0); on 127.0.0.1 nothing', () => {
    const file = fileIn(
      'relay.config.json',
      JSON.stringify({
        hostname: 'plain.example',
        dataDir: './data',
        listen: [
          { host: '0.0.0.0', port: 37587, role: 'mx', allowPlaintextAuth: true },
          { host: '127.0.0.1', port: 37588, role: 'mx', allowPlaintextAuth: true },
          { host: '127.0.0.1', port: 37589, role: 'mx', auth: false, allowPlaintextAuth: true },
        ],
      }),
    )
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('relay: warning: listen[0].allowPlaintextAuth: AUTH without TLS on 0.0.0.0:37587, which other hosts can reach: passwords cross the network in clear text; set tls, or listen on 127.0.0.1\n')
    expect(r.stderr).toContain('relay: warning: listen[2].allowPlaintextAuth: has no effect: auth is false on this listener (no AUTH is offered)\n')
    expect(r.stderr).not.toContain('listen[1]')
  })
})

describe('a timeout or lifetime of 0, which elsewhere means "never"', () => {
  it('is refused naming each key (exit 2): 0 would end every wait at once, or bounce mail at its first temporary failure', () => {
    const file = fileIn(
      'relay.config.json',
      JSON.stringify({
        hostname: 'zero.example',
        dataDir: './data',
        hookTimeout: 0,
        setupTimeout: '0s',
        dns: { timeout: 0 },
        smtp: { socketTimeout: 0, firstCommandTimeout: 0, sessionTimeout: 0 },
        delivery: { maxQueueLifetime: 0, connectTimeout: 0, commandTimeout: '0ms', attemptTimeout: 0, mtaSts: { timeout: 0 } },
      }),
    )
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    for (const key of ['hookTimeout', 'setupTimeout', 'dns.timeout', 'smtp.socketTimeout', 'smtp.firstCommandTimeout', 'smtp.sessionTimeout', 'delivery.connectTimeout', 'delivery.commandTimeout', 'delivery.attemptTimeout', 'delivery.mtaSts.timeout']) {
      expect(r.stderr).toContain(`  ${key}: expected more than 0: this cannot be switched off (0 would end it at once)\n`)
    }
    expect(r.stderr).toContain('  delivery.maxQueueLifetime: expected more than 0: mail still undelivered after this long is bounced (0 would bounce it at its first temporary failure)\n')
    // Where 0 means none, it is still taken.
    const ok = fileIn('relay.config.json', JSON.stringify({ hostname: 'zero.example', dataDir: './data', shutdownTimeout: 0, smtp: { greetingDelay: 0, authFailureDelay: 0 }, delivery: { delayWarning: 0 } }))
    const fine = runCli(['check-config', '--config', ok], { env: ENV })
    expect(fine.code, fine.stderr).toBe(0)
  })
})

describe('a submission listener that could never take mail', () => {
  // role 'submission' wants AUTH before MAIL, and AUTH is offered only inside TLS: without a `tls`
  // block (or with tls: 'none') and without allowPlaintextAuth, the listener started, offered no
  // AUTH and answered every MAIL with 530, with no word at start. It is a config error now, as a
  // listener asking for TLS without a certificate already was.
  it('check-config and start name the listener and say what to add (exit 2)', async () => {
    const file = fileIn(
      'relay.config.json',
      JSON.stringify({
        hostname: 'sub.example',
        listen: [
          { host: '127.0.0.1', port: 37525, role: 'submission' },
          { host: '127.0.0.1', port: 37526, role: 'submission', tls: 'none' },
          { host: '127.0.0.1', port: 37527, role: 'submission', tls: 'none', allowPlaintextAuth: true },
          { host: '127.0.0.1', port: 37528, role: 'mx' },
          { host: '127.0.0.1', port: 37531, role: 'submission', tls: 'none', allowPlaintextAuth: true, auth: false },
          { host: '127.0.0.1', port: 37532, role: 'mx', auth: false },
        ],
        dataDir: './data',
        log: { level: 'silent' },
      }),
    )
    const r = runCli(['check-config', '--config', file])
    expect(r.code, r.stdout).toBe(2)
    const said = "a submission listener takes mail only after AUTH, and AUTH only inside TLS: set tls: { cert, key } (for development, `relay tls selfsigned` makes one), or allowPlaintextAuth: true on this listener"
    expect(r.stderr).toContain(`  listen[0]: ${said}\n`)
    expect(r.stderr).toContain(`  listen[1]: ${said}\n`)
    expect(r.stderr).toContain('  listen[4].auth: a submission listener takes mail only after AUTH: auth: false is for mx listeners\n')
    expect(r.stderr).not.toMatch(/listen\[[235]\]/)
    const s = await startBriefly(file)
    expect(s.code, s.stderr).toBe(2)
    expect(s.stderr).toContain(`listen[0]: ${said}`)
    expect(await listening(37528)).toBe(false)
  })

  // Likewise with TLS but no plugin that answers AUTH (auth-file, auth-sql, auth-http or an own
  // `auth` hook): no AUTH offered, every MAIL 530 5.7.0, and `config ok`.
  it('a submission listener with no auth plugin: check-config and start say so (exit 2)', async () => {
    const dir = tempDir('relay-cfgchk-')
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=sub.example', '-keyout', path.join(dir, 'k.pem'), '-out', path.join(dir, 'c.pem')], { stdio: 'ignore' })
    const config = (plugins: unknown[]) => ({
      hostname: 'sub.example',
      listen: [{ host: '127.0.0.1', port: 37529, role: 'mx' }, { host: '127.0.0.1', port: 37530, role: 'submission' }],
      tls: { cert: './c.pem', key: './k.pem' },
      dataDir: './data',
      plugins,
      log: { level: 'silent' },
    })
    const file = path.join(dir, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify(config(['relay-acl'])))
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    const said = "listen[1]: a submission listener takes mail only after AUTH, and no plugin answers AUTH: add one (auth-file, auth-sql, auth-http, or a plugin with an auth hook) to plugins"
    expect(r.stderr).toContain(said)
    const s = await startBriefly(file)
    expect(s.code, s.stderr).toBe(2)
    expect(s.stderr).toContain(said)
    expect(await listening(37529)).toBe(false)

    fs.writeFileSync(path.join(dir, 'users.json'), JSON.stringify({ users: {} }))
    fs.writeFileSync(file, JSON.stringify(config([['auth-file', { file: './users.json' }], 'relay-acl'])))
    const ok = runCli(['check-config', '--config', file], { env: ENV })
    expect(ok.code, ok.stderr).toBe(0)
  })
})

describe('a hostname that is no host name', () => {
  // The hostname is the EHLO name sent to every next hop, the banner, the Received `by` and the
  // Message-IDs the relay makes. 'mail example com', 'mail.example.com:25' or a URL passed as
  // `config ok`; next hops answered EHLO with 501 and all mail was deferred until it expired.
  it.each(['mail example com', 'mail.example.com:25', 'https://mail.example.com', '192.0.2.1', 'mail..example.com'])('%s: check-config names hostname (exit 2)', (hostname) => {
    const file = fileIn('relay.config.json', JSON.stringify({ hostname, listen: LISTEN, dataDir: './data' }))
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain('  hostname: expected a fully qualified host name like mail.example.com (the EHLO name, in Received and Message-IDs)')
  })

  it("a route's helo (routing plugin) likewise", () => {
    const routes = [{ kind: 'mx', helo: 'out 1.example.com' }, { kind: 'mx', pool: { strategy: 'round-robin', addresses: [{ address: '192.0.2.10', helo: 'out2.example.com:25' }] } }, { kind: 'mx', helo: '[192.0.2.11]' }]
    const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'ok.example', listen: LISTEN, dataDir: './data', plugins: [['routing', { routes }]] }))
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain("  plugins[0] (routing) options.routes[0].helo: 'out 1.example.com' is not a domain name (EHLO takes a domain or an address literal)")
    expect(r.stderr).toContain("  plugins[0] (routing) options.routes[1].pool.addresses[0].helo: 'out2.example.com:25' is not a domain name")
    expect(r.stderr).not.toContain('routes[2]')
  })

  it('a name with a trailing dot is taken without it; underscores and one label are taken', () => {
    for (const [hostname, shown] of [['mail.example.com.', 'mail.example.com'], ['mail_1.example.com', 'mail_1.example.com'], ['localhost', 'localhost']]) {
      const file = fileIn('relay.config.json', JSON.stringify({ hostname, listen: LISTEN, dataDir: './data' }))
      const r = runCli(['check-config', '--config', file], { env: ENV })
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toContain(`  hostname ${shown}\n`)
    }
  })
})

describe('names as keys (throttles, SNI certificates)', () => {
  // Lookups compare lower-case names without a trailing dot, IDNs in their xn-- form: a throttle
  // keyed 'Example.COM' or 'example.com.' was accepted and never applied; an SNI name with a
  // wildcard or a trailing dot was never served.
  it('throttle keys are taken as lookups compare them; a key that is no name is named (exit 2)', () => {
    const throttle = { domains: { 'Example.COM': { concurrency: 2 }, 'example.org.': { perMinute: 5 }, '*.Sub.Example.NET': { concurrency: 3 }, 'bücher.example': { concurrency: 1 } }, hosts: { 'MX1.Example.com': { concurrency: 1 }, '[2001:DB8:0::1]': { concurrency: 1 } } }
    const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'ok.example', listen: LISTEN, dataDir: './data', delivery: { throttle } }))
    const shown = runCli(['config', 'show', '--config', file], { env: ENV })
    expect(shown.code, shown.stderr).toBe(0)
    for (const line of ['domains.example.com.concurrency = 2', 'domains.example.org.perMinute = 5', 'domains.*.sub.example.net.concurrency = 3', 'domains.xn--bcher-kva.example.concurrency = 1', 'hosts.mx1.example.com.concurrency = 1', 'hosts.2001:db8::1.concurrency = 1']) {
      expect(shown.stdout).toContain(`delivery.throttle.${line}\n`)
    }
    const bad = fileIn('relay.config.json', JSON.stringify({ hostname: 'ok.example', listen: LISTEN, dataDir: './data', delivery: { throttle: { domains: { 'bad domain!': { concurrency: 1 } }, hosts: { 'not a host': { concurrency: 1 } } } } }))
    const r = runCli(['check-config', '--config', bad], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain(`  delivery.throttle.domains.bad domain!: "bad domain!" is not a domain name like example.com or '*.example.net'`)
    expect(r.stderr).toContain('  delivery.throttle.hosts.not a host: "not a host" is not a host name or IP address')
  })

  it("an SNI name with a wildcard, a space or none at all is named (exit 2): smtp-server matches names exactly, and '*' would replace the default certificate", () => {
    for (const name of ['*.b.example', '*', '', 'exa mple.com']) {
      const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'ok.example', listen: LISTEN, dataDir: './data', tls: { cert: 'a.crt', key: 'a.key', sni: { [name]: { cert: 'b.crt', key: 'b.key' } } } }))
      const r = runCli(['check-config', '--config', file], { env: ENV })
      expect(r.code, r.stdout).toBe(2)
      expect(r.stderr).toContain(`${JSON.stringify(name)} is not a host name the client asks for (a wildcard such as '*.example.com' is not matched: list each name)`)
    }
  })
})

describe('JSON config files', () => {
  it('a byte order mark is read past (as YAML and the module loaders do); a key given twice in one object is named, not the first silently dropped', () => {
    const bom = fileIn('relay.config.json', `\uFEFF${JSON.stringify({ hostname: 'bom.example', listen: LISTEN, dataDir: './data' })}`)
    const ok = runCli(['check-config', '--config', bom], { env: ENV })
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toContain('  hostname bom.example\n')
    const dup = fileIn('relay.config.json', '{\n  "hostname": "dup.example",\n  "smtp": { "maxRecipients": 5 },\n  "dataDir": "./data",\n  "smtp": { "socketTimeout": "1m" }\n}\n')
    const r = runCli(['check-config', '--config', dup], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain('JSON syntax error at line 5, column 3')
    expect(r.stderr).toContain('the key "smtp" is given twice in one object: JSON keeps only the last, so merge them')
    // The same key in different objects, and quoted braces and escapes in strings, are fine.
    const fine = fileIn('relay.config.json', JSON.stringify({ hostname: 'fine.example', listen: LISTEN, dataDir: './data', plugins: [['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }]], smtp: { bannerText: 'a "{quoted}" , banner \\ here' } }).replace('"smtp"', '"smtp" '))
    const f = runCli(['check-config', '--config', fine], { env: ENV })
    expect(f.stderr).not.toContain('given twice')
  })
})

describe('certificate files', () => {
  /** A self-signed certificate valid only from `from` to `until` (openssl ca takes any dates). */
  function datedCert(from: string, until: string): { cert: string; key: string } {
    const dir = tempDir('relay-dated-cert-')
    const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    fs.mkdirSync(path.join(dir, 'db'))
    fs.writeFileSync(path.join(dir, 'db/index.txt'), '')
    fs.writeFileSync(path.join(dir, 'db/serial'), '01\n')
    fs.writeFileSync(path.join(dir, 'ca.cnf'), '[ca]\ndefault_ca = d\n[d]\ndatabase = db/index.txt\nserial = db/serial\nnew_certs_dir = db\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n')
    run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'k.pem', '-out', 'r.csr', '-subj', '/CN=old.example'])
    run(['ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'k.pem', '-in', 'r.csr', '-out', 'c.pem', '-startdate', from, '-enddate', until])
    return { cert: path.join(dir, 'c.pem'), key: path.join(dir, 'k.pem') }
  }

  it('an expired certificate: check-config says config ok and warns, start logs the warning', async () => {
    const tls = datedCert('20190101000000Z', '20200101000000Z')
    const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'ok.example', listen: LISTEN, dataDir: './data', tls }))
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain(`relay: warning: tls.cert: ${tls.cert} expired on 2020-01-01: clients that verify certificates will refuse it`)
    const relay = await startRelay({ config: { tls } })
    try {
      expect(await relay.waitForLog((l) => l.level === 40 && l.key === 'tls.cert')).toMatchObject({ msg: expect.stringContaining('expired on 2020-01-01') })
    } finally {
      await relay.stop()
    }
  })

  it('a delivery.tlsCa that holds no certificate (a key, garbage, an empty file) is named (exit 2): Node would take it and never use it', () => {
    const dir = tempDir('relay-ca-files-')
    const { key } = datedCert('20190101000000Z', '20990101000000Z')
    const cases: [string, string][] = [['garbage.crt', 'not a certificate at all\n'], ['key.pem', fs.readFileSync(key, 'utf8')], ['empty.crt', '']]
    for (const [name, text] of cases) {
      fs.writeFileSync(path.join(dir, name), text)
      const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'ok.example', listen: LISTEN, dataDir: './data', delivery: { tlsCa: path.join(dir, name) } }))
      const r = runCli(['check-config', '--config', file], { env: ENV })
      expect(r.code, r.stdout).toBe(2)
      expect(r.stderr).toContain(`  delivery.tlsCa: ${path.join(dir, name)} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`)
    }
  })
})

describe('check-config lists every problem', () => {
  it('a port computed from an unset variable (NaN) is said to be NaN, not "a number"', () => {
    const file = fileIn('relay.config.mjs', `export default { hostname: 'ok.example', dataDir: './data', listen: [{ host: '127.0.0.1', port: Number(process.env.RELAY_TEST_UNSET_PORT), role: 'mx' }] }\n`)
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain('  listen[0].port: expected a number, got NaN (not a number)\n')
  })

  it('a tls.sni of the wrong kind does not hide that tls.cert and tls.key cannot be read', () => {
    const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'ok.example', listen: LISTEN, dataDir: './data', tls: { cert: 'missing.crt', key: 'missing.key', sni: [1] } }))
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain('  tls.sni: expected an object (names as keys), got a list\n')
    expect(r.stderr).toContain(`  tls.cert: cannot read ${path.join(path.dirname(file), 'missing.crt')}: no such file\n`)
    expect(r.stderr).toContain(`  tls.key: cannot read ${path.join(path.dirname(file), 'missing.key')}: no such file\n`)
  })
})

describe('queue settings without a driver', () => {
  it("`queue: { retention: '7d' }` alone is the embedded queue with that retention (the README's key, where reputation.retention moved); a driver that is none is named", () => {
    const file = fileIn('relay.config.json', JSON.stringify({ hostname: 'relay.test', dataDir: './data', listen: LISTEN, queue: { retention: '7d' } }))
    const shown = runCli(['config', 'show', '--config', file], { env: ENV })
    expect(shown.code, shown.stderr).toBe(0)
    expect(shown.stdout).toMatch(/^queue\.driver = "sqlite"$/m)
    expect(shown.stdout).toMatch(/^queue\.retention = 604800000/m)
    const bad = runCli(['check-config', '--config', fileIn('relay.config.json', JSON.stringify({ queue: { driver: 'mysql' } }))], { env: ENV })
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/queue\.driver: expected 'sqlite' or 'postgres', got "mysql"/)
  })
})
