// The queue verbs refuse an empty or malformed queue id before doing anything (an unset shell
// variable made `relay queue flush ''` flush every message), through the admin API and on the data
// directory alike; and a corrupt SQLite queue is named as such by `relay start` and the queue
// verbs, not as "[object Object]".
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { eventually, runCliAsync, startRelay, type QueueListEntry, type RelayProcess } from '../harness/relay.js'
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

  async function refusedEverywhere(id: string, before: (QueueListEntry & { heldAt?: number })[]) {
    for (const [name, args] of verbs) {
      const r = await cli(args)
      const bad = args.includes('../x') ? '../x' : ''
      expect([r.code, r.stderr, r.stdout], name).toEqual([2, `relay: not a queue id: '${bad}'\n`, ''])
    }
    // Ids on stdin are checked too: one bad one and nothing is done.
    const stdin = await cli(['queue', 'delete', '-'], `${id}\nnot/an-id\n`)
    expect([stdin.code, stdin.stderr], 'ids on stdin').toEqual([2, "relay: not a queue id: 'not/an-id'\n"])
    // Nothing happened to the message: not flushed (the same next attempt), not held, not deleted.
    expect(await entries()).toEqual(before)
    expect(fixture.delivered(before[0]!.recipients[0]!.address)).toEqual([])
  }

  it('is refused by every verb that takes ids, through the admin API; the queue is left alone', async () => {
    const id = await fixture.submit('guard@park.test')
    await eventually(async () => (await entries()).find((m) => m.id === id)?.recipients[0]?.state === 'deferred', 10_000, 'deferred')
    fixture.parked.delete('guard@park.test') // a flush would deliver it now
    const before = await entries()
    await refusedEverywhere(id, before)

    // The same on the data directory, once the relay is stopped.
    await relay.stop()
    const stopped = await entries()
    await refusedEverywhere(id, stopped)
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

    for (const verb of [['list'], ['summary'], ['show', 'AAAAAAAAAAAA']]) {
      const r = await runCliAsync(['queue', ...verb, '--config', relay.configFile])
      expect(r.code, verb.join(' ')).toBe(1)
      expect(r.stderr).toContain(`relay: ${expected}`)
      noStack(r.stderr)
    }
    expect(start.stderr + start.stdout).not.toContain('[object Object]')
  })
})
