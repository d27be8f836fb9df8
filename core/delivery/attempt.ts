import fs from 'node:fs'
import { Readable } from 'node:stream'
import type { Resolver } from 'node:dns/promises'
import type { Job, RecipientResult } from '../queue/types.js'
import type { HookBus } from '../hooks/bus.js'
import type { RelayConfig } from '../config/schema.js'
import { resolveDestination, resolveHosts, type Resolution } from './mx.js'
import { transact, type ConnectionPool, type Outcome } from './smtp-client.js'

/** The outcome of one delivery attempt for one job, before retry policy is applied. */
export interface AttemptResult {
  rowId: number
  address: string
  /** 'failed' = permanent (5xx, null MX, ...); 'retry' = temporary. */
  outcome: 'delivered' | 'failed' | 'retry'
  response: string
  /** The reply came from a remote server (else a local decision such as DNS). */
  remote: boolean
  status?: string
  remoteHost?: string
  tls?: boolean
}

export interface AttemptDeps {
  config: RelayConfig
  resolver: Resolver
  hooks: HookBus
  pool: ConnectionPool
}

function messageStream(job: Job): () => Readable {
  const { headers, body } = job.message
  if ('inline' in body) return () => Readable.from([headers, body.inline], { objectMode: false })
  return () =>
    Readable.from(
      (async function* () {
        yield headers
        yield* fs.createReadStream(body.file)
      })(),
    )
}

/** One attempt: deliver hook (route), DNS, then SMTP with each host in turn until one answers. */
export async function attemptDelivery(job: Job, deps: AttemptDeps): Promise<AttemptResult[]> {
  const { config, resolver, hooks, pool } = deps
  const all = (outcome: AttemptResult['outcome'], response: string, extra: Partial<AttemptResult> = {}) =>
    job.recipients.map((r) => ({ rowId: r.rowId, address: r.address, outcome, response, remote: false, ...extra }))

  const decision = await hooks.run('deliver', {
    message: { id: job.message.id, sender: job.message.sender, messageId: job.message.messageId, size: job.message.size, receivedAt: job.message.receivedAt, headers: job.message.headers.toString('latin1') },
    domain: job.domain,
    recipients: job.recipients.map((r) => r.address),
    attempt: (job.recipients[0]?.attempts ?? 0) + 1,
  })
  let port = config.delivery.port
  let helo = config.hostname
  let resolution: Resolution
  if (decision?.verdict.action === 'reject') return all('failed', `${decision.verdict.status ?? '5.0.0'} ${decision.verdict.message ?? `Refused by ${decision.plugin}`}`, { status: decision.verdict.status ?? '5.0.0' })
  if (decision?.verdict.action === 'tempfail') return all('retry', `${decision.verdict.status ?? '4.0.0'} ${decision.verdict.message ?? `Deferred by ${decision.plugin}`}`)
  if (decision?.verdict.action === 'route') {
    const r = decision.verdict.route
    port = r.port ?? port
    helo = r.helo ?? helo
    resolution = await resolveHosts(resolver, r.hosts)
  } else {
    resolution = await resolveDestination(resolver, job.domain)
  }
  if (!resolution.ok) return all(resolution.permanent ? 'failed' : 'retry', `${resolution.status} ${resolution.message}`, { status: resolution.status })

  const to = job.recipients.map((r) => r.address)
  const message = messageStream(job)
  let last: Outcome | undefined
  for (const host of resolution.hosts) {
    last = await transact(host, {
      port,
      helo,
      from: job.message.sender,
      to,
      message,
      connectTimeout: config.delivery.connectTimeout,
      commandTimeout: config.delivery.commandTimeout,
      eightBit: job.message.senderArgs?.BODY === '8BITMIME',
    }, pool)
    if (last.kind === 'done') break
  }
  if (!last) return all('retry', '4.4.1 No host to deliver to')
  if (last.kind === 'unreachable') {
    // Every host failed before a transaction; a 5xx greeting from the last one is final.
    const permanent = (last.code ?? 0) >= 500
    return all(permanent ? 'failed' : 'retry', permanent ? last.response : `4.4.1 Host ${last.remoteHost} unreachable: ${last.response}`, {
      remote: Boolean(last.code),
      remoteHost: last.remoteHost,
    })
  }
  const done = last
  return job.recipients.map((r) => {
    const reply = done.replies.get(r.address)
    const base = { rowId: r.rowId, address: r.address, remote: true, remoteHost: done.remoteHost, tls: done.tls }
    if (!reply) return { ...base, outcome: 'retry' as const, response: '4.4.2 No reply for this recipient', remote: false }
    if (reply.ok) return { ...base, outcome: 'delivered' as const, response: reply.response }
    return { ...base, outcome: reply.code >= 500 ? ('failed' as const) : ('retry' as const), response: reply.response, remote: reply.code > 0 }
  })
}

export type { RecipientResult }
