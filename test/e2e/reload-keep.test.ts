// A plugin kept across hot reloads (keepOnReload: admin) is matched by what it is (name and
// options), not by its place in `plugins`: adding, removing or reordering the other plugins, or the
// kept ones among themselves, never sets it up again (a second listener on the port it holds).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { runCli, startRelay, type RelayProcess } from '../harness/relay.js'

/** A port free now, from the kernel (a fixed one can be taken: another test's listener, or a connection's own end in TIME-WAIT). */
const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = net.createServer().once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo
      s.close(() => resolve(port))
    })
  })
let PA = 0
let PB = 0
let A: unknown[] = []
let B: unknown[] = []
const ACL = ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }]
let relay: RelayProcess
let users: string

const count = (msg: string) => relay.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(msg)).length
const listeners = () => count('admin listener on')
const verdicts = () => count('config reloaded') + count('config reload refused')

/** `relay reload` with these plugins; resolves once the relay's log has its verdict (and all before it). */
async function reloadWith(plugins: unknown[]) {
  const c = JSON.parse(fs.readFileSync(relay.configFile, 'utf8'))
  fs.writeFileSync(relay.configFile, JSON.stringify({ ...c, plugins }, null, 2))
  const seen = verdicts()
  const r = runCli(['reload', '--config', relay.configFile])
  await relay.waitForLog(() => verdicts() > seen)
  return r
}
const ready = async (port: number) => (await fetch(`http://127.0.0.1:${port}/readyz`)).status

beforeAll(async () => {
  ;[PA, PB] = [await freePort(), await freePort()]
  A = ['admin', { host: '127.0.0.1', port: PA, insecureNoToken: true }]
  B = ['admin', { host: '127.0.0.1', port: PB, insecureNoToken: true }]
  relay = await startRelay({ config: { plugins: [ACL, A, B] } })
  users = path.join(path.dirname(relay.configFile), 'users.json')
  fs.writeFileSync(users, JSON.stringify({ users: {} }))
  await relay.waitForLog(() => listeners() === 2)
})

afterAll(async () => {
  await relay?.stop()
})

describe('reload with a kept plugin that moves in the list', () => {
  it('a plugin added before the admin plugins: reloaded, both listeners kept as they are', async () => {
    const r = await reloadWith([['auth-file', { file: users }], ACL, A, B])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toBe('config reloaded\n  changed: plugins\n')
    expect(listeners()).toBe(2)
    expect(await ready(PA)).toBe(200)
    expect(await ready(PB)).toBe(200)
  })

  it('others removed and the kept ones swapped: still the same two listeners, no restart needed', async () => {
    const r = await reloadWith([B, A])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toBe('config reloaded\n  changed: plugins\n')
    expect(listeners()).toBe(2)
    expect(await ready(PA)).toBe(200)
    expect(await ready(PB)).toBe(200)
  })

  it('changed options of a kept plugin that moved: named at its new place as needing a restart', async () => {
    const changed = ['admin', { ...(B[1] as object), hosts: ['relay-admin.test'] }]
    const r = await reloadWith([A, changed, ACL])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toBe('config reloaded\n  changed: plugins\n  needs a restart to take effect: plugins[1] (admin)\n')
    expect(listeners()).toBe(2)
    const back = await reloadWith([ACL, A, B])
    expect(back.code, back.stderr).toBe(0)
    expect(back.stdout).toBe('config reloaded\n  changed: plugins\n')
    expect(listeners()).toBe(2)
  })

  it('a reload refused later in the list leaves the kept plugins as they were', async () => {
    const r = await reloadWith([B, A, ['relay-acl', { trustedNetworks: 'not-a-list' }]])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/plugins\[2\] \(relay-acl\) options\.trustedNetworks: /)
    const ok = await reloadWith([ACL, A, B])
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toBe('config reloaded\n  no setting changed (plugins and certificates were loaded again)\n')
    expect(listeners()).toBe(2)
    expect(await ready(PA)).toBe(200)
  })
})
