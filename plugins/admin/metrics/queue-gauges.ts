import { Gauge, type Registry } from 'prom-client'
import type { QueueSummary } from '../../../core/index.js'

/** A scrape every second must not turn into a queue scan every second. */
const CACHE_MS = 2000

/**
 * Queue size by state and the oldest message's age, read from the queue's summary when scraped (at
 * most every 2 s). A failing summary leaves the last values and is reported through `onError`.
 */
export function registerQueueGauges(registry: Registry, readSummary: () => Promise<QueueSummary>, onError: (err: unknown) => void): void {
  let cached: { at: number; summary: Promise<QueueSummary | undefined> } | undefined
  const summary = (): Promise<QueueSummary | undefined> => {
    const now = Date.now()
    if (cached && now - cached.at < CACHE_MS) return cached.summary
    const p = Promise.resolve()
      .then(readSummary)
      .catch((err: unknown) => {
        onError(err)
        return undefined
      })
    cached = { at: now, summary: p }
    return p
  }

  new Gauge({
    name: 'relay_queue_messages',
    help: 'Messages in the queue (with at least one recipient not yet final).',
    registers: [registry],
    async collect() {
      const s = await summary()
      if (s) this.set(s.messages)
    },
  })
  new Gauge({
    name: 'relay_queue_recipients',
    help: 'Recipients still to deliver, by state (held: recipients of held messages).',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const s = await summary()
      if (!s) return
      for (const state of ['queued', 'deferred', 'held'] as const) this.set({ state }, s.recipients[state])
    },
  })
  new Gauge({
    name: 'relay_queue_oldest_message_age_seconds',
    help: 'Age of the oldest message still in the queue; 0 when the queue is empty.',
    registers: [registry],
    async collect() {
      const s = await summary()
      if (!s) return
      this.set(s.oldestReceivedAt ? Math.max(0, (Date.now() - s.oldestReceivedAt) / 1000) : 0)
    },
  })
}
