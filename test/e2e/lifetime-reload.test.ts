// delivery.maxQueueLifetime holds for queued mail, not only for mail accepted after it was set
// (Postfix's maximal_queue_lifetime counts from each message's arrival): changed by a reload, or
// between two runs, every queued message expires that long after it arrived.
import fs from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCliAsync } from '../harness/relay.js'
import { startParkedRelay, type ParkedRelay } from '../harness/parked-relay.js'

let fixture: ParkedRelay
beforeAll(async () => {
  fixture = await startParkedRelay(undefined, false)
}, 60_000)
afterAll(() => fixture?.close())

const cli = (...args: string[]) => runCliAsync([...args, '--config', fixture.relay.configFile])
const show = async (id: string) => JSON.parse((await cli('queue', 'show', id, '--json')).stdout) as { receivedAt: number; expiresAt: number }
const setLifetime = (value: string) => {
  const c = JSON.parse(fs.readFileSync(fixture.relay.configFile, 'utf8')) as { delivery: Record<string, unknown> }
  fs.writeFileSync(fixture.relay.configFile, JSON.stringify({ ...c, delivery: { ...c.delivery, maxQueueLifetime: value } }, null, 2))
}

describe('delivery.maxQueueLifetime changed while mail waits', () => {
  it('a reload that lengthens or shortens it moves the expiry of queued messages; shortened past their age, they bounce at the next attempt', async () => {
    const { relay } = fixture
    const [a, b] = [await fixture.submit('life-a@park.test'), await fixture.submit('life-b@park.test')]
    const before = await show(a)
    expect(before.expiresAt - before.receivedAt).toBe(5 * 86_400_000) // the default, 5 days

    setLifetime('30d')
    const lengthened = await cli('reload')
    expect(lengthened.code, lengthened.stderr).toBe(0)
    await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('delivery.maxQueueLifetime: 2 queued message(s) now expire 30d after they arrived'), 10_000)
    for (const id of [a, b]) {
      const m = await show(id)
      expect(m.expiresAt - m.receivedAt).toBe(30 * 86_400_000)
    }

    setLifetime('1s')
    expect((await cli('reload')).code).toBe(0)
    await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('delivery.maxQueueLifetime: 2 queued message(s) now expire 1s after'), 10_000)
    // Both are older than a second: their last try is due at once (their next retry was an hour
    // away), and it finds them expired; no flush needed.
    for (const id of [a, b]) {
      const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.queueId === id, 10_000)
      expect(bounced.response).toMatch(/^4\.4\.7 Message expired/)
    }
  }, 60_000)
})
