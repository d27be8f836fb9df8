// postsuper-style bulk verbs (`relay queue hold|release|flush|delete|bounce` by --domain, --sender,
// --state, --older-than, ALL, ids on stdin; counts and --dry-run), `relay queue cat` (postcat -q) and
// `relay queue summary --age` (qshape): through a running relay's admin API, and on a stopped data
// directory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { BIN, eventually, runCliAsync, type QueueListEntry, type RelayProcess } from '../harness/relay.js'
import { adminGet, adminQueue } from '../harness/admin-queue.js'
import { messageText as text, startParkedRelay, type ParkedRelay } from '../harness/parked-relay.js'

const TOKEN = 'queue-bulk-token-0123456789abcdef'
let fixture: ParkedRelay
let relay: RelayProcess

// The CLI without blocking this process: the receivers the relay delivers to run in it.
const cli = (args: string[], input?: string) => runCliAsync([...args, '--config', relay.configFile], { input })
const listJson = async (...args: string[]) => {
  const r = await cli(['queue', 'list', '--json', ...args])
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout) as (QueueListEntry & { heldAt?: number })[]
}
const ids = async (...args: string[]) => (await listJson(...args)).map((m) => m.id)
/** The CLI with its stdout on a pseudo-terminal (script(1)); what the terminal was sent, as latin1. */
const onTerminal = (args: string[]): Promise<{ code: number | null; stdout: string }> => {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', [process.execPath, BIN, ...args].map(quote).join(' '), '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    child.stdout!.setEncoding('latin1').on('data', (d: string) => (stdout += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout })
    })
  })
}
/** The ids the admin API lists with `query` (what `relay queue list` prints through it), in its order. */
const apiIds = async (query: string) => (await adminQueue(relay, query)).map((m) => m.id)
/**
 * Not in a delivery attempt right now (a release makes a message due at once; a bounce of one in
 * flight is refused as a conflict). Read from the admin API: this waits, it is not what is tested.
 */
const settled = async (id: string) => (await adminGet<{ recipients: { leased: boolean }[] }>(relay, `/api/queue/${id}`)).recipients.every((x) => !x.leased)

/** Parked: the relay's log says its first attempt was deferred (the queue has it as such by then). */
const deferred = (id: string) => relay.waitForLog((l) => l.event === 'deferred' && l.queueId === id, 10_000)

async function park(to: string, from = 'alice@sender.test'): Promise<string> {
  const id = await fixture.submit(to, from)
  await deferred(id)
  return id
}

beforeAll(async () => {
  fixture = await startParkedRelay(TOKEN)
  relay = fixture.relay
})

afterAll(async () => {
  await fixture?.close()
})

describe('on a running relay (admin API)', () => {
  it('selects by sender, domain, state, age, ALL and ids on stdin; --dry-run changes nothing; counts are printed', async () => {
    const a = await park('bulk-a@park.test')
    const b = await park('bulk-b@park.test')
    const c = await park('bulk-c@park.test', 'bob@sender.test')

    const dry = await cli(['queue', 'hold', '--sender', 'bob@sender.test', '--dry-run'])
    expect([dry.code, dry.stdout, dry.stderr]).toEqual([0, `${c}\nwould hold 1 message (dry run: nothing done)\n`, ''])
    // What each verb did is read from the admin API (one CLI listing below shows the same).
    expect(await apiIds('state=held')).toEqual([])

    const held = await cli(['queue', 'hold', '--domain', 'park.test', '--json'])
    expect(held.code, held.stderr).toBe(0)
    expect(JSON.parse(held.stdout)).toEqual({ action: 'hold', dryRun: false, matched: [a, b, c], done: 3, skipped: [] })
    expect(await ids('--state', 'held')).toEqual([a, b, c])

    const released = await cli(['queue', 'release', 'ALL'])
    expect([released.code, released.stdout]).toEqual([0, 'released 3 of 3 messages\n'])
    expect(await apiIds('state=held')).toEqual([])

    const stdin = await cli(['queue', 'hold', '-'], `${a}\n${c}\n0000000000000000\n`)
    // The id that is not in the queue is named, and the exit code says so (as for one id); the others are done.
    expect([stdin.code, stdin.stdout, stdin.stderr]).toEqual([1, 'held 2 of 2 messages\n', 'relay: no message 0000000000000000 in the queue\n'])
    expect(await apiIds('state=held')).toEqual([a, c])
    const filtered = await cli(['queue', 'release', '-', '--sender', 'nobody@sender.test'], `${a}\n`)
    expect([filtered.code, filtered.stdout, filtered.stderr]).toEqual([1, 'released 0 of 0 messages\n', `relay: no message ${a} in the queue that the filter selects\n`])

    // Nothing here is an hour old; everything is older than 0 seconds.
    const [young, old] = await Promise.all([cli(['queue', 'release', '--older-than', '1h']), cli(['queue', 'release', '--older-than', '0s', '--state', 'held', '--json'])])
    expect(young.stdout).toBe('released 0 of 0 messages\n')
    expect(JSON.parse(old.stdout)).toEqual({ action: 'release', dryRun: false, matched: [a, c], done: 2, skipped: [] })

    // A filter must say what it selects; a bad value is refused. (None of these changes anything:
    // they run side by side, with the dry run below.)
    // Flush by domain with a count; a dry run of flush ALL lists all.
    const [none, soon, bogus, flushDry] = await Promise.all([
      cli(['queue', 'hold']),
      cli(['queue', 'hold', '--older-than', 'soon']),
      cli(['queue', 'hold', '--state', 'bogus']),
      cli(['queue', 'flush', 'ALL', '--dry-run', '--json']),
    ])
    expect(none.code).toBe(2)
    expect(none.stderr).toMatch(/give a queue id, ALL/)
    expect(soon.code).toBe(2)
    expect(bogus.code).toBe(2)
    expect(JSON.parse(flushDry.stdout)).toEqual({ action: 'flush', dryRun: true, matched: [a, b, c], done: 0, skipped: [] })

    // Bounce by sender: a DSN reaches bob; delete the rest by state (once the releases' retries are over).
    for (const id of [a, b, c]) await eventually(() => settled(id), 20_000, `${id} not in flight`)
    const bounced = await cli(['queue', 'bounce', '--sender', 'bob@sender.test'])
    expect([bounced.code, bounced.stdout]).toEqual([0, 'bounced 1 of 1 message\n'])
    await eventually(() => fixture.senderRx.messages.find((m) => text(m).includes('Final-Recipient: rfc822; bulk-c@park.test')), 10_000, 'DSN to bob')
    const deleted = await cli(['queue', 'delete', '--state', 'deferred'])
    expect([deleted.code, deleted.stdout]).toEqual([0, 'deleted 2 of 2 messages\n'])
    expect(await adminQueue(relay)).toEqual([])
  }, 120_000)

  it('cat prints the message as queued (--header-only, --body-only); summary --age counts by domain and age', async () => {
    const id = await fixture.submit('cat@park.test')
    const id2 = await fixture.submit('cat2@park.test')
    await Promise.all([deferred(id), deferred(id2)])
    // All reads of a queue that does not change meanwhile: side by side.
    const [cat, header, body, missing, shape, shapeJson, summary] = await Promise.all([
      cli(['queue', 'cat', id]),
      cli(['queue', 'cat', id, '--header-only']),
      cli(['queue', 'cat', id, '--body-only']),
      cli(['queue', 'cat', '0000000000000000']),
      cli(['queue', 'summary', '--age']),
      cli(['queue', 'summary', '--age', '--json']),
      cli(['queue', 'summary']),
    ])
    expect(cat.code, cat.stderr).toBe(0)
    expect(cat.stdout).toMatch(/^Received: from /)
    expect(cat.stdout).toContain('\r\nSubject: parked for cat@park.test\r\n')
    expect(cat.stdout).toMatch(/\r\n\r\nHello\.\r\n$/)
    const head = header.stdout
    expect(head).toContain('Subject: parked for cat@park.test\r\n')
    expect(head).not.toContain('Hello.')
    expect(body.stdout).toBe('Hello.\r\n')
    expect([missing.code, missing.stderr]).toEqual([1, 'relay: no message 0000000000000000 in the queue\n'])

    expect(shape.code, shape.stderr).toBe(0)
    const lines = shape.stdout.trimEnd().split('\n')
    expect(lines[0]).toMatch(/^ +T +5 +10 +20 +40 +80 +160 +320 +640 +1280 +1280\+$/)
    expect(lines[1]).toMatch(/^TOTAL +2 +2( +0){9}$/)
    expect(lines[2]).toMatch(/^park\.test +2 +2( +0){9}$/)
    const j = JSON.parse(shapeJson.stdout) as { bucketsMinutes: number[]; rows: { domain: string; total: number; counts: number[] }[] }
    expect(j.bucketsMinutes).toEqual([5, 10, 20, 40, 80, 160, 320, 640, 1280])
    expect(j.rows[1]).toEqual({ domain: 'park.test', total: 2, counts: [2, 0, 0, 0, 0, 0, 0, 0, 0, 0] })
    // The plain summary is unchanged.
    expect(summary.stdout).toMatch(/^2 messages; recipients: 0 queued, 2 deferred, 0 held\n/)
  }, 120_000)

  it('cat on a terminal cannot be driven by the message: control characters print as ?; piped (| formail) or with --raw it is the message as queued', async () => {
    const hostile = '\x1b]0;PWNED\x07\x1b[2J\u009b31m'
    const id = await fixture.submit('cat-tty@park.test', 'alice@sender.test', `X-Hostile: ${hostile}\r\n`)
    await deferred(id)
    try {
      const [piped, tty, header, body, raw] = await Promise.all([
        cli(['queue', 'cat', id]),
        onTerminal(['queue', 'cat', id, '--config', relay.configFile]),
        onTerminal(['queue', 'cat', id, '--header-only', '--config', relay.configFile]),
        onTerminal(['queue', 'cat', id, '--body-only', '--config', relay.configFile]),
        onTerminal(['queue', 'cat', id, '--raw', '--config', relay.configFile]),
      ])
      // Piped: the bytes as queued, escapes and all (what `| formail` needs).
      expect(piped.stdout).toContain(`X-Hostile: ${hostile}\r\n`)
      // On a terminal (a real pseudo-terminal, through script(1)): nothing that can drive it.
      expect(tty.code, tty.stdout).toBe(0)
      expect(tty.stdout).toContain('Subject: parked for cat-tty@park.test')
      expect(tty.stdout).toContain('X-Hostile: ?]0;PWNED??[2J')
      expect(tty.stdout).not.toMatch(/[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]/)
      for (const part of [header, body]) expect(part.stdout).not.toContain('\x1b')
      // --raw: the operator asked for the bytes.
      expect(raw.stdout).toContain('\x1b]0;PWNED\x07')
    } finally {
      expect((await cli(['queue', 'delete', id])).code).toBe(0)
    }
  }, 120_000)
})

describe('on a stopped data directory', () => {
  it('bulk verbs, cat and summary --age work on the queue itself', async () => {
    const before = await apiIds('')
    expect(before).toHaveLength(2)
    expect(await relay.stop()).toBe(0)

    const [dry, cat] = await Promise.all([cli(['queue', 'delete', '--domain', 'park.test', '--dry-run']), cli(['queue', 'cat', before[0]!])])
    expect([dry.code, dry.stdout]).toEqual([0, `${before.join('\n')}\nwould delete 2 messages (dry run: nothing done)\n`])
    expect(cat.stdout).toContain('Subject: parked for cat@park.test')
    const hold = await cli(['queue', 'hold', before[0]!, '--state', 'deferred', '--json'])
    expect(JSON.parse(hold.stdout)).toEqual({ action: 'hold', dryRun: false, matched: [before[0]], done: 1, skipped: [] })
    expect((await cli(['queue', 'summary', '--age'])).stdout.split('\n')[1]).toMatch(/^TOTAL +2 /)
    const del = await cli(['queue', 'delete', 'ALL'])
    expect([del.code, del.stdout]).toEqual([0, 'deleted 2 of 2 messages\n'])
    expect(await ids()).toEqual([])
  }, 120_000)
})
