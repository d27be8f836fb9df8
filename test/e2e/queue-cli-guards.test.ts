// The queue verbs refuse an empty or malformed queue id before doing anything (an unset shell
// variable made `relay queue flush ''` flush every message), through the admin API and on the data
// directory alike; and a corrupt SQLite queue is named as such by `relay start` and the queue
// verbs, not as "[object Object]".
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import net from 'node:net'
import Database from 'better-sqlite3'
import { startDns } from '../harness/dns-server.js'
import { sendMail } from '../harness/smtp-client.js'
import os from 'node:os'
import path from 'node:path'
import { runCliAsync, startRelay, type QueueListEntry, type RelayProcess } from '../harness/relay.js'
import { adminQueue } from '../harness/admin-queue.js'
import { startParkedRelay, type ParkedRelay } from '../harness/parked-relay.js'

const TOKEN = 'queue-guards-token-0123456789abcdef'
const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .+:\d+:\d+\)?$/m)

describe('an empty or malformed queue id', () => {
  let fixture: ParkedRelay
  let relay: RelayProcess
  const cli = (args: string[], input?: string) => runCliAsync([...args, '--config', relay.configFile], { input })
  const entries = async () => {
    const r = await cli(['queue', 'list', '--json'])
    expect(r.code, r.stderr).toBe(0)
    return JSON.parse(r.stdout) as (QueueListEntry & { heldAt?: number })[]
  }
  /** The queue as the running relay's admin API lists it (what `relay queue list --json` shows through it). */
  const apiEntries = () => adminQueue(relay)

  beforeAll(async () => {
    fixture = await startParkedRelay(TOKEN)
    relay = fixture.relay
  })
  afterAll(async () => {
    await fixture?.close()
  })

  const verbs: [string, string[], string?][] = [
    ["flush ''", ['queue', 'flush', '']],
    ["flush --id ''", ['queue', 'flush', '--id', '']],
    ["show ''", ['queue', 'show', '']],
    ["cat ''", ['queue', 'cat', '']],
    ...['hold', 'release', 'delete', 'bounce'].map((v): [string, string[]] => [`${v} ''`, ['queue', v, '']]),
    ["hold '' --dry-run", ['queue', 'hold', '', '--dry-run']],
    ["delete '' --domain park.test", ['queue', 'delete', '', '--domain', 'park.test']],
    ['delete ../x', ['queue', 'delete', '../x']],
  ]

  /** `list`: the queue as it is now (the same way `before` was read). */
  async function refusedEverywhere(id: string, before: unknown[], list: () => Promise<unknown[]>) {
    // Each is refused without touching the queue (checked below): they run side by side.
    const [stdin, ...results] = await Promise.all([cli(['queue', 'delete', '-'], `${id}\nnot/an-id\n`), ...verbs.map(([, args]) => cli(args))])
    verbs.forEach(([name, args], i) => {
      const r = results[i]!
      const bad = args.includes('../x') ? '../x' : ''
      expect([r.code, r.stderr, r.stdout], name).toEqual([2, `relay: not a queue id: '${bad}'\n`, ''])
    })
    // Ids on stdin are checked too: one bad one and nothing is done.
    expect([stdin.code, stdin.stderr], 'ids on stdin').toEqual([2, "relay: not a queue id: 'not/an-id'\n"])
    // Nothing happened to the message: not flushed (the same next attempt), not held, not deleted.
    expect(await list()).toEqual(before)
    expect(before).toHaveLength(1)
    expect(fixture.delivered('guard@park.test')).toEqual([])
  }

  it('is refused by every verb that takes ids, through the admin API; the queue is left alone', async () => {
    const id = await fixture.submit('guard@park.test')
    await relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id, 10_000)
    fixture.parked.delete('guard@park.test') // a flush would deliver it now
    const before = await apiEntries()
    expect(before).toMatchObject([{ id, recipients: [{ address: 'guard@park.test', state: 'deferred' }] }])
    await refusedEverywhere(id, before, apiEntries)

    // The same on the data directory, once the relay is stopped.
    await relay.stop()
    const stopped = await entries()
    expect(stopped).toMatchObject([{ id, recipients: [{ address: 'guard@park.test', state: 'deferred' }] }])
    await refusedEverywhere(id, stopped, entries)
  })
})

describe('a corrupt SQLite queue', () => {
  let relay: RelayProcess

  beforeAll(async () => {
    relay = await startRelay({})
    await relay.stop()
  })

  it.each([
    ['truncated', 'SQLITE_CORRUPT', (file: string) => fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2))],
    ['not a database', 'SQLITE_NOTADB', (file: string) => fs.writeFileSync(file, Buffer.alloc(8192, 'garbage!'))],
  ])('%s: relay start and the queue verbs name the file and the way out', async (_, code, damage) => {
    const file = path.join(relay.dataDir, 'queue.sqlite')
    const keep = `${file}.keep`
    if (!fs.existsSync(keep)) fs.copyFileSync(file, keep)
    fs.copyFileSync(keep, file)
    for (const f of [`${file}-wal`, `${file}-shm`]) fs.rmSync(f, { force: true })
    damage(file)
    const expected = `queue database ${file} is corrupt (${code}`

    const start = await runCliAsync(['start', '--config', relay.configFile])
    expect(start.code).toBe(1)
    expect(start.stderr).toMatch(new RegExp(`^relay: cannot start: ${expected.replace(/[.()/]/g, '\\$&')}: .*\\): restore it from a backup \\(relay queue restore`, 'm'))
    const fatal = start.stdout.split('\n').find((l) => l.includes('"cannot start"'))
    expect(fatal).toContain(expected)
    expect(fatal).toContain(`"code":"${code}"`)

    const verbs = [['list'], ['summary'], ['show', 'AAAAAAAAAAAA']]
    const results = await Promise.all(verbs.map((verb) => runCliAsync(['queue', ...verb, '--config', relay.configFile])))
    for (const [i, verb] of verbs.entries()) {
      const r = results[i]!
      expect(r.code, verb.join(' ')).toBe(1)
      expect(r.stderr).toContain(`relay: ${expected}`)
      noStack(r.stderr)
    }
    expect(start.stderr + start.stdout).not.toContain('[object Object]')
  })
})

describe('a SQLite queue damaged where only a delivery scan reads it', () => {
  it('once the damage is found, new mail is refused with 451 4.3.0 naming the file, not acknowledged into a queue that cannot give it back', async () => {
    const closed = net.createServer().listen(0, '127.0.0.1')
    await new Promise((r) => closed.once('listening', r))
    const closedPort = (closed.address() as net.AddressInfo).port
    await new Promise((r) => closed.close(r))
    const zones = await startDns({ 'down.test': { A: ['127.0.0.1'] } })
    const relay = await startRelay({
      config: {
        dns: { servers: [zones.server] },
        // Every attempt is refused at connect: the recipients stay queued, due again within a second.
        delivery: { port: closedPort, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '1s', delayWarning: false },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
    try {
      for (let m = 0; m < 3; m++) {
        const to = Array.from({ length: 100 }, (_, i) => `r${m}-${i}@down.test`)
        expect((await sendMail(relay.port, { from: 'a@sender.test', to, data: `Subject: m${m}\r\n\r\nx\r\n` })).lastReply).toMatch(/^250 2\.0\.0 /)
      }
      await relay.waitForLog((l) => l.event === 'deferred', 15_000)
      expect(await relay.stop()).toBe(0)
      // The first leaf page of the recipients table (old rows: a new message's go to the last one) overwritten.
      const file = path.join(relay.dataDir, 'queue.sqlite')
      const db = new Database(file)
      const pageSize = db.pragma('page_size', { simple: true }) as number
      const leaves = db.prepare(`SELECT pageno FROM dbstat WHERE name = 'recipients' AND pagetype = 'leaf' ORDER BY pageno`).all() as { pageno: number }[]
      db.close()
      expect(leaves.length).toBeGreaterThan(2)
      const fd = fs.openSync(file, 'r+')
      fs.writeSync(fd, Buffer.alloc(pageSize, 'garbage!'), 0, pageSize, (leaves[0]!.pageno - 1) * pageSize)
      fs.closeSync(fd)

      await relay.restart()
      const found = await relay.waitForLog((l) => l.msg === 'queue scan failed', 15_000)
      expect(JSON.stringify(found)).toContain(`queue database ${file} is corrupt (SQLITE_CORRUPT`)
      const r = await sendMail(relay.port, { from: 'a@sender.test', to: ['late@down.test'], data: 'Subject: late\r\n\r\nx\r\n' }).catch((err: { response?: string }) => ({ lastReply: err.response ?? String(err) }))
      expect(r.lastReply).toMatch(/^451 4\.3\.0 /)
      const failed = await relay.waitForLog((l) => l.msg === 'queueing message failed', 5000)
      expect(JSON.stringify(failed)).toContain(`queue database ${file} is corrupt`)
    } finally {
      await relay.stop()
      await zones.close()
    }
  })
})

describe("a SQLite queue whose -wal file is lost after a kill -9", () => {
  it.each([
    ['missing', (wal: string) => fs.rmSync(wal)],
    ['damaged', (wal: string) => {
      const fd = fs.openSync(wal, 'r+')
      fs.writeSync(fd, Buffer.alloc(32), 0, 32, 0)
      fs.closeSync(fd)
    }],
  ])('%s: relay start refuses (exit 1) naming it, instead of starting on an empty queue; with the file back the mail is there', async (how, damage) => {
    const zones = await startDns({ 'down.test': { A: ['127.0.0.1'] } })
    const relay = await startRelay({
      config: {
        dns: { servers: [zones.server] },
        delivery: { port: 9, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '1s', delayWarning: false },
        plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
      },
    })
    try {
      expect((await sendMail(relay.port, { from: 'a@sender.test', to: ['kept@down.test'], data: 'Subject: kept\r\n\r\nx\r\n' })).lastReply).toMatch(/^250 2\.0\.0 /)
      await relay.waitForLog((l) => l.event === 'deferred', 15_000)
      await relay.kill9()
      const file = path.join(relay.dataDir, 'queue.sqlite')
      const wal = `${file}-wal`
      fs.copyFileSync(wal, `${wal}.keep`)
      damage(wal)
      fs.rmSync(`${file}-shm`, { force: true })

      const start = await runCliAsync(['start', '--config', relay.configFile])
      expect(start.code, start.stderr).toBe(1)
      expect(start.stderr).toContain(`relay: cannot start: queue database ${file} holds no queue (no tables), and its write-ahead log ${wal} is ${how}: the queue was there. Put the -wal file back`)
      // The queue verbs say the same, not "queue is empty".
      const listed = await runCliAsync(['queue', 'list', '--json', '--config', relay.configFile])
      expect(listed.code).toBe(1)
      expect(listed.stderr).toContain(`relay: queue database ${file} holds no queue (no tables)`)
      noStack(listed.stderr)

      // The operator puts it back: the message is there, and goes on waiting for its next attempt.
      fs.copyFileSync(`${wal}.keep`, wal)
      fs.rmSync(`${file}-shm`, { force: true })
      await relay.restart()
      expect((await relay.listQueue()).map((m) => m.recipients.map((r) => r.address))).toEqual([['kept@down.test']])
    } finally {
      await relay.stop()
      await zones.close()
    }
  })
})

describe('a config whose dataDir holds no queue', () => {
  const configWith = (dataDir: string) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-no-queue-'))
    const file = path.join(dir, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, dataDir) }))
    return { dir, file }
  }

  it('a misspelt (missing) data directory: the verbs answer empty but say on stderr that no relay has run there, and a write says it made a new queue', async () => {
    const { dir, file } = configWith('typo-data')
    for (const verb of [['queue', 'list'], ['queue', 'summary'], ['stats']]) {
      const r = await runCliAsync([...verb, '--config', file])
      expect(r.code, r.stderr).toBe(0)
      expect(r.stderr).toContain(`note: no queue in ${path.join(dir, 'typo-data')} (config dataDir): no relay has run with this data directory yet`)
    }
    expect(fs.existsSync(path.join(dir, 'typo-data'))).toBe(false)
    const added = await runCliAsync(['suppression', 'add', 'x@example.test', '--config', file])
    expect(added.code, added.stderr).toBe(0)
    expect(added.stderr).toContain(`note: there was no queue in ${path.join(dir, 'typo-data')} (config dataDir): a new one is made there`)
  })

  it('a data directory that is a file: exit 1 naming it, for reading and writing verbs alike', async () => {
    const { dir, file } = configWith('data')
    fs.writeFileSync(path.join(dir, 'data'), 'not a directory')
    for (const verb of [['queue', 'list'], ['stats'], ['suppression', 'list'], ['suppression', 'add', 'x@example.test']]) {
      const r = await runCliAsync([...verb, '--config', file])
      expect(r.code, `${verb.join(' ')}: ${r.stdout}`).toBe(1)
      expect(r.stderr).toContain(`relay: ${path.join(dir, 'data')} (config dataDir) is not a directory`)
      noStack(r.stderr)
    }
  })
})
