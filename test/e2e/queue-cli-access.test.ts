// An operator who cannot read the relay's data directory (another user, no sudo) ran
// `relay queue list` and was told "queue is empty", exit 0, while messages waited: the unreadable
// queue file looked like one no relay had made yet. Now the verbs say what they cannot read, exit 1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { sendMail } from '../harness/smtp-client.js'
import { BIN, eventually, startRelay, type RelayProcess } from '../harness/relay.js'

const asRoot = process.getuid?.() === 0

/**
 * The CLI as a user without access to the data directory (made mode 000). Under root, root without
 * the capabilities that pass over file modes (setpriv): as another uid, Node or the checkout may sit
 * in a directory only root can reach (CI's Node 24 is under /root/.cache).
 */
const DROP_DAC = ['--inh-caps=-dac_override,-dac_read_search', '--bounding-set=-dac_override,-dac_read_search']
function cliAsOutsider(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const [cmd, argv] = asRoot ? ['setpriv', [...DROP_DAC, process.execPath, BIN, ...args]] : [process.execPath, [BIN, ...args]]
    const child = spawn(cmd, argv, {
      cwd: '/',
      env: { ...process.env, HOME: '/tmp', RELAY_ADMIN_TOKEN: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

describe('queue verbs without access to the data directory', () => {
  let relay: RelayProcess
  let mode: number

  beforeAll(async () => {
    relay = await startRelay({ config: { localDomains: ['local.test'], dns: { servers: ['127.0.0.1:1'] } } })
    await sendMail(relay.port, { from: 'alice@sender.test', to: ['bob@local.test'], data: 'Subject: waiting\r\n\r\nhi\r\n' })
    await eventually(async () => (await relay.listQueue())[0]?.recipients[0]?.state === 'deferred', 10_000, 'deferred')
    await relay.stop()
    // The config is readable by everyone (as /etc/relay is); the data directory by its owner only.
    const dir = path.dirname(relay.configFile)
    fs.chmodSync(dir, 0o755)
    fs.chmodSync(relay.configFile, 0o644)
    mode = fs.statSync(relay.dataDir).mode & 0o777
    fs.chmodSync(relay.dataDir, 0o000)
  })
  afterAll(() => {
    if (relay) fs.chmodSync(relay.dataDir, mode)
  })

  it.each(['queue list', 'queue list --json', 'queue summary', 'queue summary --json', 'queue show AAAAAAAAAAAA', 'stats', 'suppression list'])('%s: exit 1 and says the data directory cannot be read, never "empty"', async (verb) => {
    const args = verb.split(' ')
    const r = await cliAsOutsider([...args, '--config', relay.configFile])
    expect([r.code, r.stdout]).toEqual([1, ''])
    expect(r.stderr).toContain(`relay: cannot read the queue in ${relay.dataDir}: permission denied`)
    expect(r.stderr).not.toMatch(/^\s+at /m)
  })
})
