// webhook: POSTs delivery events (accepted, delivered, deferred, bounced, suppressed) in signed
// batches to an HTTP endpoint. Events wait in an outbox in the data directory until the endpoint
// answers 2xx, so an endpoint that is down, or a relay restart, loses none. Options: README.md.
import crypto from 'node:crypto'
import path from 'node:path'
import { definePlugin, makeDirs, type PluginContext, type SessionInfo } from '../../core/index.js'
import { optionsSchema, type WebhookEventType, type WebhookOptions } from './options.js'
import { DROP_REASONS, Outbox, type DropReason } from './outbox.js'
import { Sender, safeUrl } from './sender.js'
import { adoptOrphans, entries, whenRunning, type Entry } from './adopt.js'

/**
 * Each url's own outbox: two entries (two endpoints, each with its own `events`) shared one file,
 * and whichever sender held its lease sent every event to its endpoint. An outbox no entry uses any
 * more (its url changed) is taken over by the entries that send its events (adopt.ts).
 */
export function outboxFile(url: string): string {
  return `webhook-outbox-${crypto.createHash('sha256').update(url).digest('hex').slice(0, 16)}.sqlite`
}

/** Open outboxes by file, of every entry and generation: the gauges add up each file once. */
const openOutboxes = new Map<Outbox, string>()
function total(read: (o: Outbox) => number): number {
  const files = new Set<string>()
  let n = 0
  for (const [o, file] of openOutboxes) {
    if (!o.open || files.has(file)) continue
    files.add(file)
    n += read(o)
  }
  if (!files.size) throw new Error('no webhook outbox open')
  return n
}
const DROP_HELP: Record<DropReason, string> = {
  rejected: 'Webhook events dropped unsent because the endpoint refused their batch for good (a 4xx but 408, 425, 429), maxRejects times.',
  overflow: 'Webhook events dropped unsent, oldest first, to keep the outbox within maxEvents.',
  expired: 'Webhook events dropped unsent because they waited longer than maxAge.',
  orphaned: 'Webhook events dropped unsent because their outbox was no entry\'s any more (its url changed) and no entry sends their type.',
}
/** How long shutdown waits for the last flush. */
const LAST_FLUSH_MS = 2000

interface State extends Entry {
  events: Set<WebhookEventType>
  /** At start: taking over the outboxes no entry uses, once the relay runs. */
  adopting?: { cancel(): void }
}

/** The session as sent: who connected and how. SessionInfo carries no credentials. */
const session = (s: SessionInfo) => ({ ...s, listener: { ...s.listener } })

/** Writes the event to the outbox; the sender takes it from there. */
function record(ctx: PluginContext<WebhookOptions, State | undefined>, type: WebhookEventType, data: object): void {
  const st = ctx.state
  // Closed: this generation was torn down (reload, shutdown) while the event was on its way.
  if (!st || !st.outbox.open || !st.events.has(type)) return
  try {
    st.outbox.add(type, data)
  } catch (err) {
    ctx.log.error({ err, type }, 'webhook: writing an event to the outbox failed; it is not sent')
    return
  }
  st.sender.added()
}

export default definePlugin<WebhookOptions, State | undefined>({
  name: 'webhook',
  options: optionsSchema,

  setup({ options, dataDir, log, mode, relay }) {
    // check-config: the options are valid; opening the outbox would send what a running relay left in it.
    if (mode === 'check') return undefined
    makeDirs(dataDir)
    const file = path.join(dataDir, outboxFile(options.url))
    const outbox = new Outbox(file)
    outbox.url = options.url
    openOutboxes.set(outbox, file)
    const sender = new Sender(outbox, options, log)
    const waiting = outbox.count()
    log.info({ url: safeUrl(options.url), events: options.events, waiting }, 'webhook: sending events')
    sender.start()
    // The backlog on the admin plugin's /metrics (relay_plugin_webhook_outbox_events): an endpoint
    // that stays down shows as a number that keeps growing. Summed over every entry's outbox; none
    // open (torn down) leaves the gauge out.
    relay?.registerGauge('webhook_outbox_events', 'Webhook events in the outboxes, waiting for the endpoint to answer 2xx.', () => total((o) => o.count()))
    // Events dropped unsent since the outbox was made, by why (each drop also has a warn log line):
    // relay_plugin_webhook_dropped_events_rejected_total (the endpoint refused them for good, a 4xx),
    // _overflow_total (beyond maxEvents), _expired_total (older than maxAge).
    for (const reason of DROP_REASONS) {
      relay?.registerGauge(`webhook_dropped_events_${reason}_total`, DROP_HELP[reason], () => total((o) => o.dropped(reason)))
    }
    const state: State = { dataDir, file, outbox, sender, events: new Set(options.events) }
    entries.push(state)
    // Outboxes of urls no entry has any more (changed while the relay was stopped): once every entry is set up.
    if (mode === 'start' && relay) state.adopting = whenRunning(() => relay.readiness(), () => adoptOrphans(dataDir, log))
    return state
  },

  async teardown({ state }) {
    if (!state) return
    state.adopting?.cancel()
    const i = entries.indexOf(state)
    if (i >= 0) entries.splice(i, 1)
    try {
      await state.sender.stop(LAST_FLUSH_MS)
    } finally {
      state.outbox.close()
      openOutboxes.delete(state.outbox)
    }
  },

  hooks: {
    // The old generation has closed its outboxes: those of urls no entry has any more are taken over.
    reloaded(_e, ctx) {
      if (ctx.state) adoptOrphans(ctx.state.dataDir, ctx.log)
    },
    accepted(e, ctx) {
      record(ctx, 'accepted', { queueId: e.queueId, messageId: e.messageId, sender: e.sender, recipients: e.recipients, size: e.size, session: session(e.session) })
    },
    delivered(e, ctx) {
      record(ctx, 'delivered', { ...e })
    },
    deferred(e, ctx) {
      record(ctx, 'deferred', { ...e })
    },
    bounced(e, ctx) {
      record(ctx, 'bounced', { ...e })
    },
    suppressed(e, ctx) {
      record(ctx, 'suppressed', { recipient: e.recipient, reason: e.reason, source: e.source, session: session(e.session) })
    },
  },
})
