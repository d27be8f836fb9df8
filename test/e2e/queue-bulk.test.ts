// postsuper-style bulk verbs (`relay queue hold|release|flush|delete|bounce` by --domain, --sender,
// --state, --older-than, ALL, ids on stdin; counts and --dry-run), `relay queue cat` (postcat -q) and
// `relay queue summary --age` (qshape): through a running relay's admin API, and on a stopped data
// directory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { BIN, eventually, runCli, runCliAsync, type QueueListEntry, type RelayProcess } from '../harness/relay.js'
import { messageText as text, startParkedRelay, type ParkedRelay } from '../harness/parked-relay.js'

const TOKEN = 'queue-bulk-token-0123456789abcdef'
let fixture: ParkedRelay
let relay: RelayProcess

const cli = (args: string[], input?: string) => runCli([...args, '--config', relay.configFile], { input })
const listJson = (...args: string[]) => {
  const r = cli(['queue', 'list', '--json', ...args])
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout) as (QueueListEntry & { heldAt?: number })[]
}
const ids = (...args: string[]) => listJson(...args).map((m) => m.id)
/** The CLI with its stdout on a pseudo-terminal (script(1)); what the terminal was sent, as latin1. */
const onTerminal = (args: string[]) => {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
  const r = spawnSync('script', ['-qec', [process.execPath, BIN, ...args].map(quote).join(' '), '/dev/null'], { encoding: 'latin1', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] })
  return { code: r.status, stdout: r.stdout }
}
/**
 * Not in a delivery attempt right now (a release makes a message due at once; a bounce of one in
 * flight is refused as a conflict). Polled without blocking: the receivers run in this process.
 */
const settled = async (id: string) => {
  const r = await runCliAsync(['queue', 'show', id, '--json', '--config', relay.configFile])
  return r.code === 0 && (JSON.parse(r.stdout) as { recipients: { leased: boolean }[] }).recipients.every((x) => !x.leased)
}

async function park(to: string, from = 'alice@sender.test'): Promise<string> {
  const id = await fixture.submit(to, from)
  await eventually(() => listJson().find((m) => m.id === id)?.recipients[0]?.state === 'deferred', 10_000, `${to} deferred`)
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

    const dry = cli(['queue', 'hold', '--sender', 'bob@sender.test', '--dry-run'])
    expect([dry.code, dry.stdout, dry.stderr]).toEqual([0, `${c}\nwould hold 1 message (dry run: nothing done)\n`, ''])
    expect(ids('--state', 'held')).toEqual([])

    const held = cli(['queue', 'hold', '--domain', 'park.test', '--json'])
    expect(held.code, held.stderr).toBe(0)
    expect(JSON.parse(held.stdout)).toEqual({ action: 'hold', dryRun: false, matched: [a, b, c], done: 3 })
    expect(ids('--state', 'held')).toEqual([a, b, c])

    const released = cli(['queue', 'release', 'ALL'])
    expect([released.code, released.stdout]).toEqual([0, 'released 3 of 3 messages\n'])
    expect(ids('--state', 'held')).toEqual([])

    const stdin = cli(['queue', 'hold', '-'], `${a}\n${c}\n0000000000000000\n`)
    expect([stdin.code, stdin.stdout, stdin.stderr]).toEqual([0, 'held 2 of 2 messages\n', ''])
    expect(ids('--state', 'held')).toEqual([a, c])

    // Nothing here is an hour old; everything is older than 0 seconds.
    expect(cli(['queue', 'release', '--older-than', '1h']).stdout).toBe('released 0 of 0 messages\n')
    const old = cli(['queue', 'release', '--older-than', '0s', '--state', 'held', '--json'])
    expect(JSON.parse(old.stdout)).toEqual({ action: 'release', dryRun: false, matched: [a, c], done: 2 })

    // A filter must say what it selects; a bad value is refused.
    const none = cli(['queue', 'hold'])
    expect(none.code).toBe(2)
    expect(none.stderr).toMatch(/give a queue id, ALL/)
    expect(cli(['queue', 'hold', '--older-than', 'soon']).code).toBe(2)
    expect(cli(['queue', 'hold', '--state', 'bogus']).code).toBe(2)

    // Flush by domain with a count; a dry run of flush ALL lists all.
    const flushDry = cli(['queue', 'flush', 'ALL', '--dry-run', '--json'])
    expect(JSON.parse(flushDry.stdout)).toEqual({ action: 'flush', dryRun: true, matched: [a, b, c], done: 0 })

    // Bounce by sender: a DSN reaches bob; delete the rest by state (once the releases' retries are over).
    for (const id of [a, b, c]) await eventually(() => settled(id), 20_000, `${id} not in flight`)
    const bounced = cli(['queue', 'bounce', '--sender', 'bob@sender.test'])
    expect([bounced.code, bounced.stdout]).toEqual([0, 'bounced 1 of 1 message\n'])
    await eventually(() => fixture.senderRx.messages.find((m) => text(m).includes('Final-Recipient: rfc822; bulk-c@park.test')), 10_000, 'DSN to bob')
    const deleted = cli(['queue', 'delete', '--state', 'deferred'])
    expect([deleted.code, deleted.stdout]).toEqual([0, 'deleted 2 of 2 messages\n'])
    expect(listJson()).toEqual([])
  }, 120_000)

  it('cat prints the message as queued (--header-only, --body-only); summary --age counts by domain and age', async () => {
    const id = await park('cat@park.test')
    const cat = cli(['queue', 'cat', id])
    expect(cat.code, cat.stderr).toBe(0)
    expect(cat.stdout).toMatch(/^Received: from /)
    expect(cat.stdout).toContain('\r\nSubject: parked for cat@park.test\r\n')
    expect(cat.stdout).toMatch(/\r\n\r\nHello\.\r\n$/)
    const head = cli(['queue', 'cat', id, '--header-only']).stdout
    expect(head).toContain('Subject: parked for cat@park.test\r\n')
    expect(head).not.toContain('Hello.')
    expect(cli(['queue', 'cat', id, '--body-only']).stdout).toBe('Hello.\r\n')
    const missing = cli(['queue', 'cat', '0000000000000000'])
    expect([missing.code, missing.stderr]).toEqual([1, 'relay: no message 0000000000000000 in the queue\n'])

    await park('cat2@park.test')
    const shape = cli(['queue', 'summary', '--age'])
    expect(shape.code, shape.stderr).toBe(0)
    const lines = shape.stdout.trimEnd().split('\n')
    expect(lines[0]).toMatch(/^ +T +5 +10 +20 +40 +80 +160 +320 +640 +1280 +1280\+$/)
    expect(lines[1]).toMatch(/^TOTAL +2 +2( +0){9}$/)
    expect(lines[2]).toMatch(/^park\.test +2 +2( +0){9}$/)
    const j = JSON.parse(cli(['queue', 'summary', '--age', '--json']).stdout) as { bucketsMinutes: number[]; rows: { domain: string; total: number; counts: number[] }[] }
    expect(j.bucketsMinutes).toEqual([5, 10, 20, 40, 80, 160, 320, 640, 1280])
    expect(j.rows[1]).toEqual({ domain: 'park.test', total: 2, counts: [2, 0, 0, 0, 0, 0, 0, 0, 0, 0] })
    // The plain summary is unchanged.
    expect(cli(['queue', 'summary']).stdout).toMatch(/^2 messages; recipients: 0 queued, 2 deferred, 0 held\n/)
  }, 120_000)

  it('cat on a terminal cannot be driven by the message: control characters print as ?; piped (| formail) or with --raw it is the message as queued', async () => {
    const hostile = '\x1b]0;PWNED\x07\x1b[2J\u009b31m'
    const id = await fixture.submit('cat-tty@park.test', 'alice@sender.test', `X-Hostile: ${hostile}\r\n`)
    await eventually(() => listJson().find((m) => m.id === id)?.recipients[0]?.state === 'deferred', 10_000, 'deferred')
    try {
      // Piped: the bytes as queued, escapes and all (what `| formail` needs).
      expect(cli(['queue', 'cat', id]).stdout).toContain(`X-Hostile: ${hostile}\r\n`)
      // On a terminal (a real pseudo-terminal, through script(1)): nothing that can drive it.
      const tty = onTerminal(['queue', 'cat', id, '--config', relay.configFile])
      expect(tty.code, tty.stdout).toBe(0)
      expect(tty.stdout).toContain('Subject: parked for cat-tty@park.test')
      expect(tty.stdout).toContain('X-Hostile: ?]0;PWNED??[2J')
      expect(tty.stdout).not.toMatch(/[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]/)
      for (const part of ['--header-only', '--body-only']) expect(onTerminal(['queue', 'cat', id, part, '--config', relay.configFile]).stdout).not.toContain('\x1b')
      // --raw: the operator asked for the bytes.
      expect(onTerminal(['queue', 'cat', id, '--raw', '--config', relay.configFile]).stdout).toContain('\x1b]0;PWNED\x07')
    } finally {
      expect(cli(['queue', 'delete', id]).code).toBe(0)
    }
  }, 120_000)
})

describe('on a stopped data directory', () => {
  it('bulk verbs, cat and summary --age work on the queue itself', async () => {
    const before = ids()
    expect(before).toHaveLength(2)
    expect(await relay.stop()).toBe(0)

    const dry = cli(['queue', 'delete', '--domain', 'park.test', '--dry-run'])
    expect([dry.code, dry.stdout]).toEqual([0, `${before.join('\n')}\nwould delete 2 messages (dry run: nothing done)\n`])
    const hold = cli(['queue', 'hold', before[0]!, '--state', 'deferred', '--json'])
    expect(JSON.parse(hold.stdout)).toEqual({ action: 'hold', dryRun: false, matched: [before[0]], done: 1 })
    expect(cli(['queue', 'cat', before[0]!]).stdout).toContain('Subject: parked for cat@park.test')
    expect(cli(['queue', 'summary', '--age']).stdout.split('\n')[1]).toMatch(/^TOTAL +2 /)
    const del = cli(['queue', 'delete', 'ALL'])
    expect([del.code, del.stdout]).toEqual([0, 'deleted 2 of 2 messages\n'])
    expect(ids()).toEqual([])
  }, 120_000)
})
