// A relay killed with -9 leaves <dataDir>/admin.json (its admin URL, pid and bearer token) behind.
// The CLI believed it while that pid lived: once the pid was reused by another program listening on
// the admin URL, `relay queue list` and `relay stats` sent it the admin token. Now admin.json counts
// only when its pid is the relay holding the data directory's lock (relay.lock) now.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { once } from 'node:events'
import { eventually, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'

const TOKEN = 'stale-admin-token-0123456789abcdef'

/** Another program, listening where the admin listener was: it prints every request's Authorization header. */
async function impostor(port: number): Promise<{ child: ChildProcess; seen: () => string[] }> {
  const script = `require('node:http').createServer((req, res) => { process.stdout.write(JSON.stringify(req.headers.authorization ?? '') + '\\n'); res.setHeader('content-type', 'application/json'); res.end('[]') }).listen(${port}, '127.0.0.1', () => process.stdout.write('listening\\n'))`
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  await eventually(() => out.includes('listening\n'), 10_000, 'impostor listening')
  return { child, seen: () => out.split('\n').filter((l) => l && l !== 'listening').map((l) => JSON.parse(l) as string) }
}

describe('a stale admin.json', () => {
  let relay: RelayProcess
  let adminFile: string
  let stale: { url: string; pid: number; token?: string }

  beforeAll(async () => {
    relay = await startRelay({ config: { plugins: [['admin', { host: '127.0.0.1', port: 0, token: TOKEN }]] } })
    adminFile = path.join(relay.dataDir, 'admin.json')
    await eventually(() => fs.existsSync(adminFile), 10_000, 'admin.json written')
    stale = JSON.parse(fs.readFileSync(adminFile, 'utf8')) as typeof stale
    expect(stale.token).toBe(TOKEN)
    await relay.kill9()
    expect(fs.existsSync(adminFile)).toBe(true)
  }, 30_000)

  afterAll(async () => {
    await relay?.stop()
  })

  it('whose pid now belongs to another program on the admin URL: the CLI never sends it the token and works on the data directory', async () => {
    const other = await impostor(Number(new URL(stale.url).port))
    try {
      // The pid was reused: admin.json and relay.pid (also left behind) name the other program.
      fs.writeFileSync(adminFile, JSON.stringify({ ...stale, pid: other.child.pid }), { mode: 0o600 })
      fs.writeFileSync(path.join(relay.dataDir, 'relay.pid'), `${other.child.pid}\n`)
      const list = await runCliAsync(['queue', 'list', '--config', relay.configFile], { env: { RELAY_ADMIN_TOKEN: '' } })
      const stats = await runCliAsync(['stats', '--json', '--config', relay.configFile], { env: { RELAY_ADMIN_TOKEN: '' } })
      expect(other.seen()).toEqual([])
      expect(list.code, list.stderr).toBe(0)
      expect(list.stdout).toBe('queue is empty\n')
      expect(stats.code, stats.stderr).toBe(0)
      expect(JSON.parse(stats.stdout)).toMatchObject({ period: 'day' })
    } finally {
      other.child.kill()
      await once(other.child, 'exit')
    }
  })

  it('left by an earlier run while a relay without the admin plugin runs: not used either', async () => {
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(relay.configFile, 'utf8')), plugins: [] }))
    await relay.restart()
    await relay.waitForLog((l) => l.msg === 'relay started', 10_000)
    const other = await impostor(Number(new URL(stale.url).port))
    try {
      fs.writeFileSync(adminFile, JSON.stringify({ ...stale, pid: other.child.pid }), { mode: 0o600 })
      const list = await runCliAsync(['queue', 'list', '--config', relay.configFile], { env: { RELAY_ADMIN_TOKEN: '' } })
      expect(other.seen()).toEqual([])
      expect(list.code, list.stderr).toBe(0)
      expect(list.stdout).toBe('queue is empty\n')
      expect(list.stderr).toBe('')
    } finally {
      other.child.kill()
      await once(other.child, 'exit')
    }
  })
})
