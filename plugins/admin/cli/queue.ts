// `relay queue list|show|flush|hold|release|delete|bounce|summary` (bulk forms: queue-bulk.ts; cat
// and summary --age: queue-cat.ts; backup and restore: queue-backup.ts): through the admin API of the
// running relay (admin.json), else on the queue itself (env.openQueue: a stopped data directory, or
// a PostgreSQL queue). Exit codes: 0 ok, 1 not found or failed, 2 bad config (a ConfigError) or usage (commander).
import type { CommandEnv, QueueEntry, QueueFilter, QueueOperations, RelayConfig } from '../../../core/index.js'
import { AdminUnreachable, adminCall, adminRaw, findAdmin, type AdminTarget } from './client.js'
import { VerbError, fail, json, out, table, time } from './output.js'

export interface QueueVerbOptions {
  config?: string
  json?: boolean
}

/** The verbs, the same whether they go through the API or straight to the queue. */
export type Backend = Pick<QueueOperations, 'list' | 'show' | 'hold' | 'release' | 'remove' | 'bounce' | 'flush' | 'summary' | 'bulk' | 'raw'> & {
  close(): Promise<void>
}

/** Said of a recipient with a final result whose DSN is not sent yet (the message stays queued for it). */
const DSN_OWED = 'DSN owed (not sent yet)'

/** A queue id as the queue takes one (core/queue/control.ts checks the same). */
const QUEUE_ID = /^[A-Za-z0-9._-]{1,64}$/

/**
 * Every id a verb is given, checked before anything is asked: an empty one (an unset shell
 * variable) must not read as "no id", which for flush means every message.
 */
export function checkQueueIds(...ids: (string | undefined)[]): void {
  for (const id of ids) if (id !== undefined && !QUEUE_ID.test(id)) throw new VerbError('bad-input', `not a queue id: '${id.length > 64 ? `${id.slice(0, 64)}…` : id}'`)
}

function apiBackend(target: AdminTarget): Backend {
  const call = <T>(method: 'GET' | 'POST', p: string, body?: unknown) => adminCall<T>(target, method, p, body)
  const id = (s: string) => encodeURIComponent(s)
  return {
    list: async (f = {}) => {
      const q = new URLSearchParams()
      if (f.state) q.set('state', f.state)
      if (f.domain) q.set('domain', f.domain)
      if (f.sender !== undefined) q.set('sender', f.sender === '' ? '<>' : f.sender)
      if (f.limit) q.set('limit', String(f.limit))
      return (await call<{ messages: QueueEntry[] }>('GET', `/api/queue?${q}`)).messages
    },
    show: (s) => call('GET', `/api/queue/${id(s)}`),
    hold: (s) => call('POST', `/api/queue/${id(s)}/hold`),
    release: (s) => call('POST', `/api/queue/${id(s)}/release`),
    remove: (s) => call('POST', `/api/queue/${id(s)}/delete`),
    bounce: (s) => call('POST', `/api/queue/${id(s)}/bounce`),
    flush: (f = {}) => call('POST', '/api/queue/flush', { ...(f.id !== undefined ? { id: f.id } : {}), ...(f.domain ? { domain: f.domain } : {}) }),
    summary: () => call('GET', '/api/queue-summary'),
    bulk: (action, filter, opts) => call('POST', '/api/queue/bulk', { action, filter, dryRun: opts?.dryRun === true }),
    raw: (s) => adminRaw(target, `/api/queue/${id(s)}/raw`),
    close: async () => undefined,
  }
}

/**
 * Runs `fn` against the running relay's API, or the queue itself when no relay answers here. A
 * SQLite data directory without a queue yet has nothing in it (and is not created by looking).
 */
export async function withBackend(env: CommandEnv, opts: QueueVerbOptions, fn: (b: Backend) => Promise<void>, empty?: () => void): Promise<void> {
  const config = (await env.loadConfig(opts.config)) as RelayConfig
  const target = findAdmin(config.dataDir, env.runningRelay)
  if (target) {
    try {
      return await fn(apiBackend(target))
    } catch (err) {
      if (!(err instanceof AdminUnreachable)) return fail(err)
      process.stderr.write(`relay: ${err.message}; working on the data directory instead\n`)
    }
  }
  let opened: Awaited<ReturnType<CommandEnv['openQueue']>>
  try {
    opened = await env.openQueue(opts.config, { create: false })
  } catch (err) {
    if ((err as { kind?: string }).kind !== 'not-found') throw err
    return empty ? empty() : fail(err)
  }
  const q = opened.queue
  const backend: Backend = {
    list: (f) => q.list(f),
    show: (s) => q.show(s),
    hold: (s) => q.hold(s),
    release: (s) => q.release(s),
    remove: (s) => q.remove(s),
    bounce: (s) => q.bounce(s),
    flush: (f) => q.flush(f),
    summary: () => q.summary(),
    bulk: (action, filter, o) => q.bulk(action, filter, o),
    raw: (s) => q.raw(s),
    close: () => opened.close(),
  }
  try {
    await fn(backend)
  } catch (err) {
    fail(err)
  } finally {
    await backend.close()
  }
}

export async function queueList(env: CommandEnv, opts: QueueVerbOptions & { state?: string; domain?: string; sender?: string; limit?: string }): Promise<void> {
  const filter: QueueFilter = {}
  if (opts.state !== undefined) {
    if (!['queued', 'deferred', 'held'].includes(opts.state)) return fail(new VerbError('bad-input', `--state: expected queued, deferred or held (got '${opts.state}')`))
    filter.state = opts.state as QueueFilter['state']
  }
  if (opts.domain) filter.domain = opts.domain.toLowerCase().replace(/\.$/, '')
  if (opts.sender !== undefined) filter.sender = opts.sender === '<>' ? '' : opts.sender.replace(/^<(.*)>$/, '$1')
  if (opts.limit !== undefined) {
    const n = Number(opts.limit)
    if (!Number.isInteger(n) || n < 1) return fail(new VerbError('bad-input', `--limit: expected a positive whole number (got '${opts.limit}')`))
    filter.limit = n
  }
  const print = (entries: QueueEntry[]) => {
    if (opts.json) return json(entries)
    if (!entries.length) return out('queue is empty')
    // One row per message (columns aligned), then one line per recipient under it. The same
    // layout as before queue control existed, so scripts reading it keep working.
    const rows = entries.map((m) => [
      m.id,
      time(m.receivedAt),
      `${m.size} bytes`,
      `from <${m.sender}>`,
      `${m.messageId ?? '(no Message-ID)'}${m.heldAt !== undefined ? `  HELD since ${time(m.heldAt)}` : ''}`,
    ])
    const sizeWidth = Math.max(...rows.map((r) => r[2]!.length))
    for (const r of rows) r[2] = r[2]!.padStart(sizeWidth)
    const lines = table(rows).trimEnd().split('\n')
    const text: string[] = []
    entries.forEach((m, i) => {
      text.push(lines[i]!)
      for (const r of m.recipients) {
        text.push(
          `    ${r.state.padEnd(9)} <${r.address}>  attempts ${r.attempts}  next ${r.delivering ? 'delivering now' : time(r.nextAttemptAt)}${r.lastResponse ? `  last: ${r.lastResponse}` : ''}${r.category ? `  category: ${r.category}` : ''}${r.dsnOwed ? `  ${DSN_OWED}` : ''}`,
        )
      }
    })
    out(text.join('\n') + `\n${entries.length} message${entries.length === 1 ? '' : 's'} in queue`)
  }
  await withBackend(env, opts, async (b) => print(await b.list(filter)), () => print([]))
}

export async function queueShow(env: CommandEnv, id: string, opts: QueueVerbOptions): Promise<void> {
  try {
    checkQueueIds(id)
  } catch (err) {
    return fail(err)
  }
  await withBackend(env, opts, async (b) => {
    const m = await b.show(id)
    if (opts.json) return json(m)
    const meta = m.meta
    const client = [meta.clientAddress, meta.clientHostname && `(${meta.clientHostname})`, meta.helo && `helo ${meta.helo}`, meta.user && `user ${meta.user}`].filter(Boolean).join(' ')
    const lines = [
      `Queue ID:    ${m.id}`,
      `Message-ID:  ${m.messageId ?? '-'}`,
      `Sender:      ${m.sender ? `<${m.sender}>` : '<> (null sender)'}`,
      `Size:        ${m.size} bytes`,
      `Received:    ${time(m.receivedAt)}${client ? ` from ${client}` : ''}${meta.listener ? ` on ${meta.listener}` : ''}`,
      `Expires:     ${time(m.expiresAt)}`,
      `Held:        ${m.heldAt !== undefined ? `since ${time(m.heldAt)}` : 'no'}`,
      ...(meta.dsnFor ? [`Bounce for:  ${meta.dsnFor}`] : []),
      '',
      'Recipients:',
    ]
    const rows = [['  ADDRESS', 'STATE', 'TRIES', 'NEXT ATTEMPT', 'LAST RESPONSE']]
    // A recipient in flight: its next attempt is no time (the lease's expiry is not one), as `queue list` says.
    for (const r of m.recipients) rows.push([`  ${r.address}`, r.state + (r.leased ? ' (delivering)' : ''), String(r.attempts), r.leased ? 'delivering now' : time(r.nextAttemptAt), r.lastResponse ?? '-'])
    lines.push(table(rows).trimEnd())
    const owed = m.recipients.filter((r) => r.dsnOwed).map((r) => r.address)
    if (owed.length) lines.push('', `DSN owed:    ${owed.join(', ')}: the report to the sender is not sent yet; it goes once nothing of the message is in flight or due (the message stays queued until then)`)
    const history = m.recipients.flatMap((r) => r.history.map((h) => ({ ...h, address: r.address }))).sort((a, b) => a.at - b.at)
    if (history.length) {
      lines.push('', 'History:')
      const h = history.map((e) => [`  ${time(e.at)}`, e.address, e.state, e.remoteHost ?? '-', e.response])
      lines.push(table(h).trimEnd())
    }
    lines.push('', 'Headers:', ...m.headers.replace(/\r?\n$/, '').split(/\r?\n/).map((l) => `  ${l}`))
    out(lines.join('\n'))
  })
}

export type QueueAction = 'hold' | 'release' | 'delete' | 'bounce'

export async function queueAction(env: CommandEnv, action: QueueAction, id: string, opts: QueueVerbOptions): Promise<void> {
  try {
    checkQueueIds(id)
  } catch (err) {
    return fail(err)
  }
  await withBackend(env, opts, async (b) => {
    if (action === 'bounce') {
      const r = await b.bounce(id)
      if (opts.json) return json(r)
      if (!r.bounced.length) return out(`${id}: no recipient left to bounce${r.dsn ? `; the DSN it owed the sender queued as ${r.dsn}` : ''}`)
      const dsn = r.dsn ? `DSN to the sender queued as ${r.dsn}` : r.dsnWaits ? 'the DSN to the sender goes once the delivery in flight is done' : 'no DSN (null sender, or NOTIFY asked for none)'
      const busy = r.inFlight?.length ? `; in flight, left to their delivery: ${r.inFlight.join(', ')}` : ''
      return out(`bounced ${id}: ${r.bounced.join(', ')}${busy}; ${dsn}`)
    }
    const r = action === 'hold' ? await b.hold(id) : action === 'release' ? await b.release(id) : await b.remove(id)
    if (opts.json) return json(r)
    const busy = 'inFlight' in r && r.inFlight?.length ? `; in flight, not stopped by the hold (the attempt under way may still deliver them): ${r.inFlight.join(', ')}` : ''
    out(`${action === 'hold' ? 'held' : action === 'release' ? 'released' : 'deleted'} ${id}${busy}`)
  })
}

export async function queueFlush(env: CommandEnv, opts: QueueVerbOptions & { domain?: string; id?: string }): Promise<void> {
  try {
    checkQueueIds(opts.id)
  } catch (err) {
    return fail(err)
  }
  await withBackend(env, opts, async (b) => {
    const r = await b.flush({ id: opts.id, domain: opts.domain })
    if (opts.json) return json(r)
    const what = opts.id ? ` of ${opts.id}` : opts.domain ? ` for ${opts.domain}` : ''
    out(`flushed ${r.flushed} recipient${r.flushed === 1 ? '' : 's'}${what}: due now`)
  })
}

export async function queueSummary(env: CommandEnv, opts: QueueVerbOptions): Promise<void> {
  const print = (s: Awaited<ReturnType<Backend['summary']>>) => {
    if (opts.json) return json(s)
    const lines = [
      `${s.messages} message${s.messages === 1 ? '' : 's'}; recipients: ${s.recipients.queued} queued, ${s.recipients.deferred} deferred, ${s.recipients.held} held` +
        (s.owingDsn ? `; ${s.owingDsn} kept for a DSN to the sender not sent yet` : ''),
      `oldest: ${time(s.oldestReceivedAt)}`,
    ]
    if (s.domains.length) lines.push('', table([['DOMAIN', 'QUEUED', 'DEFERRED', 'HELD'], ...s.domains.map((d) => [d.domain, String(d.queued), String(d.deferred), String(d.held)])]).trimEnd())
    out(lines.join('\n'))
  }
  // A data directory no relay has used yet prints as an empty queue does (docs/config.md).
  await withBackend(env, opts, async (b) => print(await b.summary()), () => print({ messages: 0, recipients: { queued: 0, deferred: 0, held: 0 }, domains: [] }))
}
