import fs from 'node:fs'
import type { Logger } from 'pino'
import net from 'node:net'
import path from 'node:path'
import tls from 'node:tls'
import { Readable } from 'node:stream'
import type { Resolver } from 'node:dns/promises'
import type { Job, Queue, RecipientResult } from '../queue/types.js'
import type { HookBus } from '../hooks/bus.js'
import { deliverRefusal } from '../hooks/verdict.js'
import type { DeliveryEvent, Route } from '../hooks/types.js'
import type { RelayConfig } from '../config/schema.js'
import { resolveDestination, resolveHosts, type Destination, type Resolution } from './mx.js'
import { transact } from './smtp-client.js'
import type { ConnectionPool } from './connection-pool.js'
import type { Outcome, RecipientReply, TlsPolicy, TransactionOptions } from './smtp-session.js'
import { MtaSts, mxAllowed, type StsPolicy } from './mta-sts.js'
import { relayDsn } from '../mail/bounce.js'
import { throughHost, type Throttle } from './throttle.js'
import { admitRoute } from './route-throttle.js'
import { routeProblem } from './route-check.js'
import { isOwnEndpoint, loopsBack } from './loop.js'
import { SilentHosts } from './silent-hosts.js'
import { hopCount } from '../mail/received.js'
import { oneLineReply } from '../mail/reply.js'

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
  /** TLS of the connection that gave the reply (false: plain text). */
  tls?: DeliveryEvent['tls']
  /** STARTTLS failed under TLS policy 'may' and the message went in plain text: why it failed. */
  tlsFallback?: string
  /** How it was sent (absent: decided before a route was planned). */
  route?: DeliveryEvent['route']
  /** The chosen route's name (Route.name). */
  routeName?: string
  /** Deferred by the route's sending cap: the next attempt is due then (no retry backoff). */
  retryAt?: number
  /** The server's reply to this recipient in a transaction (else the attempt's fate as a whole: DNS, route, no host). */
  replied?: boolean
  /** Delivered to a next hop that took NOTIFY on (it offers DSN): a success DSN is its to send, not ours. */
  notifyPassedOn?: boolean
  /** The command the server's reply answered (RecipientReply.stage): only 'rcpt' and 'lmtp' speak of this recipient alone. */
  stage?: RecipientReply['stage']
}

export interface AttemptDeps {
  /** The config in force (hot reload hands a new one each generation). */
  config: RelayConfig
  /** What is set up once at start (restart-only settings): deliveryEnv(). */
  env: DeliveryEnv
  resolver: Resolver
  hooks: HookBus
  pool: ConnectionPool
  /** Per-destination throttle (per MX host limits and backoff); absent: none. */
  throttle?: Throttle
  /** Reads a queued body, whatever its kind (inline, spool file, stored in PostgreSQL). */
  openBody: Queue['openBody']
}

/**
 * What delivery sets up once, from the config at start (delivery.tlsCa, delivery.mtaSts and listen
 * are restart-only): extra CAs, the MTA-STS policy cache, and the check for our own listeners.
 */
export interface DeliveryEnv {
  ca?: (string | Buffer)[]
  caError?: string
  sts?: MtaSts
  /** Is `address`:`port` one of this relay's own listeners (loop.ts)? */
  isOwn: (address: string, port: number) => boolean
  /** Hosts that did not answer lately: tried after those that do. */
  silentHosts: SilentHosts
}

export function deliveryEnv(config: RelayConfig, resolver: Resolver, log?: Logger): DeliveryEnv {
  // The listeners are recorded against the config the relay started with (loop.ts).
  const env: DeliveryEnv = { isOwn: (address, port) => isOwnEndpoint(config, address, port), silentHosts: new SilentHosts() }
  if (config.delivery.tlsCa) {
    const file = path.resolve(config.configDir, config.delivery.tlsCa)
    try {
      const extra = [fs.readFileSync(file)]
      // `ca` replaces the default store, so the system's roots (and NODE_EXTRA_CA_CERTS) are added back.
      const envExtra = process.env.NODE_EXTRA_CA_CERTS
      if (envExtra) {
        try {
          extra.push(fs.readFileSync(envExtra))
        } catch {
          // Node itself warns about an unreadable NODE_EXTRA_CA_CERTS at start.
        }
      }
      env.ca = [...tls.rootCertificates, ...extra]
    } catch (err) {
      env.caError = `delivery.tlsCa ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`
    }
  }
  const sts = config.delivery.mtaSts
  if (sts.enabled) env.sts = new MtaSts({ resolver, timeoutMs: sts.timeout, connectTo: sts.connectTo, ca: env.ca, log })
  return env
}

function messageStream(job: Job, openBody: Queue['openBody']): () => Readable {
  const { headers, body } = job.message
  if ('inline' in body) return () => Readable.from([headers, body.inline], { objectMode: false })
  return () =>
    Readable.from(
      (async function* () {
        yield headers
        yield* openBody(job.message)
      })(),
    )
}

/** How this job is sent, once the deliver hook has spoken. */
interface Plan {
  kind: 'mx' | 'smtp' | 'lmtp'
  port: number
  helo: string
  tls: TlsPolicy
  implicitTls?: boolean
  auth?: { user: string; pass: string }
  localAddress?: string
  socketPath?: string
  hosts?: string[]
}

function planFor(route: Route | undefined, config: RelayConfig): Plan | string {
  if (!route) return { kind: 'mx', port: config.delivery.port, helo: config.hostname, tls: 'may' }
  const problem = routeProblem(route)
  if (problem) return problem
  const kind = route.kind ?? (route.socketPath ? 'lmtp' : route.hosts?.length ? 'smtp' : 'mx')
  if (kind === 'smtp' && !route.hosts?.length) return 'a smtp route needs hosts'
  // What the kind would not use is no silent choice: the plugin meant something else.
  if (kind === 'mx' && route.hosts?.length) return "kind 'mx' delivers to the domain's MX hosts, and hosts were given too (kind 'smtp' sends to them)"
  if (kind !== 'lmtp' && route.socketPath !== undefined) return `socketPath is for kind 'lmtp', not '${kind}'`
  if (kind === 'lmtp' && !route.hosts?.length && !route.socketPath) return 'an lmtp route needs hosts or a socketPath'
  if (route.localAddress !== undefined && net.isIP(route.localAddress) === 0) return `localAddress ${route.localAddress} is not an IP address`
  const defaultPort = kind === 'lmtp' ? 24 : kind === 'smtp' && route.implicitTls ? 465 : config.delivery.port
  return {
    kind,
    port: route.port ?? defaultPort,
    helo: route.helo ?? config.hostname,
    tls: route.tls ?? 'may',
    implicitTls: route.implicitTls,
    auth: route.auth,
    localAddress: route.localAddress,
    socketPath: kind === 'lmtp' ? route.socketPath : undefined,
    hosts: route.hosts,
  }
}

/** RFC 6531: the envelope has a UTF-8 address, or the client sent the message with SMTPUTF8. */
function needsSmtpUtf8(job: Job): boolean {
  if (job.message.senderArgs?.SMTPUTF8 !== undefined && job.message.senderArgs.SMTPUTF8 !== false) return true
  return [job.message.sender, ...job.recipients.map((r) => r.address)].some((a) => /[^\x00-\x7f]/.test(a))
}

/**
 * One attempt: deliver hook (route), DNS and MTA-STS, then SMTP/LMTP with each host in turn until one answers.
 * Every response leaves here in its bounded one-line form (core/mail/reply.ts): this is where remote
 * replies (and local reasons quoting them) enter the relay, for the queue, events, logs, the
 * suppression list and DSNs alike.
 */
export async function attemptDelivery(job: Job, deps: AttemptDeps): Promise<AttemptResult[]> {
  const results = await attempt(job, deps)
  for (const r of results) r.response = oneLineReply(r.response)
  return results
}

async function attempt(job: Job, deps: AttemptDeps): Promise<AttemptResult[]> {
  const { config, hooks } = deps
  let route: AttemptResult['route'] // known once the plan is
  let routeName: string | undefined
  const all: All = (outcome, response, extra = {}) =>
    job.recipients.map((r) => ({ rowId: r.rowId, address: r.address, outcome, response, remote: false, route, routeName, ...extra }))

  // RFC 5321 §6.3: queued before smtp.maxHops was lowered. The top Received field is our own.
  if (hopCount(job.message.headers.toString('latin1')) - 1 > config.smtp.maxHops) return all('failed', '5.4.6 Too many hops', { status: '5.4.6' })

  const decision = await hooks.run('deliver', {
    message: { id: job.message.id, sender: job.message.sender, messageId: job.message.messageId, size: job.message.size, receivedAt: job.message.receivedAt, headers: job.message.headers.toString('latin1') },
    domain: job.domain,
    recipients: job.recipients.map((r) => r.address),
    attempt: (job.recipients[0]?.attempts ?? 0) + 1,
  })
  if (decision?.verdict.action === 'reject' || decision?.verdict.action === 'tempfail') {
    const r = deliverRefusal(decision.verdict, decision.plugin)
    return decision.verdict.action === 'reject' ? all('failed', r.text, { status: r.status }) : all('retry', r.text)
  }
  const chosen = decision?.verdict.action === 'route' ? decision.verdict.route : undefined
  const plan = planFor(chosen, config)
  if (typeof plan === 'string') return all('retry', `4.3.5 Route from ${decision!.plugin} unusable: ${plan}`, { status: '4.3.5' })
  route = plan.kind
  routeName = chosen?.name

  // The route's sending caps, as a whole, for the rest of the attempt (route-throttle.ts).
  // Those waiting hold delivery slots: at most half of them wait for one route.
  const gate = await admitRoute(deps.throttle, chosen, config.delivery.throttle.hostWait, Math.max(1, Math.floor(config.delivery.concurrency.global / 2)))
  if (!gate.ok) return all('retry', gate.response, { status: '4.4.5', retryAt: gate.retryAt })
  try {
    return await send(job, deps, plan, all, routeName)
  } finally {
    gate.release()
  }
}

type All = (outcome: AttemptResult['outcome'], response: string, extra?: Partial<AttemptResult>) => AttemptResult[]

/** The planned attempt: DNS and MTA-STS, then SMTP/LMTP with each host in turn until one answers. */
async function send(job: Job, deps: AttemptDeps, plan: Plan, all: All, routeName: string | undefined): Promise<AttemptResult[]> {
  const started = Date.now()
  const { config, resolver, pool } = deps
  const route = plan.kind
  const env = deps.env
  let tlsPolicy = plan.tls
  let sts: StsPolicy | undefined
  let resolution: Resolution
  if (plan.kind === 'mx') {
    const [res, lookup] = await Promise.all([resolveDestination(resolver, job.domain), env.sts?.lookup(job.domain)])
    resolution = res
    if (lookup?.policy?.mode === 'enforce') sts = lookup.policy
    // Testing mode (RFC 8461 §5): delivered as without a policy, but what it would refuse is said.
    const testing = lookup?.policy?.mode === 'testing' ? lookup.policy : undefined
    const unlisted = testing && res.ok ? [...new Set(res.hosts.filter((h) => !mxAllowed(h.name, testing)).map((h) => h.name))] : []
    if (testing && unlisted.length) env.sts?.warn(job.domain, `MTA-STS policy of ${job.domain} (testing, mx: ${testing.mx.join(' ')}) does not list ${unlisted.join(', ')}: delivered anyway, as testing mode says`)
  } else if (plan.socketPath) {
    resolution = { ok: true, hosts: [{ name: plan.socketPath, address: plan.socketPath }] }
  } else {
    resolution = await resolveHosts(resolver, plan.hosts!)
  }
  if (!resolution.ok) return all(resolution.permanent ? 'failed' : 'retry', `${resolution.status} ${resolution.message}`, { status: resolution.status })

  let hosts: Destination[] = resolution.hosts
  if (!plan.socketPath) {
    // Never to ourselves: without the hosts that are this relay, and (MX) without those no better than it.
    const own = hosts.find((h) => env.isOwn(h.address, plan.port))
    if (own) hosts = hosts.filter((h) => !env.isOwn(h.address, plan.port) && (own.preference === undefined || (h.preference ?? Infinity) < own.preference))
    if (!hosts.length) return all('failed', loopsBack(job.domain), { status: '5.4.6' })
  }
  if (sts) {
    // RFC 8461 §4: only MX hosts the policy lists, each with a verified certificate.
    const policy = sts
    hosts = hosts.filter((h) => mxAllowed(h.name, policy))
    tlsPolicy = 'verify'
    if (!hosts.length) {
      const names = [...new Set(resolution.hosts.map((h) => h.name))].join(', ')
      return all('retry', `4.7.5 MTA-STS policy of ${job.domain} (enforce, mx: ${policy.mx.join(' ')}) lists none of its MX hosts (${names})`, { status: '4.7.5' })
    }
  }
  if (plan.localAddress && !plan.socketPath) {
    // A socket bound to an address of one family cannot reach the other.
    const family = net.isIP(plan.localAddress)
    const same = hosts.filter((h) => net.isIP(h.address) === family)
    if (same.length) hosts = same
  }
  const needsCa = tlsPolicy === 'verify'
  if (needsCa && env.caError) return all('retry', `4.7.5 ${env.caError}`, { status: '4.7.5' })

  // A host that did not answer lately goes last (silent-hosts.ts): a dead primary MX costs every
  // message a connect timeout only until it has been seen dead once.
  if (!plan.socketPath) hosts = env.silentHosts.order(hosts, plan.port)
  // Postfix's smtp_mx_address_limit: a domain with 100 MX hosts does not hold a slot for 100 timeouts.
  const limit = config.delivery.maxHostsPerAttempt
  if (limit > 0 && hosts.length > limit) hosts = hosts.slice(0, limit)
  const deadline = started + config.delivery.attemptTimeout

  const to = job.recipients.map((r) => r.address)
  const options: TransactionOptions = {
    port: plan.port,
    helo: plan.helo,
    from: job.message.sender,
    to,
    message: messageStream(job, deps.openBody),
    connectTimeout: config.delivery.connectTimeout,
    commandTimeout: config.delivery.commandTimeout,
    dataDoneTimeout: config.delivery.dataDoneTimeout,
    deadline,
    eightBit: /^(8BITMIME|BINARYMIME)$/i.test(String(job.message.senderArgs?.BODY ?? '')),
    size: job.message.size,
    smtpUtf8: needsSmtpUtf8(job),
    dsn: relayDsn(job.message.senderArgs, job.recipients),
    tls: tlsPolicy,
    implicitTls: plan.implicitTls,
    auth: plan.auth,
    localAddress: plan.localAddress,
    lmtp: plan.kind === 'lmtp',
    socketPath: plan.socketPath,
    ca: env.ca,
    // An LMTP mail store on this machine may well greet with the machine's (our) name.
    ownHostname: plan.kind === 'lmtp' ? undefined : config.hostname,
  }
  let last: Outcome | undefined
  let policyFailure: Extract<Outcome, { kind: 'unreachable' }> | undefined
  let refusedForNow: Extract<Outcome, { kind: 'done' }> | undefined
  // Once a host turns out to be this relay (it greets with our name), only better MX hosts are tried.
  let ourPreference: number | undefined
  let loopHost: string | undefined
  for (const host of hosts) {
    if (ourPreference !== undefined && (host.preference ?? Infinity) >= ourPreference) continue
    const maxMessages = deps.throttle?.messagesPerConnection(job.domain, host.name, host.address)
    const capped = deps.throttle?.hostCapped(host.name, host.address) ?? false
    const opts = maxMessages === undefined && !capped ? options : { ...options, maxMessages, capped }
    const outcome = await throughHost(deps.throttle, host, plan.port, config.delivery.throttle.hostWait, () => transact(host, opts, pool))
    if (outcome.kind === 'unreachable' && outcome.silent) env.silentHosts.silent(host.address, plan.port)
    else if (outcome.kind === 'done' || outcome.code !== undefined || outcome.policy !== undefined) env.silentHosts.answered(host.address, plan.port)
    if (outcome.kind === 'unreachable' && outcome.policy === 'loop') {
      // Greeted with our own name: this host is us. With better MX hosts we are a backup MX: they
      // decide (tried, or tried on: a host silent lately comes last, after this one), and when none
      // takes the message it waits for them, as Postfix does; with none, the mail loops.
      const better = host.preference !== undefined && hosts.some((h) => (h.preference ?? Infinity) < host.preference!)
      if (!better) return all('failed', loopsBack(job.domain), { status: '5.4.6', remoteHost: outcome.remoteHost })
      ourPreference = host.preference!
      loopHost = outcome.remoteHost
      continue
    }
    last = outcome
    if (last.kind === 'done' && !sessionRefusedForNow(last)) break
    if (last.kind === 'done') refusedForNow = last
    else if (last.policy) policyFailure = last
  }
  // The next hosts could not be reached: what the host that refused said explains the deferral best.
  if (last?.kind === 'unreachable' && refusedForNow) last = refusedForNow
  if (!last) return all('retry', loopHost ? `4.4.1 No MX host of ${job.domain} better than this relay (${loopHost}) was tried` : '4.4.1 No host to deliver to')
  if (last.kind === 'unreachable') {
    // A host that did not meet the TLS policy (or refused AUTH) explains the deferral best.
    const failure = policyFailure ?? last
    if (failure.policy === 'tls') {
      const why = sts ? `MTA-STS policy of ${job.domain} (enforce) requires verified TLS` : `TLS policy '${tlsPolicy}'`
      return all('retry', `4.7.5 ${why}: ${failure.remoteHost}: ${failure.response}`, { status: '4.7.5', remoteHost: failure.remoteHost })
    }
    if (failure.policy === 'auth') return all('retry', `4.7.0 ${failure.remoteHost}: ${failure.response}`, { status: '4.7.0', remote: Boolean(failure.code), remoteHost: failure.remoteHost })
    // RFC 6531 §3.2 / RFC 6152 §3: the next hop cannot take this message as it is; waiting will not change that.
    if (failure.policy === 'smtputf8') return all('failed', `5.6.7 ${failure.response}`, { status: '5.6.7', remoteHost: failure.remoteHost })
    if (failure.policy === '8bitmime') return all('failed', `5.6.3 ${failure.response}`, { status: '5.6.3', remoteHost: failure.remoteHost })
    // Every host failed before a transaction. A 5xx to EHLO/HELO from the last one is final; a 5xx
    // greeting is not (Postfix's smtp_skip_5xx_greeting, RFC 5321 §3.1: often a blocklist entry
    // that a retry outlives): it waits, and bounces only when the message expires.
    if (last.greeting) return all('retry', `4.4.1 Host ${last.remoteHost} refused to talk to me: ${last.response}`, { remote: true, remoteHost: last.remoteHost })
    const permanent = (last.code ?? 0) >= 500
    return all(permanent ? 'failed' : 'retry', permanent ? last.response : `4.4.1 Host ${last.remoteHost} ${last.notTried ? 'not tried' : 'unreachable'}: ${last.response}`, {
      remote: Boolean(last.code),
      remoteHost: last.remoteHost,
    })
  }
  const done = last
  return job.recipients.map((r) => {
    const reply = done.replies.get(r.address)
    const notifyPassedOn = done.dsn === true && options.dsn?.rcpt?.get(r.address)?.notify !== undefined
    const base = { rowId: r.rowId, address: r.address, remote: true, remoteHost: done.remoteHost, tls: done.tls, tlsFallback: done.tlsFallback, route, routeName, replied: true, notifyPassedOn }
    if (!reply) return { ...base, outcome: 'retry' as const, response: '4.4.2 No reply for this recipient', remote: false }
    if (reply.ok) return { ...base, outcome: 'delivered' as const, response: reply.response }
    // RFC 5321 §4.5.3.1.10, Postfix: 552 to RCPT is taken as 452 (too many recipients, or full for now).
    const permanent = reply.code >= 500 && !(reply.code === 552 && reply.stage === 'rcpt')
    return { ...base, outcome: permanent ? ('failed' as const) : ('retry' as const), response: reply.response, remote: reply.code > 0, stage: reply.stage }
  })
}

/**
 * The host did not take the message for anyone, for now: a 4xx to MAIL FROM, to DATA or to the
 * final dot (452 insufficient storage: the backup MX's case), 421 (closing) at any command, or the
 * connection lost before the final dot went out. The next MX host is tried at once, as after a 4xx
 * greeting (RFC 5321 §5.1: each address is tried until one takes it; Postfix does so). A
 * recipient's own 4xx at RCPT (greylisting) is not such a refusal, nor is a connection lost or
 * timed out after the final dot (the host may have taken the message: another would deliver it twice).
 */
function sessionRefusedForNow(outcome: Extract<Outcome, { kind: 'done' }>): boolean {
  if (!outcome.replies.size) return false
  for (const reply of outcome.replies.values()) {
    if (reply.ok || reply.stage === 'lmtp') return false
    if (reply.code === 0 ? !outcome.lostBeforeEnd : reply.code < 400 || reply.code > 499) return false
    if (reply.code !== 0 && reply.stage !== 'mail' && reply.stage !== 'data' && reply.code !== 421) return false
  }
  return true
}

export type { RecipientResult }
