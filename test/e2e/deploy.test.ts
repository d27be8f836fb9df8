// The deployment kit (deploy/): the systemd unit passes `systemd-analyze verify` (and its security
// review), the image builds when a Docker daemon answers (else the Dockerfile and compose file are
// linted), the HEALTHCHECK script tells a ready relay from a stopped one, and the example config
// for /etc/relay passes `relay check-config` importing 'relay-mta' from outside the package.
import { afterAll, describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { defaultLoaders } from 'cosmiconfig'
import { BIN, ROOT, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { makeCa } from '../harness/tls.js'
import { skipFor } from '../harness/services.js'
import { configSchema } from '../../core/config/schema.js'

const DEPLOY = path.join(ROOT, 'deploy')
const read = (file: string) => fs.readFileSync(path.join(DEPLOY, file), 'utf8')
/** The default `shutdownTimeout` in seconds: SIGTERM waits this long, so every stop timeout must be longer. */
const SHUTDOWN_S = configSchema.parse({}).shutdownTimeout / 1000
const seconds = (v: string) => Number(/^(\d+)s?$/.exec(v.trim())?.[1] ?? NaN)

/** `Key=value` lines of one section of a unit file (a key given twice keeps every value). */
function unitSection(text: string, section: string): Map<string, string[]> {
  const keys = new Map<string, string[]>()
  let current = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (!line || line.startsWith('#') || line.startsWith(';')) continue
    const header = /^\[(.+)\]$/.exec(line)
    if (header) current = header[1]!
    else if (current === section) {
      const eq = line.indexOf('=')
      keys.set(line.slice(0, eq), [...(keys.get(line.slice(0, eq)) ?? []), line.slice(eq + 1)])
    }
  }
  return keys
}

describe('deploy/relay.service', () => {
  const unit = read('relay.service')
  const service = unitSection(unit, 'Service')
  const one = (key: string) => service.get(key)?.at(-1)

  it('runs as relay with port 25, its state and config directories, hardened, reloads with HUP, stops after shutdownTimeout', () => {
    expect(one('User')).toBe('relay')
    expect(one('AmbientCapabilities')).toBe('CAP_NET_BIND_SERVICE')
    expect(one('CapabilityBoundingSet')).toBe('CAP_NET_BIND_SERVICE')
    expect(one('StateDirectory')).toBe('relay')
    expect(one('ConfigurationDirectory')).toBe('relay')
    expect(one('ExecStart')).toMatch(/ start --config \/etc\/relay\/relay\.config\.ts$/)
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID')
    expect(one('KillSignal')).toBe('SIGTERM')
    expect(seconds(one('TimeoutStopSec')!)).toBeGreaterThan(SHUTDOWN_S)
    expect(one('Restart')).toBe('on-failure')
    for (const [key, value] of [['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'], ['NoNewPrivileges', 'yes']]) expect(one(key!), key).toBe(value)
    expect(one('RestrictAddressFamilies')!.split(/\s+/).sort()).toEqual(['AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_UNIX'])
    // With ProtectSystem=strict only StateDirectory= is writable: the example config's dataDir must be it.
    expect(read('relay.config.ts')).toContain("dataDir: env.RELAY_DATA_DIR ?? '/var/lib/relay'")
    // V8 needs writable code pages; the capability must act on the host's network namespace.
    expect(service.has('MemoryDenyWriteExecute')).toBe(false)
    expect(service.has('PrivateUsers')).toBe(false)
  })

  const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' })
  const haveAnalyze = !analyze.error && analyze.status === 0

  /** The unit with ExecStart on this machine's node and bin/relay.js (verify checks the binary exists). */
  function localUnit(): string {
    const dir = tempDir('relay-unit-')
    const file = path.join(dir, 'relay.service')
    fs.writeFileSync(file, unit.replace(/^ExecStart=\S+ \S+/m, `ExecStart=${process.execPath} ${BIN}`))
    expect(fs.readFileSync(file, 'utf8')).toContain(`ExecStart=${process.execPath} ${BIN} start --config`)
    return file
  }

  it('passes systemd-analyze verify without a warning', () => {
    if (!haveAnalyze) return void skipFor('systemd-analyze is not installed', 'the systemd unit check')
    const r = spawnSync('systemd-analyze', ['verify', localUnit()], { encoding: 'utf8' })
    // Unknown keys and bad values are warnings with exit code 0: any line naming the unit fails.
    expect(r.stderr.split('\n').filter((l) => l.includes('relay.service'))).toEqual([])
    expect(r.status, r.stderr).toBe(0)
  })

  it('is rated OK by systemd-analyze security (exposure at most 3.0 of 10)', () => {
    if (!haveAnalyze) return void skipFor('systemd-analyze is not installed', 'the systemd security review')
    const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--threshold=30', '--no-pager', localUnit()], { encoding: 'utf8' })
    if (/unrecognized option|unknown option/i.test(r.stderr)) return void console.warn(`skipped: systemd-analyze ${analyze.stdout.split('\n')[0]} has no offline security review`)
    const level = /Overall exposure level for relay\.service: ([\d.]+)/.exec(r.stdout)
    expect(level, r.stdout + r.stderr).not.toBeNull()
    expect(Number(level![1])).toBeLessThanOrEqual(3)
    expect(r.status).toBe(0)
  })
})

describe('deploy/Dockerfile and deploy/compose.yaml', () => {
  const dockerfile = read('Dockerfile')
  /** Instructions with continuation lines joined, comments and the parser directive dropped. */
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => ({ op: l.split(/\s+/)[0]!.toUpperCase(), args: l.slice(l.indexOf(' ') + 1).trim() }))
  const all = (op: string) => instructions.filter((i) => i.op === op).map((i) => i.args)
  const docker = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { encoding: 'utf8', timeout: 15_000 })
  const daemon = !docker.error && docker.status === 0

  it('lints: two stages (npm ci + tsc, then a slim node), non-root, the data volume, the SMTP ports, a healthcheck', () => {
    const froms = all('FROM')
    expect(froms).toHaveLength(2)
    expect(froms[0]).toMatch(/^node:\$\{NODE_VERSION\}-\S*slim AS build$/)
    expect(froms[1]).toMatch(/^node:\$\{NODE_VERSION\}-\S*slim$/)
    expect(all('ARG')).toContain('NODE_VERSION=20')
    const runs = all('RUN').join('\n')
    expect(runs).toMatch(/npm ci\b/)
    expect(runs).toMatch(/tsc -p tsconfig\.json/)
    expect(runs).toMatch(/npm prune --omit=dev/)
    const runtime = instructions.slice(instructions.findIndex((i, n) => i.op === 'FROM' && n > 0))
    const user = runtime.filter((i) => i.op === 'USER').at(-1)?.args
    expect(user).toBeDefined()
    expect(user).not.toMatch(/^(root|0)(:|$)/)
    expect(all('VOLUME')).toEqual(['/var/lib/relay'])
    expect(all('EXPOSE').join(' ').split(/\s+/).sort()).toEqual(['25', '465', '587'])
    expect(all('HEALTHCHECK')).toHaveLength(1)
    expect(all('HEALTHCHECK')[0]).toMatch(/CMD \["node", "\/opt\/relay\/deploy\/healthcheck\.mjs"\]/)
    expect(all('ENTRYPOINT')).toEqual(['["node", "/opt/relay/bin/relay.js"]'])
    // Every file copied from the build context exists and is let through deploy/Dockerfile.dockerignore.
    const allowed = read('Dockerfile.dockerignore').split('\n').filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/\*\*$/, ''))
    for (const copy of all('COPY').filter((a) => !a.startsWith('--from'))) {
      const sources = copy.split(/\s+/).filter((w) => !w.startsWith('--')).slice(0, -1)
      for (const src of sources) {
        expect(fs.existsSync(path.join(ROOT, src)), `COPY ${src}`).toBe(true)
        expect(allowed.some((a) => src === a || src.startsWith(`${a}/`)), `${src} in the .dockerignore allowlist`).toBe(true)
      }
    }
    if (!daemon) console.warn(`notice: no Docker daemon (${(docker.stderr || docker.error?.message || '').trim().split('\n')[0]}): deploy/Dockerfile linted, not built`)
  })

  it('builds, and the image runs as relay with the volume, ports and healthcheck (only with a Docker daemon)', () => {
    if (!daemon) return void console.warn('skipped: no Docker daemon, the image was not built (the lint above ran)')
    const tag = `relay-mta:deploy-test-${process.pid}`
    const build = spawnSync('docker', ['build', '-f', 'deploy/Dockerfile', '-t', tag, '.'], { cwd: ROOT, encoding: 'utf8', timeout: 900_000 })
    expect(build.status, build.stderr.slice(-4000)).toBe(0)
    try {
      const inspect = spawnSync('docker', ['image', 'inspect', tag, '--format', '{{json .Config}}'], { encoding: 'utf8' })
      const config = JSON.parse(inspect.stdout) as { User: string; Volumes: Record<string, unknown>; ExposedPorts: Record<string, unknown>; Healthcheck?: { Test: string[] } }
      expect(config.User).toBe('relay:relay')
      expect(Object.keys(config.Volumes)).toEqual(['/var/lib/relay'])
      expect(Object.keys(config.ExposedPorts).sort()).toEqual(['25/tcp', '465/tcp', '587/tcp'])
      expect(config.Healthcheck?.Test).toEqual(['CMD', 'node', '/opt/relay/deploy/healthcheck.mjs'])
      const check = spawnSync('docker', ['run', '--rm', '-e', 'RELAY_ADMIN_TOKEN=deploy-test-token-0123456789', tag, 'check-config', '--config', '/etc/relay/relay.config.ts'], { encoding: 'utf8', timeout: 120_000 })
      expect(check.stdout + check.stderr).toMatch(/config ok|tls/)
    } finally {
      spawnSync('docker', ['image', 'rm', '-f', tag])
    }
  }, 1_000_000)

  it('compose.yaml: two relay nodes on PostgreSQL and Redis, each its own hostname and data volume', () => {
    const compose = defaultLoaders['.yaml'](path.join(DEPLOY, 'compose.yaml'), read('compose.yaml')) as {
      services: Record<string, { build?: { context: string; dockerfile: string }; environment?: Record<string, string>; volumes?: string[]; depends_on?: Record<string, { condition: string }>; stop_grace_period?: string; init?: boolean }>
      volumes: Record<string, unknown>
    }
    const { services } = compose
    expect(Object.keys(services)).toEqual(expect.arrayContaining(['relay1', 'relay2', 'postgres', 'redis']))
    const nodes = [services.relay1!, services.relay2!]
    for (const node of nodes) {
      expect(fs.existsSync(path.join(DEPLOY, node.build!.context, node.build!.dockerfile))).toBe(true)
      expect(node.environment!.RELAY_POSTGRES_URL).toMatch(/^postgres:\/\/[^@]+@postgres:5432\//)
      expect(node.environment!.RELAY_REDIS_URL).toBe('redis://redis:6379')
      expect(node.environment!.RELAY_ADMIN_TOKEN).toMatch(/^\$\{RELAY_ADMIN_TOKEN:\?/)
      expect(node.depends_on).toMatchObject({ postgres: { condition: 'service_healthy' }, redis: { condition: 'service_healthy' } })
      expect(node.init).toBe(true)
      expect(seconds(node.stop_grace_period!)).toBeGreaterThan(SHUTDOWN_S)
      expect(node.volumes).toContain('./relay.config.ts:/etc/relay/relay.config.ts:ro')
      for (const v of node.volumes!.filter((v) => v.startsWith('./'))) expect(fs.existsSync(path.join(DEPLOY, v.split(':')[0]!)), v).toBe(true)
    }
    // Each node its own identity in the queue and its own local data directory (docs/cluster.md).
    expect(nodes[0]!.environment!.RELAY_HOSTNAME).not.toBe(nodes[1]!.environment!.RELAY_HOSTNAME)
    const dataVolumes = nodes.map((n) => n.volumes!.find((v) => v.endsWith(':/var/lib/relay'))!.split(':')[0]!)
    expect(new Set(dataVolumes).size).toBe(2)
    for (const v of dataVolumes) expect(compose.volumes).toHaveProperty(v)
  })
})

describe('deploy/healthcheck.mjs (the HEALTHCHECK command)', () => {
  const relays: RelayProcess[] = []
  afterAll(async () => {
    await Promise.all(relays.map((r) => r.stop()))
  })
  const healthcheck = (dataDir: string) => spawnSync(process.execPath, [path.join(DEPLOY, 'healthcheck.mjs')], { encoding: 'utf8', env: { ...process.env, RELAY_DATA_DIR: dataDir }, timeout: 10_000 })

  it('with the admin plugin: healthy while /readyz answers 200, unhealthy once stopped', async () => {
    const relay = await startRelay({ config: { plugins: [['admin', { host: '127.0.0.1', port: 0, token: 'deploy-test-token-0123456789' }]] } })
    relays.push(relay)
    const ready = healthcheck(relay.dataDir)
    expect(ready.stdout, ready.stderr).toBe('ready\n')
    expect(ready.status).toBe(0)
    await relay.stop()
    const stopped = healthcheck(relay.dataDir)
    expect(stopped.status).toBe(1)
    expect(stopped.stderr).toMatch(/^unhealthy: /)
  })

  it('without it: healthy while the process in relay.pid runs', async () => {
    const relay = await startRelay()
    relays.push(relay)
    const running = healthcheck(relay.dataDir)
    expect(running.stdout).toBe('running (no admin plugin: liveness only)\n')
    expect(running.status).toBe(0)
    await relay.stop()
    expect(healthcheck(relay.dataDir).status).toBe(1)
  })

  it('files a relay killed with -9 left behind: its admin.json is not asked, its relay.pid (now another program\'s) not believed', async () => {
    const relay = await startRelay({ config: { plugins: [['admin', { host: '127.0.0.1', port: 0, token: 'deploy-test-token-0123456789' }]] } })
    relays.push(relay)
    await relay.kill9()
    // The pid went to another program (this test's process stands in for it).
    fs.writeFileSync(path.join(relay.dataDir, 'relay.pid'), `${process.pid}\n`)
    const stale = healthcheck(relay.dataDir)
    expect([stale.status, stale.stdout]).toEqual([1, ''])
    expect(stale.stderr).toMatch(/^unhealthy: no relay running on /)
    // Started again without the admin plugin: the earlier run's admin.json does not make it unhealthy.
    fs.writeFileSync(path.join(relay.dataDir, 'admin.json'), JSON.stringify({ url: 'http://127.0.0.1:9', pid: process.pid }))
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(relay.configFile, 'utf8')), plugins: [] }))
    await relay.restart()
    const running = healthcheck(relay.dataDir)
    expect([running.status, running.stdout], running.stderr).toEqual([0, 'running (no admin plugin: liveness only)\n'])
  })
})

describe('deploy/relay.config.ts', () => {
  /** /etc/relay as installed: the example, users/users.json, and relay-mta linked into node_modules (docs/deploy.md). */
  function etcRelay(): string {
    const dir = tempDir('relay-etc-')
    fs.copyFileSync(path.join(DEPLOY, 'relay.config.ts'), path.join(dir, 'relay.config.ts'))
    fs.cpSync(path.join(DEPLOY, 'users'), path.join(dir, 'users'), { recursive: true })
    fs.mkdirSync(path.join(dir, 'node_modules'))
    fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'relay-mta'))
    return dir
  }
  /** certbot's live/<name>/ with a certificate from a test CA. */
  function liveDir(name: string): string {
    const issued = makeCa().issue([name])
    const live = path.join(tempDir('relay-le-'), 'live', name)
    fs.mkdirSync(live, { recursive: true })
    fs.copyFileSync(issued.cert, path.join(live, 'fullchain.pem'))
    fs.copyFileSync(issued.key, path.join(live, 'privkey.pem'))
    return live
  }

  it.each([
    ['one node (SQLite queue)', {}],
    ['a cluster node (PostgreSQL, Redis)', { RELAY_POSTGRES_URL: 'postgres://relay@db.internal:5432/relay', RELAY_REDIS_URL: 'redis://redis.internal:6379' }],
  ])('passes check-config from /etc/relay as %s', (_what, extra: Record<string, string>) => {
    const dir = etcRelay()
    const env = { ...process.env, RELAY_HOSTNAME: 'mx.deploy.test', RELAY_TLS_DIR: liveDir('mx.deploy.test'), RELAY_DATA_DIR: path.join(dir, 'data'), RELAY_ADMIN_TOKEN: 'deploy-test-token-0123456789', ...extra }
    const r = spawnSync(process.execPath, [BIN, 'check-config', '--config', path.join(dir, 'relay.config.ts')], { cwd: dir, env, encoding: 'utf8', timeout: 30_000 })
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toContain('hostname mx.deploy.test')
    expect(r.stdout).toMatch(/plugins admin, rate-limit, auth-file, relay-acl/)
  })
})
