// `relay queue backup <dir>` of a running relay's queue with deferred mail (a large message with a
// spool file among it), `relay queue restore <dir>` into a NEW data directory, and a relay started
// on that directory delivers the mail. Restore refuses a data directory that is not empty; the
// PostgreSQL queue is pointed to pg_dump.
import fs from 'node:fs'
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BIN, eventually, runCli, runCliAsync, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { sendMail } from '../harness/smtp-client.js'

let rx: TestReceiver
let dns: TestDns
/** While true, park.test answers 451 at RCPT: the mail stays deferred. */
let parking = true
const relays: RelayProcess[] = []

const config = () => ({
  dns: { servers: [dns.server], timeout: '1s' },
  delivery: { port: rx.port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s', delayWarning: false },
  plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
})

beforeAll(async () => {
  rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true, reply: { rcpt: () => (parking ? { code: 451, message: '4.2.0 parked, try later' } : undefined) } } })
  dns = await startDns({ 'park.test': { A: ['127.0.0.2'] } })
})

afterAll(async () => {
  for (const r of relays) await r.stop()
  await Promise.all([dns, rx].map((x) => x?.close()))
})

async function submit(relay: RelayProcess, to: string, body: string): Promise<string> {
  const r = await sendMail(relay.port, { from: 'alice@sender.test', to: [to], data: `From: <alice@sender.test>\r\nTo: <${to}>\r\nSubject: backup ${to}\r\n\r\n${body}` })
  const id = /^250 .*queued as (\w+)/.exec(r.lastReply)?.[1]
  if (!id) throw new Error(`not queued: ${r.lastReply}`)
  // Its first attempt deferred (logged once the queue has it so): the listings below show it.
  await relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id, 10_000)
  return id
}

describe('relay queue backup and restore', () => {
  it('backs up a running queue, restores it into a new data directory, and a relay there delivers it', async () => {
    const a = await startRelay({ config: config() })
    relays.push(a)
    const large = 'x'.repeat(998) + '\r\n'
    const small = await submit(a, 'small@park.test', 'a small body\r\n')
    const big = await submit(a, 'big@park.test', large.repeat(200))
    expect(fs.readdirSync(path.join(a.dataDir, 'spool'))).toHaveLength(1)

    const backup = path.join(tempDir(), 'backup')
    const b = runCli(['queue', 'backup', backup, '--config', a.configFile])
    expect([b.code, b.stderr]).toEqual([0, ''])
    expect(b.stdout).toBe(`backed up 2 messages (1 spool file) from ${a.dataDir} to ${backup}\n`)
    expect(fs.readdirSync(backup).sort()).toEqual(['backup.json', 'queue.sqlite', 'spool'])
    // Into a directory that is not empty: refused.
    const again = runCli(['queue', 'backup', backup, '--config', a.configFile])
    expect([again.code, again.stderr]).toEqual([1, `relay: the backup directory ${backup} is not empty\n`])
    // A backup that fails part way (its files may not grow past 64 KB, as on a full disk) says where and why, and leaves nothing behind: run again, it works.
    const cramped = path.join(tempDir(), 'cramped')
    const limited = spawnSync('prlimit', ['--fsize=65536', process.execPath, BIN, 'queue', 'backup', cramped, '--config', a.configFile], { encoding: 'utf8' })
    expect(limited.status, limited.stderr).toBe(1)
    expect(limited.stderr).toMatch(new RegExp(`^relay: backup into ${cramped.replace(/[.]/g, '\\.')} failed: .+ \\((SQLITE_\\w+|EFBIG)\\); what it had written there is removed, the queue is as it was\n$`))
    expect(fs.existsSync(cramped)).toBe(false)
    const retried = runCli(['queue', 'backup', cramped, '--config', a.configFile])
    expect([retried.code, retried.stderr]).toEqual([0, ''])
    expect(await a.stop()).toBe(0)

    // A new machine: a new directory, the same config otherwise.
    const dir = tempDir()
    const dataDir = path.join(dir, 'data')
    // Into the old data directory (refused) and into the new one: unrelated, side by side.
    const [refused, restored] = await Promise.all([
      runCliAsync(['queue', 'restore', backup, '--config', a.configFile]),
      runCliAsync(['queue', 'restore', backup, '--config', a.configFile, '--data-dir', dataDir]),
    ])
    expect([refused.code, refused.stderr]).toEqual([1, `relay: the data directory to restore into ${a.dataDir} is not empty\n`])
    expect([restored.code, restored.stderr]).toEqual([0, ''])
    expect(restored.stdout).toBe(`restored 2 messages (1 spool file) into ${dataDir}; start the relay on it to deliver them\n`)
    // Queued mail is nobody else's to read, in the backup or in the restored queue, whatever the umask.
    const others = (p: string) => fs.statSync(p).mode & 0o007
    for (const f of fs.readdirSync(backup).filter((f) => f.startsWith('queue.sqlite'))) expect(others(path.join(backup, f)), f).toBe(0)
    for (const p of [dataDir, path.join(dataDir, 'spool'), ...fs.readdirSync(dataDir).filter((f) => f.startsWith('queue.sqlite')).map((f) => path.join(dataDir, f))]) expect(others(p), p).toBe(0)

    // Their next attempt is an hour away: made due before the start (on the stopped directory).
    const cfg = path.join(dir, 'flush.config.json')
    fs.writeFileSync(cfg, JSON.stringify({ dataDir }))
    const listed = JSON.parse(runCli(['queue', 'list', '--json', '--config', cfg]).stdout) as { id: string; recipients: { state: string }[] }[]
    expect(listed.map((m) => [m.id, m.recipients[0]!.state]).sort()).toEqual([[small, 'deferred'], [big, 'deferred']].sort())
    const flushed = runCli(['queue', 'flush', '--config', cfg])
    expect([flushed.code, flushed.stdout]).toEqual([0, 'flushed 2 recipients: due now\n'])
    parking = false
    const b2 = await startRelay({ dir, config: config() })
    relays.push(b2)
    await eventually(() => rx.messages.length === 2, 10_000, 'both messages delivered from the restored queue')
    for (const id of [small, big]) await b2.waitForLog((l) => l.event === 'delivered' && l.queueId === id, 10_000)
    expect(rx.messages.map((m) => m.to[0]).sort()).toEqual(['big@park.test', 'small@park.test'])
    const bigOne = rx.messages.find((m) => m.to.includes('big@park.test'))!
    expect(bigOne.raw.toString('latin1')).toContain(large.repeat(200))
    await eventually(async () => (await b2.listQueue()).length === 0, 10_000, 'restored queue empty')

    expect(fs.readdirSync(path.join(dataDir, 'spool'))).toEqual([])
  }, 120_000)

  it('the PostgreSQL queue: use pg_dump (exit 1)', async () => {
    const dir = tempDir()
    const file = path.join(dir, 'pg.config.json')
    fs.writeFileSync(file, JSON.stringify({ dataDir: path.join(dir, 'data'), queue: { driver: 'postgres', url: 'postgres://127.0.0.1:5432/test' } }))
    const verbs = ['backup', 'restore']
    const results = await Promise.all(verbs.map((verb) => runCliAsync(['queue', verb, path.join(dir, 'b'), '--config', file])))
    for (const [i, r] of results.entries()) {
      expect(r.code, verbs[i]).toBe(1)
      expect(r.stderr).toMatch(/use pg_dump/)
    }
  }, 120_000)
})
