// Passwords and keys in configured URLs never reach what the relay prints: `relay config show` (and
// --json), `check-config`, a `relay start` whose PostgreSQL queue cannot be reached (the log), and the log of a running relay with a shared-throttle Redis and a webhook. The forms a
// probe found shown in full: `?password=` (pg and Redis take it), an unencoded `@` in the password,
// a webhook's `?apikey=`.
import { afterAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { runCliAsync, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

// Closed ports in this file's range: nothing answers, so every connection fails at once.
const PG_PORT = 37401
const REDIS_PORT = 37402
const HOOK_PORT = 37403

const SECRETS = /SECRET/
const urls = {
  pgQuery: `postgres://relay@127.0.0.1:${PG_PORT}/relay?password=PgQ-SECRET-661`,
  pgAt: `postgres://relay:Pg@x-SECRET-662@127.0.0.1:${PG_PORT}/relay`,
  redisAt: `redis://:Red@is-SECRET-552@127.0.0.1:${REDIS_PORT}/0`,
  redisQuery: `redis://127.0.0.1:${REDIS_PORT}/0?password=RedisQ-SECRET-551`,
  hook: `http://127.0.0.1:${HOOK_PORT}/hook?apikey=QueryKey-SECRET-888`,
}
const webhook = ['webhook', { url: urls.hook, secret: 'WebhookSecret-SECRET-999' }]

function configDir(extra: Record<string, unknown>): string {
  const dir = tempDir('relay-urlsec-')
  const config = { hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: './data', log: { level: 'info' }, ...extra }
  fs.writeFileSync(path.join(dir, 'relay.config.json'), JSON.stringify(config))
  return dir
}
const env = { RELAY_CONFIG: undefined, RELAY_SYSTEM_CONFIG_DIR: tempDir('relay-etc-empty-') }
const cli = (dir: string, ...args: string[]) => runCliAsync(args, { cwd: dir, env })

describe('relay config show and check-config', () => {
  const dir = configDir({ queue: { driver: 'postgres', url: urls.pgQuery }, delivery: { throttle: { redis: urls.redisAt } }, plugins: [webhook] })
  const dir2 = configDir({ queue: { driver: 'postgres', url: urls.pgAt }, delivery: { throttle: { redis: urls.redisQuery } } })

  it('show the URLs with the password and secret-named parameters redacted, the rest as written', async () => {
    const r = await cli(dir, 'config', 'show')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(new RegExp(`^queue\\.url = "postgres://<redacted>@127\\.0\\.0\\.1:${PG_PORT}/relay\\?password=<redacted>"$`, 'm'))
    expect(r.stdout).toMatch(new RegExp(`^delivery\\.throttle\\.redis = "redis://:<redacted>@127\\.0\\.0\\.1:${REDIS_PORT}/0"$`, 'm'))
    expect(r.stdout).toMatch(new RegExp(`^plugins\\[0\\]\\.options\\.url = "http://127\\.0\\.0\\.1:${HOOK_PORT}/hook\\?apikey=<redacted>"$`, 'm'))
    expect(r.stdout).not.toMatch(SECRETS)

    const j = await cli(dir, 'config', 'show', '--json')
    expect(j.code, j.stderr).toBe(0)
    const shown = JSON.parse(j.stdout) as { plugins: { options: { url: string } }[] }
    expect(shown.plugins[0]!.options.url).toBe(`http://127.0.0.1:${HOOK_PORT}/hook?apikey=<redacted>`)
    expect(j.stdout).not.toMatch(SECRETS)

    const r2 = await cli(dir2, 'config', 'show')
    expect(r2.code, r2.stderr).toBe(0)
    expect(r2.stdout).toMatch(new RegExp(`^queue\\.url = "postgres://relay:<redacted>@127\\.0\\.0\\.1:${PG_PORT}/relay"$`, 'm'))
    expect(r2.stdout).toMatch(new RegExp(`^delivery\\.throttle\\.redis = "redis://127\\.0\\.0\\.1:${REDIS_PORT}/0\\?password=<redacted>"$`, 'm'))
    expect(r2.stdout).not.toMatch(SECRETS)

    for (const d of [dir, dir2]) {
      const c = await cli(d, 'check-config')
      expect(`${c.stdout}${c.stderr}`).not.toMatch(SECRETS)
    }
  })
})

describe('relay start on an unreachable PostgreSQL queue', () => {
  it.each([
    ['?password=', urls.pgQuery, `postgres://***@127.0.0.1:${PG_PORT}/relay?password=***`],
    ['an unencoded @ in the password', urls.pgAt, `postgres://relay:***@127.0.0.1:${PG_PORT}/relay`],
  ])('%s: the log names the server without the password (the node runs and retries)', async (_, url, shown) => {
    const relay = await startRelay({ config: { queue: { driver: 'postgres', url } } })
    try {
      const line = await relay.waitForLog((l) => l.msg === 'queue: PostgreSQL not reachable at start; mail is refused with 451 until it is (retrying)')
      expect((line.err as { message: string }).message).toContain(`queue: PostgreSQL at ${shown}, schema relay: `)
      expect((line.err as { message: string }).message).toMatch(/ECONNREFUSED/)
      expect(JSON.stringify(relay.logs)).not.toMatch(SECRETS)
    } finally {
      await relay.stop()
    }
    expect(JSON.stringify(relay.logs)).not.toMatch(SECRETS)
  })
})

describe('a running relay with a shared-throttle Redis, a rate-limit Redis and a webhook', () => {
  let relay: RelayProcess | undefined
  afterAll(async () => {
    await relay?.stop()
  })

  it('logs neither password nor key while both are unreachable', async () => {
    relay = await startRelay({ config: { delivery: { throttle: { redis: urls.redisAt } }, plugins: [webhook, ['rate-limit', { store: { redis: urls.redisQuery } }]] } })
    await relay.waitForLog((l) => l.msg === 'webhook: sending events')
    const store = await relay.waitForLog((l) => /^rate-limit store: Redis not reachable/.test(l.msg))
    expect(store.redis).toBe(`redis://127.0.0.1:${REDIS_PORT}/0?password=<redacted>`)
    await relay.waitForLog((l) => /throttle: Redis/.test(l.msg))
    const hook = relay.logs.find((l) => l.msg === 'webhook: sending events')
    expect(hook?.url).toBe(`http://127.0.0.1:${HOOK_PORT}/hook`)
    expect(JSON.stringify(relay.logs)).not.toMatch(SECRETS)
  })
})
