// Finding and checking the config, through the CLI as an operator meets it: where the config is
// found (--config, $RELAY_CONFIG, the current directory, /etc/relay/), queue verbs that find none,
// `relay --version`, `relay config show`, `check-config` reporting every problem at once, `start`
// without a stack trace, and a TypeScript config outside the package importing 'relay-mta'.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { BIN, ROOT, eventually, runCli, tempDir } from '../harness/relay.js'
import { makeCa } from '../harness/tls.js'
import { startParkedRelay, type ParkedRelay } from '../harness/parked-relay.js'

/** An empty directory standing in for /etc/relay/ (RELAY_SYSTEM_CONFIG_DIR), so no real one counts. */
const noSystemDir = tempDir('relay-etc-empty-')
const ENV = { RELAY_CONFIG: undefined, RELAY_SYSTEM_CONFIG_DIR: noSystemDir }

function dirWith(files: Record<string, string>, prefix = 'relay-disc-'): string {
  const dir = tempDir(prefix)
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text)
  return dir
}
const json = (hostname: string, extra: Record<string, unknown> = {}) => JSON.stringify({ hostname, dataDir: './data', log: { level: 'silent' }, ...extra })
const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .+:\d+:\d+\)?$/m)
const okFile = (stdout: string) => /^config ok: (.*)$/m.exec(stdout)?.[1]

describe('where the config is found', () => {
  const cwdDir = dirWith({ 'relay.config.json': json('cwd.example') })
  const envDir = dirWith({ 'relay.config.yaml': 'hostname: env.example\ndataDir: ./data\n' })
  const flagDir = dirWith({ 'custom.json': json('flag.example') })
  const etcDir = dirWith({ 'relay.config.json': json('etc.example') }, 'relay-etc-')
  const envFile = path.join(envDir, 'relay.config.yaml')
  const flagFile = path.join(flagDir, 'custom.json')

  it('--config first, then $RELAY_CONFIG, then the current directory, then /etc/relay/', () => {
    const all = { RELAY_CONFIG: envFile, RELAY_SYSTEM_CONFIG_DIR: etcDir }
    let r = runCli(['check-config', '--config', flagFile], { cwd: cwdDir, env: all })
    expect(r.code, r.stderr).toBe(0)
    expect(okFile(r.stdout)).toBe(flagFile)

    r = runCli(['check-config'], { cwd: cwdDir, env: all })
    expect(okFile(r.stdout), r.stderr).toBe(envFile)

    r = runCli(['check-config'], { cwd: cwdDir, env: { ...all, RELAY_CONFIG: '' } })
    expect(okFile(r.stdout), r.stderr).toBe(path.join(cwdDir, 'relay.config.json'))

    r = runCli(['check-config'], { cwd: tempDir(), env: { ...all, RELAY_CONFIG: '' } })
    expect(okFile(r.stdout), r.stderr).toBe(path.join(etcDir, 'relay.config.json'))
    expect(r.stdout).toContain('hostname etc.example')
    // Relative paths in it are taken from its directory, not from where the command runs.
    expect(r.stdout).toContain(`dataDir ${path.join(etcDir, 'data')}`)
  })

  it('two config files in one directory: the one read is named, the other is a warning (an edit of it would change nothing)', () => {
    const dir = dirWith({ 'relay.config.json': json('first.example'), 'relay.config.yaml': 'hostname: second.example\n' })
    const r = runCli(['check-config'], { cwd: dir, env: ENV })
    expect(r.code, r.stderr).toBe(0)
    expect(okFile(r.stdout)).toBe(path.join(dir, 'relay.config.json'))
    expect(r.stderr).toContain(`relay: warning: relay.config.yaml: is also in ${dir} and is not read: relay.config.json is the config (remove one)\n`)
    // --config naming it does not silence it: the next `relay queue list` in that directory searches.
    expect(runCli(['check-config', '--config', path.join(dir, 'relay.config.json')], { env: ENV }).stderr).toContain('relay.config.yaml: is also in')
    // One file, or a file of another name beside it: no warning.
    expect(runCli(['check-config'], { cwd: cwdDir, env: ENV }).stderr).not.toContain('is also in')
    expect(runCli(['check-config', '--config', flagFile], { env: ENV }).stderr).not.toContain('is also in')
  })

  it("a config found in the current directory that another user could have written is not read (it is code, run as the caller); --config still reads it", () => {
    const planted = dirWith({ 'relay.config.json': json('planted.example') })
    const file = path.join(planted, 'relay.config.json')
    fs.chmodSync(file, 0o666)
    let r = runCli(['check-config'], { cwd: planted, env: ENV })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`not reading ${file}, found in the current directory: anyone may write to it (a config is code that runs as you); name it with --config if you trust it`)
    expect(r.stdout).toBe('')
    fs.chmodSync(file, 0o644)
    // Another user's file (root can give it away; elsewhere the mode case above stands for it).
    if (process.getuid?.() === 0) {
      fs.chownSync(file, 4242, 4242)
      r = runCli(['check-config'], { cwd: planted, env: ENV })
      expect(r.code).toBe(2)
      expect(r.stderr).toContain('found in the current directory: it belongs to uid 4242, not to you (uid 0) or root')
      fs.chownSync(file, 0, 0)
      fs.chmodSync(planted, 0o777)
      r = runCli(['check-config'], { cwd: planted, env: ENV })
      expect(r.stderr).toContain('found in the current directory: anyone may write to its directory')
      fs.chmodSync(planted, 0o700)
    }
    // Named, it is the caller's choice.
    fs.chmodSync(file, 0o666)
    r = runCli(['check-config', '--config', file], { env: ENV })
    expect([r.code, okFile(r.stdout)]).toEqual([0, file])
    fs.chmodSync(file, 0o644)
    expect(okFile(runCli(['check-config'], { cwd: planted, env: ENV }).stdout)).toBe(file)
  })

  it('$RELAY_CONFIG naming a file that is not there: exit 2, saying so', () => {
    const missing = path.join(tempDir(), 'gone.json')
    const r = runCli(['check-config'], { cwd: cwdDir, env: { ...ENV, RELAY_CONFIG: missing } })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`config file not found: ${missing} (from $RELAY_CONFIG)`)
    noStack(r.stderr)
  })
})

describe('queue verbs without a config', () => {
  let fixture: ParkedRelay
  beforeAll(async () => {
    fixture = await startParkedRelay('discovery-token-0123456789abcdef')
  })
  afterAll(async () => {
    await fixture?.close()
  })

  it('exit 2 and say where they looked, instead of an empty queue; $RELAY_CONFIG finds the real one', async () => {
    const id = await fixture.submit('waiting@park.test')
    const elsewhere = tempDir('relay-elsewhere-')
    // backup and restore too: they worked on ./data of wherever they ran ("restored 3 messages into /root/data").
    const backupDir = path.join(tempDir('relay-bk-'), 'backup')
    for (const args of [['queue', 'list'], ['queue', 'list', '--json'], ['queue', 'summary'], ['stats'], ['suppression', 'list'], ['queue', 'backup', backupDir], ['queue', 'restore', backupDir]]) {
      const r = runCli(args, { cwd: elsewhere, env: ENV })
      expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(2)
      expect(r.stdout).not.toContain('queue is empty')
      expect(r.stderr).toContain('no config file found; looked in:')
      expect(r.stderr).toContain('$RELAY_CONFIG (not set)')
      expect(r.stderr).toContain(`${elsewhere}/ (relay.config.ts`)
      expect(r.stderr).toContain(`${noSystemDir}/ (relay.config.ts`)
      noStack(r.stderr)
    }
    const found = await eventually(() => {
      const r = runCli(['queue', 'list', '--json'], { cwd: elsewhere, env: { ...ENV, RELAY_CONFIG: fixture.relay.configFile } })
      expect(r.code, r.stderr).toBe(0)
      return (JSON.parse(r.stdout) as { id: string }[]).find((m) => m.id === id)
    })
    expect(found.id).toBe(id)
    expect(fs.readdirSync(elsewhere)).toEqual([])
  })
})

describe('relay start without a config', () => {
  it('runs on the defaults and logs where it looked', async () => {
    const dir = tempDir('relay-noconf-')
    const child = spawn(process.execPath, [BIN, 'start'], { cwd: dir, env: { ...process.env, ...ENV, RELAY_CONFIG: '' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    try {
      const line = await eventually(() => out.split('\n').find((l) => l.includes('no config file found')), 15_000, 'the warning')
      const parsed = JSON.parse(line) as { searched: string[]; level: number }
      expect(parsed.level).toBe(40)
      expect(parsed.searched).toContain('$RELAY_CONFIG (not set)')
      expect(parsed.searched.some((p) => p.startsWith(`${dir}/`))).toBe(true)
    } finally {
      child.kill('SIGTERM')
      await new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve)))
    }
  })
})

describe('relay --version and relay config show', () => {
  it('--version prints the version in package.json', () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }
    const r = runCli(['--version'], { cwd: tempDir(), env: ENV })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.trim()).toBe(version)
  })

  const secrets = {
    queue: { driver: 'postgres', url: 'postgres://relay:s3cret-pw@db.internal:5432/relay' },
    delivery: { throttle: { redis: 'redis://:redis-pw@cache.internal:6379' } },
    plugins: [['admin', { host: '127.0.0.1', port: 0, token: 'admin-token-0123456789abcdef' }], ['spam', { backend: { rspamd: { url: 'http://127.0.0.1:11333', password: 'rspamd-pw' } } }]],
  }
  const dir = dirWith({ 'relay.config.json': json('show.example', { ...secrets, smtp: { maxMessageSize: '10MB' }, tls: { cert: './tls/mail.crt', key: './tls/mail.key' } }) })

  it('prints every setting with its default, secrets redacted, as key = value lines', () => {
    const r = runCli(['config', 'show'], { cwd: dir, env: ENV })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`# config file ${path.join(dir, 'relay.config.json')}`)
    expect(r.stdout).toMatch(/^hostname = "show\.example"$/m)
    expect(r.stdout).toMatch(/^smtp\.maxMessageSize = 10485760$/m) // 10MB is 10 MiB
    expect(r.stdout).toMatch(/^smtp\.maxRecipients = 1000$/m) // a default
    expect(r.stdout).toMatch(/^queue\.url = "postgres:\/\/relay:<redacted>@db\.internal:5432\/relay"$/m)
    expect(r.stdout).toMatch(/^delivery\.throttle\.redis = "redis:\/\/:<redacted>@cache\.internal:6379"$/m)
    expect(r.stdout).toMatch(/^plugins\[0\]\.options\.token = "<redacted>"$/m)
    expect(r.stdout).toMatch(/^plugins\[1\]\.options\.backend\.rspamd\.password = "<redacted>"$/m)
    for (const secret of ['s3cret-pw', 'redis-pw', 'admin-token-0123456789abcdef', 'rspamd-pw']) expect(r.stdout).not.toContain(secret)
    // A key file's path is no secret (and is taken from the config file's directory).
    expect(r.stdout).toMatch(new RegExp(`^tls\\.key = "${path.join(dir, 'tls/mail.key').replace(/[.]/g, '\\.')}"$`, 'm'))
  })

  it('plugin options their schema refuses: shown as written, each problem on stderr, exit 2 (as check-config)', () => {
    const bad = dirWith({ 'relay.config.json': json('show.example', { plugins: [['spam', { rspamd: { url: 'http://127.0.0.1:11333', password: 'rspamd-pw' } }]] }) })
    for (const args of [['config', 'show'], ['config', 'show', '--json']]) {
      const r = runCli(args, { cwd: bad, env: ENV })
      expect(r.code).toBe(2)
      expect(r.stdout).toContain('rspamd')
      expect(r.stdout).not.toContain('rspamd-pw')
      expect(r.stderr).toMatch(/^relay: plugins\[0\] \(spam\) options\.\w+: .*\(shown as written; relay check-config lists every problem\)\n/m)
    }
  })

  it('--json, --changed (postconf -n) and --defaults (postconf -d)', () => {
    const full = runCli(['config', 'show', '--json'], { cwd: dir, env: ENV })
    expect(full.code, full.stderr).toBe(0)
    const config = JSON.parse(full.stdout) as Record<string, any>
    expect(config.configFile).toBe(path.join(dir, 'relay.config.json'))
    expect(config.smtp.maxMessageSize).toBe(10 * 1024 * 1024)
    expect(config.delivery.retry.base).toBe(300_000)
    expect(config.queue.url).toBe('postgres://relay:<redacted>@db.internal:5432/relay')
    expect(config.plugins[0]).toMatchObject({ plugin: 'admin', options: { token: '<redacted>' } })
    expect(full.stdout).not.toContain('s3cret-pw')

    const changed = runCli(['config', 'show', '--changed'], { cwd: dir, env: ENV })
    expect(changed.code, changed.stderr).toBe(0)
    expect(changed.stdout).toMatch(/^smtp\.maxMessageSize = 10485760$/m)
    expect(changed.stdout).not.toContain('smtp.maxRecipients')
    expect(changed.stdout).not.toContain('s3cret-pw')

    const defaults = runCli(['config', 'show', '--defaults'], { cwd: dir, env: ENV })
    expect(defaults.code, defaults.stderr).toBe(0)
    expect(defaults.stdout).toMatch(/^smtp\.maxMessageSize = 52428800$/m)
    expect(defaults.stdout).toMatch(/^queue\.driver = "sqlite"$/m)
    expect(defaults.stdout).toMatch(/^listen\[0\]\.port = 2525$/m)
  })
})

describe('check-config: every problem at once, and the files it will need', () => {
  const ca = makeCa()
  const a = ca.issue(['a.example'])
  const b = ca.issue(['b.example'])

  it('core settings, plugin options, TLS files and the data directory, together; exit 2, no stack trace', () => {
    const dir = dirWith({ 'not-a-dir': 'x' })
    fs.writeFileSync(
      path.join(dir, 'relay.config.json'),
      JSON.stringify({
        hostname: 'bad.example',
        smtp: { maxRecipients: 0 },
        dataDir: './not-a-dir/data',
        tls: { cert: a.cert, key: b.key, sni: { 'c.example': { cert: './missing.crt', key: a.key } } },
        plugins: [['admin', { port: 'eighty' }], 'no-such-plugin'],
      }),
    )
    const started = runCli(['start'], { cwd: dir, env: ENV })
    expect(started.code, started.stderr).toBe(2)
    expect(started.stderr).toMatch(/^ {2}smtp\.maxRecipients: /m)
    noStack(started.stderr)

    const r = runCli(['check-config'], { cwd: dir, env: ENV })
    expect(r.code, r.stderr).toBe(2)
    {
      expect(r.stderr).toMatch(/^ {2}smtp\.maxRecipients: /m)
      expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(admin\) options\.port: .*\[RELAY_ERR_PLUGIN_OPTIONS\]$/m)
      expect(r.stderr).toMatch(/^ {2}plugins\[1\]: unknown plugin 'no-such-plugin'/m)
      expect(r.stderr).toContain(`  tls: the key ${b.key} does not belong to the certificate ${a.cert}`)
      expect(r.stderr).toContain(`  tls.sni.c.example.cert: cannot read ${path.join(dir, 'missing.crt')}: no such file`)
      expect(r.stderr).toContain(`  dataDir: cannot create ${path.join(dir, 'not-a-dir/data')}: ${path.join(dir, 'not-a-dir')} is not a directory`)
      noStack(r.stderr)
    }
  })

  it('a data directory where nothing can be made (under /proc): check-config says so as start does; a good one is left as it was', () => {
    const dir = dirWith({})
    // (Root passes the permission check there; the directory still cannot be made.)
    for (const [dataDir, expected] of [
      ['/proc/relay-data', /^ {2}dataDir: cannot create \/proc\/relay-data: \/proc (does not take new directories|is not writable)/m],
      ['/proc/self', /^ {2}dataDir: \/proc\/self is not writable/m],
    ] as const) {
      fs.writeFileSync(path.join(dir, 'relay.config.json'), json('proc.example', { dataDir }))
      const checked = runCli(['check-config'], { cwd: dir, env: ENV })
      expect(checked.code, checked.stdout).toBe(2)
      expect(checked.stderr).toMatch(expected)
      const started = runCli(['start'], { cwd: dir, env: ENV })
      expect(started.code, started.stdout).toBe(2)
      expect(started.stderr).toMatch(expected)
      noStack(started.stderr)
    }
    // A data directory that can be made is not made by the check, nor is anything left beside it.
    const parent = tempDir()
    fs.writeFileSync(path.join(dir, 'relay.config.json'), json('proc.example', { dataDir: path.join(parent, 'data') }))
    const ok = runCli(['check-config'], { cwd: dir, env: ENV })
    expect(ok.code, ok.stderr).toBe(0)
    expect(fs.readdirSync(parent)).toEqual([])
  })

  it('files in the data directory the relay cannot open (made by a start as root): check-config names them, as start does', () => {
    // Under root, root without the capabilities that pass over file modes (setpriv).
    const asRoot = process.getuid?.() === 0
    const drop = ['--inh-caps=-dac_override,-dac_read_search', '--bounding-set=-dac_override,-dac_read_search']
    const run = (verb: string, cwd: string) => {
      const r = asRoot
        ? spawnSync('setpriv', [...drop, process.execPath, BIN, verb], { cwd, env: { ...process.env, ...ENV }, encoding: 'utf8', timeout: 30_000 })
        : spawnSync(process.execPath, [BIN, verb], { cwd, env: { ...process.env, ...ENV }, encoding: 'utf8', timeout: 30_000 })
      return { code: r.status, stdout: r.stdout, stderr: r.stderr }
    }
    const dir = dirWith({ 'relay.config.json': json('own.example', { listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], smtp: { reverseLookup: false } }) })
    const data = path.join(dir, 'data')
    fs.mkdirSync(path.join(data, 'spool'), { recursive: true })
    fs.writeFileSync(path.join(data, 'relay.lock'), '')
    fs.chmodSync(path.join(data, 'relay.lock'), 0o000)
    fs.writeFileSync(path.join(data, 'relay.signals'), '1 USR2\n')
    fs.chmodSync(path.join(data, 'relay.signals'), 0o400)
    fs.chmodSync(path.join(data, 'spool'), 0o000)
    try {
      for (const verb of ['check-config', 'start']) {
        const r = run(verb, dir)
        expect(r.code, `${verb}: ${r.stdout}${r.stderr}`).toBe(2)
        expect(r.stderr).toMatch(new RegExp(`^ {2}dataDir: cannot open ${path.join(data, 'relay.lock')} \\(mode 0000, owner uid \\d+\\): permission denied .*chown the data directory to the relay's user$`, 'm'))
        expect(r.stderr).toContain(`  dataDir: cannot open ${path.join(data, 'spool')} (mode 0000`)
        expect(r.stderr).toContain(`  dataDir: cannot open ${path.join(data, 'relay.signals')} (mode 0400`)
        noStack(r.stderr)
      }
    } finally {
      fs.chmodSync(path.join(data, 'spool'), 0o755)
    }
  })

  it('start refuses unusable TLS files with exit 2 and no stack trace', () => {
    const dir = dirWith({ 'relay.config.json': json('tls.example', { listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], tls: { cert: a.cert, key: b.key } }) })
    const r = runCli(['start'], { cwd: dir, env: ENV })
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toContain(`tls: the key ${b.key} does not belong to the certificate ${a.cert}`)
    noStack(r.stderr)

    // The summary tells 587 (STARTTLS) from 465 (TLS from the first byte) and a listener without TLS.
    const listen = [
      { host: '127.0.0.1', port: 2525, role: 'mx' },
      { host: '127.0.0.1', port: 2465, role: 'mx', tls: 'implicit' },
      { host: '127.0.0.1', port: 2526, role: 'mx', tls: 'none' },
    ]
    fs.writeFileSync(path.join(dir, 'relay.config.json'), json('tls.example', { tls: { cert: a.cert, key: a.key }, listen }))
    const ok = runCli(['check-config'], { cwd: dir, env: ENV })
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toContain(`tls ${a.cert} (key ${a.key}): readable, a matching pair`)
    expect(ok.stdout).toContain('  listen 127.0.0.1:2525 (mx, tls starttls)\n  listen 127.0.0.1:2465 (mx, tls implicit)\n  listen 127.0.0.1:2526 (mx, tls none)\n')
  })

  it('start on a port in use: one line, exit 1, no stack trace', async () => {
    const busy = net.createServer().listen(0, '127.0.0.1')
    await once(busy, 'listening')
    const port = (busy.address() as net.AddressInfo).port
    try {
      // The plugins were set up by then: a start that fails tears them down, as a stop would.
      const teardown = "import fs from 'node:fs'\nexport default { name: 'td', teardown: (ctx) => fs.appendFileSync(ctx.resolvePath('teardowns'), 'td\\n'), hooks: { connect() {} } }\n"
      const listen = [{ host: '127.0.0.1', port: 0, role: 'mx' }, { host: '127.0.0.1', port, role: 'mx' }]
      const dir = dirWith({ 'td.mjs': teardown, 'relay.config.json': json('busy.example', { listen, smtp: { reverseLookup: false }, plugins: ['./td.mjs'] }) })
      const r = runCli(['start'], { cwd: dir, env: ENV })
      expect(r.code, r.stderr).toBe(1)
      expect(r.stderr).toMatch(/^relay: cannot start: .*EADDRINUSE.*$/m)
      noStack(r.stderr)
      expect(fs.readFileSync(path.join(dir, 'teardowns'), 'utf8')).toBe('td\n')
      // A plugin's port in use is the same kind of failure (not an invalid config), named by the plugin.
      fs.writeFileSync(path.join(dir, 'relay.config.json'), json('busy.example', { listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], smtp: { reverseLookup: false }, plugins: [['admin', { host: '127.0.0.1', port, insecureNoToken: true }]] }))
      const p = runCli(['start'], { cwd: dir, env: ENV })
      expect(p.code, p.stderr).toBe(1)
      expect(p.stderr).toMatch(/^relay: cannot start: plugins\[0\] \(admin\).*EADDRINUSE/m)
      noStack(p.stderr)
    } finally {
      busy.close()
    }
  })

  it('start with a plugin that fails (options, load, setup) or a port in use: one line on stderr naming it; no stack trace in the log but at level debug', async () => {
    const dir = dirWith({
      'broken.mjs': "throw new Error('broken at import')\n",
      'failing.mjs': "export default { name: 'failing', setup() { throw new Error('cannot reach the thing') } }\n",
    })
    const start = (plugin: unknown[], extra: Record<string, unknown> = {}) => {
      fs.writeFileSync(path.join(dir, 'relay.config.json'), json('fail.example', { listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], smtp: { reverseLookup: false }, log: { level: 'info' }, plugins: [plugin], ...extra }))
      return runCli(['start'], { cwd: dir, env: ENV })
    }
    const cases: [unknown[], RegExp][] = [
      [['admin', { port: 'x' }], /^ {2}plugins\[0\] \(admin\) options\.port: expected a number, got a string \[RELAY_ERR_PLUGIN_OPTIONS\]$/m],
      [['./broken.mjs', {}], /^ {2}plugins\[0\]: cannot load plugin '\.\/broken\.mjs': broken at import \[RELAY_ERR_PLUGIN_LOAD\]$/m],
      [['./failing.mjs', {}], /^ {2}plugins\[0\] \(failing\): setup: cannot reach the thing \[RELAY_ERR_PLUGIN_SETUP\]$/m],
    ]
    // Every entry's problem in one start, as check-config lists them, not only the first.
    fs.writeFileSync(path.join(dir, 'relay.config.json'), json('fail.example', { listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], log: { level: 'info' }, plugins: ['does-not-exist', ['admin', { port: 'x' }], ['./broken.mjs', {}]] }))
    const all = runCli(['start'], { cwd: dir, env: ENV })
    expect(all.code, all.stderr).toBe(2)
    expect(all.stderr).toMatch(/^ {2}plugins\[0\]: .*does-not-exist.*\[RELAY_ERR_PLUGIN_LOAD\]$/m)
    expect(all.stderr).toMatch(/^ {2}plugins\[1\] \(admin\) options\.port: expected a number, got a string \[RELAY_ERR_PLUGIN_OPTIONS\]$/m)
    expect(all.stderr).toMatch(/^ {2}plugins\[2\]: cannot load plugin '\.\/broken\.mjs': broken at import \[RELAY_ERR_PLUGIN_LOAD\]$/m)
    for (const [plugin, expected] of cases) {
      const r = start(plugin)
      expect(r.code, r.stderr).toBe(2)
      expect(r.stderr).toMatch(expected)
      noStack(r.stderr)
      // The journal gets no stack trace from stdout either (a core key's error prints none at all).
      expect(r.stdout).not.toContain('"stack"')
      noStack(r.stdout)
    }
    // At level debug the details are there for whoever asks.
    const debug = start(['./failing.mjs', {}], { log: { level: 'debug' } })
    expect(debug.code).toBe(2)
    expect(debug.stdout).toMatch(/"msg":"cannot start: details"/)
    expect(debug.stdout).toContain('"stack"')
    noStack(debug.stderr)

    // A failure that is not the config's (a port in use): exit 1, one log line, still no stack in it.
    const busy = net.createServer().listen(0, '127.0.0.1')
    await once(busy, 'listening')
    try {
      const r = start(['admin', { host: '127.0.0.1', port: (busy.address() as net.AddressInfo).port, insecureNoToken: true }])
      expect(r.code, r.stderr).toBe(1)
      expect(r.stderr).toMatch(/^relay: cannot start: plugins\[0\] \(admin\).*EADDRINUSE/m)
      const fatal = r.stdout.split('\n').find((l) => l.includes('"msg":"cannot start"'))
      expect(fatal).toContain('EADDRINUSE')
      expect(fatal).not.toContain('"stack"')
    } finally {
      busy.close()
    }
  })

  it('a port below 1024 refused (EACCES): the listener named, and that it needs root or CAP_NET_BIND_SERVICE', () => {
    // Under root, root without that capability (setpriv); any other user lacks it anyway.
    const asRoot = process.getuid?.() === 0
    const drop = ['--inh-caps=-net_bind_service', '--bounding-set=-net_bind_service', '--ambient-caps=-net_bind_service']
    const startUnprivileged = (dir: string) => {
      const r = asRoot
        ? spawnSync('setpriv', [...drop, process.execPath, BIN, 'start'], { cwd: dir, env: { ...process.env, ...ENV }, encoding: 'utf8', timeout: 30_000 })
        : spawnSync(process.execPath, [BIN, 'start'], { cwd: dir, env: { ...process.env, ...ENV }, encoding: 'utf8', timeout: 30_000 })
      return { code: r.status, stdout: r.stdout, stderr: r.stderr }
    }
    // A system whose unprivileged ports start at 1 or below refuses nothing here (Linux: 1024).
    expect(Number(fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'))).toBeGreaterThan(1)
    const hint = 'ports below 1024 need root or the CAP_NET_BIND_SERVICE capability (the systemd unit deploy/relay.service grants it with AmbientCapabilities=CAP_NET_BIND_SERVICE)'
    const listen = [{ host: '127.0.0.1', port: 0, role: 'mx' }, { host: '127.0.0.1', port: 1, role: 'mx' }]
    const dir = dirWith({ 'relay.config.json': json('low.example', { listen, smtp: { reverseLookup: false } }) })
    const r = startUnprivileged(dir)
    expect(r.code, r.stderr).toBe(1)
    expect(r.stderr).toBe(`relay: cannot start: listen[1] 127.0.0.1:1: permission denied: ${hint} (EACCES)\n`)
    // The systemd unit does grant it.
    expect(fs.readFileSync(path.join(ROOT, 'deploy/relay.service'), 'utf8')).toMatch(/^AmbientCapabilities=CAP_NET_BIND_SERVICE$/m)
    // A plugin's listener (the admin plugin's) is named by its entry.
    fs.writeFileSync(path.join(dir, 'relay.config.json'), json('low.example', { listen: [listen[0]], smtp: { reverseLookup: false }, plugins: [['admin', { host: '127.0.0.1', port: 1, insecureNoToken: true }]] }))
    const p = startUnprivileged(dir)
    expect(p.code, p.stderr).toBe(1)
    expect(p.stderr).toMatch(/^relay: cannot start: plugins\[0\] \(admin\): .*EACCES.*: ports below 1024 need root or the CAP_NET_BIND_SERVICE capability/m)
    noStack(p.stderr)
  })

  it('YAML and JSON syntax errors name the line and column', () => {
    const yaml = dirWith({ 'relay.config.yaml': 'hostname: y.example\nlisten:\n  - port: 25\n   role: mx\n' })
    let r = runCli(['check-config'], { cwd: yaml, env: ENV })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('relay.config.yaml:4:4: cannot load config: YAML syntax error at line 4, column 4: bad indentation')
    noStack(r.stderr)

    const jsonDir = dirWith({ 'relay.config.json': '{\n  "hostname": "j.example",\n  "listen": [ { "port": 25, } ]\n}\n' })
    r = runCli(['check-config'], { cwd: jsonDir, env: ENV })
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/relay\.config\.json:3:\d+: cannot load config: JSON syntax error at line 3, column \d+: /)
    expect(r.stderr).toMatch(/^ {4}3 \| {3}"listen"/m) // the line itself, under it a caret
    noStack(r.stderr)

    // A file cut short (no newline at its end): where it ends, not a line after it.
    const cut = dirWith({ 'relay.config.json': '{"hostname":' })
    r = runCli(['check-config'], { cwd: cut, env: ENV })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('relay.config.json:1:13: cannot load config: JSON syntax error at line 1, column 13: Unexpected end of JSON input\n    1 | {"hostname":\n      |             ^')
  })
})

describe('a syntax error beside a secret', () => {
  // Under systemd, `relay start`'s stderr is the journal, which more people read than the config.
  it('the excerpt stars out the token and the URL password, the same length (the caret still fits)', () => {
    const yaml = 'dataDir: ./data\nqueue: { driver: postgres, url: "postgres://relay:pg-s3cret-pw@db:5432/relay" }\nplugins:\n  - [admin, { token: "admin-s3cret-token-0123456789", port: 8025 ]\n'
    const dir = dirWith({ 'relay.config.yaml': yaml })
    for (const verb of ['check-config', 'start']) {
      const r = runCli([verb], { cwd: dir, env: ENV })
      expect(r.code).toBe(2)
      expect(r.stderr).toContain('relay.config.yaml:4:66: cannot load config: YAML syntax error at line 4, column 66')
      expect(r.stderr).not.toMatch(/s3cret/)
      expect(r.stderr).toContain(`    2 | queue: { driver: postgres, url: "postgres://relay:${'*'.repeat('pg-s3cret-pw'.length)}@db:5432/relay" }\n`)
      expect(r.stderr).toContain(`    4 |   - [admin, { token: "${'*'.repeat(29)}", port: 8025 ]\n      | ${' '.repeat(65)}^`)
    }
    // Names that are not secrets keep their values; a key file's path is not its key.
    fs.writeFileSync(path.join(dir, 'relay.config.yaml'), 'hostname: "mx.example"\ntls: { key: "/etc/relay/k.pem", cert: "/etc/relay/c.pem" \n')
    const r = runCli(['check-config'], { cwd: dir, env: ENV })
    expect(r.stderr).toContain('| tls: { key: "/etc/relay/k.pem", cert: "/etc/relay/c.pem"')
    expect(r.stderr).toContain('| hostname: "mx.example"')
  })

  it('no syntax error shows a secret: not in the reason (esbuild and V8 quote the token they stopped at), not unquoted, not after a stray quote; in a plugin file neither', () => {
    const cases: Record<string, string> = {
      'relay.config.yaml': 'hostname: mx.example\nplugins:\n  - name: auth-sql\n    options:\n      password: hunter2-s3cret: x\n',
      'relay.config.ts': 'export default { hostname: "mx.example", queue: { url: "postgres://u:pw-s3cret@db/x" }, token: "abc"hunter3s3cret"x" }\n',
      'relay.config.mjs': 'export default { hostname: "mx.example", token: "abc"hunter4s3cret"x" }\n',
      'relay.config.json': '{ "hostname": "mx.example", "token": "abc"hunter5s3cret"x" }\n',
      'relay.config.yml': 'hostname: mx.example\nsecret: "abc"hunter6s3cret"\n',
    }
    for (const [name, text] of Object.entries(cases)) {
      const dir = dirWith({ [name]: text })
      for (const verb of ['check-config', 'start']) {
        const r = runCli([verb], { cwd: dir, env: ENV })
        expect(r.code, `${name} ${verb}: ${r.stderr}`).toBe(2)
        expect(r.stderr).toMatch(/syntax error at line \d+, column \d+/)
        expect(r.stderr, `${name} ${verb}`).not.toMatch(/s3cret/)
      }
    }
    // A plugin module that does not parse: its error names the file and place, never the value.
    const dir = dirWith({
      'relay.config.json': json('mx.example', { plugins: ['./bad-plugin.ts'] }),
      'bad-plugin.ts': "export default { name: 'bad', hooks: {}, token: 'abc'hunter7s3cret'x' }\n",
    })
    const r = runCli(['check-config'], { cwd: dir, env: ENV })
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toMatch(/TypeScript syntax error at bad-plugin\.ts:1:\d+/)
    expect(r.stderr).not.toMatch(/s3cret/)  }, 120_000)

  it('text in a config that does not parse cannot drive the terminal: control characters print as ?', () => {
    const dir = dirWith({ 'relay.config.json': '{ "hostname": "mx\x1b]0;PWNED\x07\x1b[2J.example", }}\n' })
    const r = runCli(['check-config'], { cwd: dir, env: ENV })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('mx?]0;PWNED??[2J.example')
    expect(r.stderr).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/)
  })
})

describe("a TypeScript config outside the package imports 'relay-mta'", () => {
  const config = (hostname: string) =>
    "import { defineConfig, parseDuration } from 'relay-mta'\n" +
    "import type { RelayConfigInput } from 'relay-mta'\n" +
    "import { tempDir } from 'relay-mta/testing'\n" +
    `const base: RelayConfigInput = { hostname: '${hostname}', dataDir: './data' }\n` +
    "if (typeof tempDir !== 'function') throw new Error('relay-mta/testing did not load')\n" +
    'export default defineConfig({ ...base, shutdownTimeout: parseDuration(\'45s\')! / 1000 })\n'

  it('in a plain directory (no package.json, no node_modules) found by --config and by the current directory', () => {
    const dir = dirWith({ 'relay.config.ts': config('ts.example') })
    expect(path.relative(ROOT, dir).startsWith('..')).toBe(true)
    for (const args of [['check-config', '--config', path.join(dir, 'relay.config.ts')], ['check-config']]) {
      const r = runCli(args, { cwd: dir, env: ENV })
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toContain('hostname ts.example')
    }
    const shown = runCli(['config', 'show', '--json'], { cwd: dir, env: ENV })
    expect(shown.code, shown.stderr).toBe(0)
    expect((JSON.parse(shown.stdout) as { shutdownTimeout: number }).shutdownTimeout).toBe(45_000)
  })

  it('in the system directory (/etc/relay/ stand-in) when nothing else is found', () => {
    const etc = dirWith({ 'relay.config.ts': config('etc-ts.example') }, 'relay-etc-ts-')
    const r = runCli(['check-config'], { cwd: tempDir(), env: { ...ENV, RELAY_SYSTEM_CONFIG_DIR: etc } })
    expect(r.code, r.stderr).toBe(0)
    expect(okFile(r.stdout)).toBe(path.join(etc, 'relay.config.ts'))
    expect(r.stdout).toContain('hostname etc-ts.example')
  })
})
