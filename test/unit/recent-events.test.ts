// The admin plugin's recent events: delivery attempts come from the queue's attempt log (paged,
// ties at a page's end neither lost nor shown twice), the rest from memory, merged newest first.
import { describe, expect, it } from 'vitest'
import type { RecentAttempt } from '../../core/index.js'
import { RecentEvents, recentEvents } from '../../plugins/admin/recent-events.js'

/** A queue whose attempt log is `log` (newest first), answering as the queues do. */
function queueOf(log: RecentAttempt[]) {
  const calls: { limit: number; before?: number }[] = []
  return {
    calls,
    recentAttempts: async (o: { limit: number; before?: number }) => {
      calls.push(o)
      return log.filter((a) => o.before === undefined || a.at < o.before).slice(0, o.limit)
    },
  }
}

const attempt = (at: number, n: number, state: RecentAttempt['state'] = 'deferred', domain = 'dest.test'): RecentAttempt => ({
  at, queueId: `Q${n}`, sender: 'a@sender.test', recipient: `r${n}@${domain}`, state, response: `reply ${n}`,
})

describe('recent events', () => {
  it('merges the queue attempts with what memory holds, newest first; delivery events are not kept in memory', async () => {
    const memory = new RecentEvents(10)
    memory.add({ at: 1500, type: 'rejected', text: '550 no' })
    memory.add({ at: 1600, type: 'delivered', text: 'kept by the queue, not here' })
    const queue = queueOf([attempt(2000, 2, 'delivered'), attempt(1000, 1)])
    const events = await recentEvents(queue, memory, { limit: 10 })
    expect(events.map((e) => [e.at, e.type])).toEqual([[2000, 'delivered'], [1500, 'rejected'], [1000, 'deferred']])
    expect(events[0]).toEqual(expect.objectContaining({ queueId: 'Q2', recipient: 'r2@dest.test', domain: 'dest.test', text: 'reply 2' }))
    expect((await recentEvents(queue, memory, { after: 1200 })).map((e) => e.at)).toEqual([2000, 1500])
    expect((await recentEvents(queue, memory, { type: 'rejected' })).map((e) => e.type)).toEqual(['rejected'])
  })

  it('pages through the log for a narrow filter without losing or repeating attempts that share a time', async () => {
    // 1200 attempts, in groups of 7 sharing a millisecond (a batch of completes); every 100th to match.
    const log = Array.from({ length: 1200 }, (_, i) => attempt(100_000 - Math.floor(i / 7), i, 'deferred', i % 100 === 0 ? 'rare.test' : 'dest.test'))
    const queue = queueOf(log)
    const events = await recentEvents(queue, new RecentEvents(), { domain: 'rare.test', limit: 50 })
    expect(events.map((e) => e.queueId)).toEqual(Array.from({ length: 12 }, (_, i) => `Q${i * 100}`))
    const all = await recentEvents(queue, new RecentEvents(), { domain: 'dest.test', limit: 5000 })
    expect(new Set(all.map((e) => e.queueId)).size).toBe(all.length)
    expect(all).toHaveLength(1188)
    // An unfiltered list reads one page of what it shows.
    queue.calls.length = 0
    expect(await recentEvents(queue, new RecentEvents(), { limit: 20 })).toHaveLength(20)
    expect(queue.calls).toEqual([{ limit: 20, before: undefined }])
  })
})
