// `relay queue list|show|flush|hold|release|delete|bounce`: through the admin API of a running relay
// (found by admin.json), and straight on the data directory once it is stopped; table and --json.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { TestReceiver } from '../harness/smtp-receiver.js'
import { BIN, eventually, runCli, runCliAsync, startRelay, tempDir, type QueueListEntry, type RelayProcess } from '../harness/relay.js'
import { startDns } from '../harness/dns-server.js'
import { startReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { messageText as text, startParkedRelay, type ParkedRelay } from '../harness/parked-relay.js'

const TOKEN = 'queue-cli-token-0123456789abcdef'
let fixture: ParkedRelay
let relay: RelayProcess
let senderRx: TestReceiver // sender.test: DSNs
let parked: Set<string> // addresses park.test answers 451 at RCPT

const cli = (...args: string[]) => runCliAsync([...args, '--config', relay.configFile])
const listJson = async () => {
  const r = (await cli('queue', 'list', '--json'))
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout) as (QueueListEntry & { heldAt?: number })[]
}
const delivered = (to: string) => fixture.delivered(to)

async function park(to: string, from = 'alice@sender.test'): Promise<string> {
  const id = await fixture.submit(to, from, `Message-ID: <${to.replace(/\W/g, '')}@sender.test>\r\n`)
  // The relay logs 'deferred' once the queue holds the result (one CLI run per poll cost ~0.7 s of CPU each).
  await relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id, 10_000)
  return id
}

beforeAll(async () => {
  fixture = await startParkedRelay(TOKEN)
  ;({ relay, senderRx, parked } = fixture)
})

afterAll(async () => {
  await fixture?.close()
})

describe('on a running relay (admin API)', () => {
  it('lists as an aligned table and as JSON, with filters', async () => {
    const a = await park('list-a@park.test')
    const b = await park('list-b@park.test', 'bob@sender.test')

    const table = (await cli('queue', 'list'))
    expect(table.code, table.stderr).toBe(0)
    const lines = table.stdout.split('\n')
    const rowA = lines.findIndex((l) => l.startsWith(a))
    const rowB = lines.findIndex((l) => l.startsWith(b))
    expect(lines[rowA]).toMatch(new RegExp(`^${a}  \\S+Z  +\\d+ bytes  from <alice@sender\\.test>  <listaparktest@sender\\.test>$`))
    expect(lines[rowA + 1]).toMatch(/^ {4}deferred {2}<list-a@park\.test> {2}attempts 1 {2}next \S+ {2}last: 451 4\.2\.0 parked, try later/)
    // Columns line up: the sender column starts at the same place on every row.
    expect(lines[rowA]!.indexOf('from <')).toBe(lines[rowB]!.indexOf('from <'))
    expect(table.stdout).toMatch(/\n2 messages in queue\n$/)

    const entries = (await listJson())
    expect(entries.find((m) => m.id === a)).toMatchObject({ id: a, sender: 'alice@sender.test', messageId: '<listaparktest@sender.test>', recipients: [{ address: 'list-a@park.test', state: 'deferred', attempts: 1 }] })
    const ids = async (...args: string[]) => {
      const r = (await cli('queue', 'list', '--json', ...args))
      expect(r.code, r.stderr).toBe(0)
      return (JSON.parse(r.stdout) as QueueListEntry[]).map((m) => m.id)
    }
    expect(await ids('--sender', 'bob@sender.test')).toEqual([b])
    expect(await ids('--state', 'deferred')).toEqual([a, b])
    expect(await ids('--state', 'held')).toEqual([])
    expect(await ids('--domain', 'park.test', '--limit', '1')).toEqual([a])
    expect(await ids('--domain', 'nowhere.test')).toEqual([])

    const bad = (await cli('queue', 'list', '--state', 'bogus'))
    expect([bad.code, bad.stderr]).toEqual([2, "relay: --state: expected queued, deferred or held (got 'bogus')\n"])
    expect((await cli('queue', 'list', '--limit', 'x')).code).toBe(2)

    for (const id of [a, b]) expect((await cli('queue', 'delete', id)).code).toBe(0)
    expect((await cli('queue', 'list')).stdout).toBe('queue is empty\n')
  })

  it('shows one message (text and --json); an unknown id exits 1', async () => {
    const id = await park('show@park.test')
    const r = (await cli('queue', 'show', id))
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain(`Queue ID:    ${id}\n`)
    expect(r.stdout).toContain('Sender:      <alice@sender.test>\n')
    expect(r.stdout).toMatch(/\n {2}show@park\.test +deferred +1 +\S+ +451 4\.2\.0 parked, try later\n/)
    expect(r.stdout).toMatch(/\nHistory:\n {2}\S+ +show@park\.test +deferred +\S+ +451 4\.2\.0 parked/)
    expect(r.stdout).toContain('\nHeaders:\n')
    expect(r.stdout).toContain('  Subject: parked for show@park.test\n')

    const j = (await cli('queue', 'show', id, '--json'))
    expect(j.code).toBe(0)
    const detail = JSON.parse(j.stdout)
    expect(detail).toMatchObject({ id, sender: 'alice@sender.test', recipients: [{ address: 'show@park.test', state: 'deferred', history: [{ state: 'deferred' }] }] })

    const missing = (await cli('queue', 'show', '0000000000000000'))
    expect([missing.code, missing.stderr]).toEqual([1, 'relay: no message 0000000000000000 in the queue\n'])
    expect((await cli('queue', 'delete', id)).code).toBe(0)
  })

  it('hold keeps a message from a flush; release delivers it at once (the relay did it: its log says so)', async () => {
    const id = await park('hold@park.test')
    const h = (await cli('queue', 'hold', id))
    expect([h.code, h.stdout, h.stderr]).toEqual([0, `held ${id}\n`, ''])
    await relay.waitForLog((l) => l.msg === 'message held by the administrator' && l.queueId === id)
    const held = JSON.parse((await cli('queue', 'list', '--json', '--state', 'held')).stdout) as { id: string; heldAt?: number }[]
    expect(held.map((m) => m.id)).toEqual([id])
    expect((await cli('queue', 'list')).stdout).toMatch(new RegExp(`^${id} .*  HELD since \\S+$`, 'm'))

    parked.delete('hold@park.test')
    // A flush of a held message names the hold, not "0 recipients: due now".
    const f = (await cli('queue', 'flush', '--id', id))
    expect([f.code, f.stdout, f.stderr]).toEqual([1, '', `relay: message ${id} is held: nothing flushed (release it to deliver it)\n`])
    await new Promise((r) => setTimeout(r, 1500))
    expect(delivered('hold@park.test')).toHaveLength(0)

    const rel = (await cli('queue', 'release', id))
    expect([rel.code, rel.stdout]).toEqual([0, `released ${id}\n`])
    await eventually(() => delivered('hold@park.test').length === 1, 5000, 'released message delivered')
    const again = (await cli('queue', 'release', id))
    expect(again.code).toBe(1)
  })

  it('flush --domain, delete and bounce (a DSN reaches the sender); --json prints the results', async () => {
    const f = await park('flush@park.test')
    parked.delete('flush@park.test')
    const fr = (await cli('queue', 'flush', '--domain', 'park.test', '--json'))
    expect(fr.code, fr.stderr).toBe(0)
    expect(JSON.parse(fr.stdout)).toEqual({ flushed: 1 })
    await eventually(() => delivered('flush@park.test').length === 1, 5000, 'flushed message delivered')
    expect((await listJson()).map((m) => m.id)).not.toContain(f)

    const d = await park('delete@park.test')
    expect((await cli('queue', 'delete', d, '--json')).stdout).toBe(JSON.stringify({ id: d, deleted: true }, null, 2) + '\n')
    expect((await cli('queue', 'show', d)).code).toBe(1)
    expect((await cli('queue', 'delete', d)).code).toBe(1)

    const b = await park('bounce@park.test')
    const br = (await cli('queue', 'bounce', b))
    expect(br.code, br.stderr).toBe(0)
    expect(br.stdout).toMatch(new RegExp(`^bounced ${b}: bounce@park\\.test; DSN to the sender queued as \\w+\\n$`))
    const dsn = await eventually(() => senderRx.messages.find((m) => text(m).includes('Final-Recipient: rfc822; bounce@park.test')), 10_000, 'DSN at the sender')
    expect(text(dsn)).toContain('5.0.0 Bounced by the administrator')
    expect((await cli('queue', 'show', b)).code).toBe(1)
  })

  it('text from outside (a Message-ID with terminal escapes) cannot drive the terminal: control characters print as ?, --json keeps them escaped', async () => {
    const messageId = '<x\x1b]0;PWNED\x07\x1b[2J\x7f@sender.test>'
    const id = await fixture.submit('escapes@park.test', 'alice@sender.test', `Message-ID: ${messageId}\r\n`)
    await relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id, 10_000)
    try {
      for (const args of [['queue', 'list'], ['queue', 'show', id]]) {
        const r = await cli(...args)
        expect(r.code, r.stderr).toBe(0)
        expect(r.stdout).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/)
        expect(r.stdout).toContain('<x?]0;PWNED??[2J?@sender.test>')
      }
      const listed = await cli('queue', 'list', '--json')
      expect(listed.stdout).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/)
      expect((JSON.parse(listed.stdout) as QueueListEntry[]).find((m) => m.id === id)?.messageId).toBe(messageId)
    } finally {
      expect((await cli('queue', 'delete', id)).code).toBe(0)
    }
  })

  it('takes the token from admin.json, else RELAY_ADMIN_TOKEN; a missing or wrong token exits 1 and says so; a bad config exits 2', async () => {
    // A config of its own for the CLI: same data directory, no admin plugin (so no token in it).
    const dir = tempDir()
    const file = path.join(dir, 'cli.config.json')
    fs.writeFileSync(file, JSON.stringify({ dataDir: relay.dataDir }))
    const run = (env: Record<string, string>) => {
      const r = spawnSync(process.execPath, [BIN, 'queue', 'list', '--json', '--config', file], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } })
      return { code: r.status, stdout: r.stdout, stderr: r.stderr }
    }
    // The running relay's admin.json names the token its listener requires: nothing else is needed.
    const fromFile = run({ RELAY_ADMIN_TOKEN: '' })
    expect(fromFile.code, fromFile.stderr).toBe(0)
    expect(JSON.parse(fromFile.stdout)).toEqual([])
    // A file without the token (as an older relay wrote it): RELAY_ADMIN_TOKEN.
    const adminFile = path.join(relay.dataDir, 'admin.json')
    const original = fs.readFileSync(adminFile, 'utf8')
    const { token, ...withoutToken } = JSON.parse(original) as { token?: string }
    expect(token).toBe(TOKEN)
    fs.writeFileSync(adminFile, JSON.stringify(withoutToken))
    try {
      const ok = run({ RELAY_ADMIN_TOKEN: TOKEN })
      expect(ok.code, ok.stderr).toBe(0)
      expect(JSON.parse(ok.stdout)).toEqual([])
      const wrong = run({ RELAY_ADMIN_TOKEN: 'wrong-token-0123456789abcdef' })
      expect(wrong.code).toBe(1)
      expect(wrong.stderr).toMatch(/refused the token/)
      const none = run({ RELAY_ADMIN_TOKEN: '' })
      expect(none.code).toBe(1)
      expect(none.stderr).toMatch(/bearer token is required.*RELAY_ADMIN_TOKEN/)
    } finally {
      fs.writeFileSync(adminFile, original, { mode: 0o600 })
    }

    fs.writeFileSync(file, JSON.stringify({ dataDir: relay.dataDir, delivery: { retry: { base: 'soon' } } }))
    const bad = runCli(['queue', 'list', '--config', file])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/delivery\.retry\.base/)
  })
})

describe('on a stopped data directory', () => {
  it('lists, shows, holds, releases, deletes, bounces and flushes without the relay; a restart then acts on it', async () => {
    const [keep, gone, bounce, release] = await Promise.all(['keep', 'gone', 'stopped-bounce', 'release'].map((name) => park(`${name}@park.test`)))
    expect((await cli('queue', 'hold', release)).code).toBe(0)
    expect(await relay.stop()).toBe(0)
    expect(fs.existsSync(path.join(relay.dataDir, 'admin.json'))).toBe(false)

    const table = (await cli('queue', 'list'))
    expect(table.code, table.stderr).toBe(0)
    expect(table.stdout).toMatch(/\n4 messages in queue\n$/)
    expect(table.stdout).toMatch(new RegExp(`^${release} .*HELD since`, 'm'))
    const shown = (await cli('queue', 'show', keep, '--json'))
    expect(shown.code).toBe(0)
    expect(JSON.parse(shown.stdout)).toMatchObject({ id: keep, recipients: [{ address: 'keep@park.test', state: 'deferred' }] })

    const h = (await cli('queue', 'hold', keep))
    expect([h.code, h.stdout, h.stderr]).toEqual([0, `held ${keep}\n`, ''])
    expect((JSON.parse((await cli('queue', 'list', '--json', '--state', 'held')).stdout) as { id: string }[]).map((m) => m.id).sort()).toEqual([keep, release].sort())
    expect((await cli('queue', 'release', release)).stdout).toBe(`released ${release}\n`)
    expect((await cli('queue', 'delete', gone)).stdout).toBe(`deleted ${gone}\n`)
    expect((await cli('queue', 'show', gone)).code).toBe(1)
    const b = (await cli('queue', 'bounce', bounce, '--json'))
    expect(b.code, b.stderr).toBe(0)
    const bounced = JSON.parse(b.stdout) as { id: string; bounced: string[]; dsn: string }
    expect(bounced).toEqual({ id: bounce, bounced: ['stopped-bounce@park.test'], dsn: expect.any(String) })
    // The DSN waits in the queue, from the null sender to the original sender.
    const entries = (await listJson())
    expect(entries.find((m) => m.id === bounced.dsn)).toMatchObject({ sender: '', recipients: [{ address: 'alice@sender.test', state: 'queued' }] })
    expect(entries.map((m) => m.id).sort()).toEqual([keep, release, bounced.dsn].sort())
    const f = (await cli('queue', 'flush', '--domain', 'park.test'))
    expect(f.code, f.stderr).toBe(0)
    expect(f.stdout).toMatch(/^flushed \d+ recipients? for park\.test: due now\n$/)
    expect((await cli('queue', 'release', '0000000000000000')).code).toBe(1)

    // Started again: the released message and the DSN go out; the held one stays.
    parked.clear()
    await relay.restart()
    await eventually(() => delivered('release@park.test').length === 1, 10_000, 'released message delivered after restart')
    await eventually(() => senderRx.messages.some((m) => text(m).includes('Final-Recipient: rfc822; stopped-bounce@park.test')), 10_000, 'DSN delivered after restart')
    await new Promise((r) => setTimeout(r, 500))
    expect(delivered('keep@park.test')).toHaveLength(0)
    expect((await cli('queue', 'release', keep)).code).toBe(0)
    await eventually(() => delivered('keep@park.test').length === 1, 5000, 'held message delivered once released')
    expect((await listJson())).toEqual([])
  }, 90_000)
})

describe('on a running relay without an admin listener (the verbs work on the queue itself)', () => {
  let own: ParkedRelay
  beforeAll(async () => {
    own = await startParkedRelay(undefined, false)
  })
  afterAll(async () => {
    await own?.close()
  })
  const ownCli = (...args: string[]) => runCliAsync([...args, '--config', own.relay.configFile])

  it('flush, release and bounce are acted on at once (the CLI tells the relay to scan: SIGUSR2), not at its next idle scan 30 s later', async () => {
    const flushed = await own.submit('flush-direct@park.test')
    const held = await own.submit('release-direct@park.test')
    const bounced = await own.submit('bounce-direct@park.test')
    await Promise.all([flushed, held, bounced].map((id) => own.relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id, 10_000)))
    expect(fs.existsSync(path.join(own.relay.dataDir, 'admin.json'))).toBe(false)
    // Wait out the scan that follows the deferrals: what comes now is the CLI's doing.
    await new Promise((r) => setTimeout(r, 1000))

    own.parked.clear()
    expect((await ownCli('queue', 'hold', held)).code).toBe(0)
    const f = await ownCli('queue', 'flush', '--id', flushed)
    expect([f.code, f.stderr]).toEqual([0, ''])
    await eventually(() => own.delivered('flush-direct@park.test').length === 1, 5000, 'flushed message delivered within 5 s')
    const rel = await ownCli('queue', 'release', held)
    expect([rel.code, rel.stdout, rel.stderr]).toEqual([0, `released ${held}\n`, ''])
    await eventually(() => own.delivered('release-direct@park.test').length === 1, 5000, 'released message delivered within 5 s')
    const b = await ownCli('queue', 'bounce', bounced)
    expect(b.code, b.stderr).toBe(0)
    await eventually(() => own.senderRx.messages.some((m) => text(m).includes('Final-Recipient: rfc822; bounce-direct@park.test')), 5000, 'DSN delivered within 5 s')
    await own.relay.waitForLog((l) => l.msg === 'SIGUSR2: scanning the queue')
  })

  it('a relay that does not say it handles SIGUSR2 (no relay.signals: one from before it, which the signal would kill) is not sent it; the CLI says when the change is picked up', async () => {
    own.parked.add('older@park.test')
    const id = await own.submit('older@park.test')
    await own.relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id)
    fs.rmSync(path.join(own.relay.dataDir, 'relay.signals'))
    const scans = own.relay.logs.filter((l) => l.msg === 'SIGUSR2: scanning the queue').length
    const f = await ownCli('queue', 'flush', '--id', id)
    expect(f.code, f.stderr).toBe(0)
    expect(f.stderr).toBe(`note: relay ${own.relay.child.pid} runs without an admin listener; it picks this up at its next queue scan (within 30 s)\n`)
    await new Promise((r) => setTimeout(r, 500))
    expect(own.relay.exited()).toBe(false)
    expect(own.relay.logs.filter((l) => l.msg === 'SIGUSR2: scanning the queue')).toHaveLength(scans)

    // A bulk verb says it once for the command, not once per message it changed.
    const more = await Promise.all(['older-a@park.test', 'older-b@park.test', 'older-c@park.test'].map((a) => (own.parked.add(a), own.submit(a))))
    await Promise.all(more.map((m) => own.relay.waitForLog((l) => l.event === 'deferred' && l.queueId === m, 10_000)))
    for (const m of more) expect((await ownCli('queue', 'hold', m)).code).toBe(0)
    const bulk = await ownCli('queue', 'release', 'ALL')
    expect(bulk.code, bulk.stderr).toBe(0)
    expect(bulk.stdout).toBe('released 3 of 4 messages\n')
    expect(bulk.stderr).toBe(`note: relay ${own.relay.child.pid} runs without an admin listener; it picks this up at its next queue scan (within 30 s)\n`)
    expect(own.relay.exited()).toBe(false)
  })

  it('a bulk verb asks a relay that handles SIGUSR2 to scan once, after its last change', async () => {
    // The test before took the relay's relay.signals away; it is what the relay wrote at start.
    fs.writeFileSync(path.join(own.relay.dataDir, 'relay.signals'), `${own.relay.child.pid} USR2\n`)
    const ids = await Promise.all(['bulk-a@park.test', 'bulk-b@park.test', 'bulk-c@park.test'].map((a) => (own.parked.add(a), own.submit(a))))
    await Promise.all(ids.map((m) => own.relay.waitForLog((l) => l.event === 'deferred' && l.queueId === m, 10_000)))
    const scans = () => own.relay.logs.filter((l) => l.msg === 'SIGUSR2: scanning the queue').length
    for (const m of ids) expect((await ownCli('queue', 'hold', m)).code).toBe(0)
    const before = scans()
    for (const a of ['bulk-a@park.test', 'bulk-b@park.test', 'bulk-c@park.test']) own.parked.delete(a)
    const bulk = await ownCli('queue', 'release', '--domain', 'park.test', '--state', 'held')
    expect([bulk.code, bulk.stderr]).toEqual([0, ''])
    await eventually(() => ['bulk-a@park.test', 'bulk-b@park.test', 'bulk-c@park.test'].every((a) => own.delivered(a).length === 1), 5000, 'the three released messages delivered within 5 s')
    await eventually(() => scans() > before, 5000, "the relay's 'SIGUSR2: scanning the queue' line")
    await new Promise((r) => setTimeout(r, 500))
    expect(scans() - before).toBe(1)
  })
})

describe('output to a reader that stops early', () => {
  it('`relay <verb> | true` (the reader gone before a byte is written): exit 0, nothing on stderr, for every printing verb', async () => {
    const id = await park('pipe@park.test')
    const verbs = [
      ['queue', 'list'],
      ['queue', 'list', '--json'],
      ['queue', 'summary'],
      ['queue', 'show', id],
      ['queue', 'cat', id],
      ['stats'],
      ['suppression', 'list', '--json'],
      ['config', 'show'],
    ]
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
    for (const args of verbs) {
      const line = [process.execPath, BIN, ...args, '--config', relay.configFile].map(q).join(' ')
      const r = spawnSync('bash', ['-c', `${line} | true; echo "exit=\${PIPESTATUS[0]}"`], { encoding: 'utf8', timeout: 30_000 })
      expect([args.join(' '), r.stdout, r.stderr]).toEqual([args.join(' '), 'exit=0\n', ''])
    }
    expect((await cli('queue', 'delete', id)).code).toBe(0)
  }, 120_000)
})

describe('overlong input', () => {
  it('a filter value too long for the admin listener says so (not a bare HTTP status); an overlong id is not echoed whole', async () => {
    const long = await cli('queue', 'list', '--sender', `${'ü'.repeat(3000)}@x.test`)
    expect(long.code).toBe(1)
    expect(long.stderr).toMatch(/^relay: the admin listener refused the request as too long \(HTTP 431\): a filter value \(--sender, --domain\) is too long\n$/)
    const id = await cli('queue', 'hold', 'A'.repeat(5000))
    expect([id.code, id.stderr]).toEqual([2, `relay: not a queue id: '${'A'.repeat(64)}…'\n`])
  })
})

describe('hold of a message being delivered', () => {
  it('says which recipients the attempt under way may still deliver (it is not stopped); no attempt after it', async () => {
    const rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true, stall: 'data' } })
    const dns = await startDns({ 'slow.test': { A: ['127.0.0.2'] } })
    const r = await startRelay({
      config: { dns: { servers: [dns.server], timeout: '1s' }, delivery: { port: rx.port, commandTimeout: '2s', dataDoneTimeout: '2s', retry: { base: '1s', factor: 1, max: '1s' } }, plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]] },
    })
    try {
      const sent = await sendMail(r.port, { from: 'a@sender.test', to: ['x@slow.test', 'y@slow.test'], data: 'Subject: slow\r\n\r\nbody\r\n' })
      const id = /queued as (\S+)/.exec(sent.lastReply)![1]!
      // The message is at the receiver, which never answers the final dot: the attempt is under way.
      await eventually(() => rx.refused.length === 1 || undefined, 10_000, 'the message at the stalling receiver')
      const h = await runCliAsync(['queue', 'hold', id, '--config', r.configFile])
      expect([h.code, h.stdout, h.stderr]).toEqual([0, `held ${id}; in flight, not stopped by the hold (the attempt under way may still deliver them): x@slow.test, y@slow.test\n`, ''])
      // The attempt runs out (commandTimeout 2 s), the retry would be 1 s later: held, it does not come.
      await r.waitForLog((l) => l.event === 'deferred' && l.queueId === id, 10_000)
      await new Promise((resolve) => setTimeout(resolve, 2500))
      expect(rx.refused).toHaveLength(1)
      expect(rx.connections).toBe(1)
      // Not in flight any more: a second hold says only that.
      const again = await runCliAsync(['queue', 'hold', id, '--config', r.configFile])
      expect([again.code, again.stdout]).toEqual([0, `held ${id}\n`])
    } finally {
      await r.stop()
      await Promise.all([rx.close(), dns.close()])
    }
  }, 40_000)
})
