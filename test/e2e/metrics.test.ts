// GET /metrics on the admin listener after a known sequence of sessions and deliveries: exact
// counter values, histogram buckets, queue gauges, and bounded domain labels (maxDomainLabels: 1).
// Then the figures an operator alerts on: DNS failures (SERVFAIL and timeouts, not NXDOMAIN or
// no-data answers), certificate expiry, build info, reloads, outbound connections, throttled
// destinations; and, on relays of their own, the domain allowlist, the top N domains, and a
// plugin's gauge (the webhook outbox backlog).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { X509Certificate } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { makeCa, type TestCa } from '../harness/tls.js'
import { ROOT, eventually, startRelay, type RelayProcess } from '../harness/relay.js'

const TOKEN = 'metrics-test-token-0123456789'
const STATIC_AUTH = path.join(ROOT, 'test/fixtures/static-auth.plugin.ts')

let ca: TestCa
let dns: TestDns
let mx: TestReceiver
let relay: RelayProcess
let adminUrl: string
let certFile: string

const message = (n: string) => `From: alice@sender.test\r\nTo: someone@dest.test\r\nSubject: ${n}\r\nMessage-ID: <${n}@sender.test>\r\n\r\nHello ${n}\r\n`

/** One sample of the exposition text: `name{a="b",...} value`. */
interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

function parse(text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`unparsable metrics line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    out.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return out
}

/** The value of the one sample with exactly these labels (undefined when there is none). */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.keys(s.labels).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`)
  return found[0]?.value
}

async function scrape(url = adminUrl): Promise<{ samples: Sample[]; text: string; contentType: string | null }> {
  const res = await fetch(`${url}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })
  expect(res.status).toBe(200)
  const text = await res.text()
  return { samples: parse(text), text, contentType: res.headers.get('content-type') }
}

beforeAll(async () => {
  ca = makeCa()
  const cert = ca.issue(['relay.test'])
  certFile = cert.cert
  mx = await startReceiver({ host: '127.0.0.2' })
  mx.setBehaviour({
    reply: {
      rcpt: ({ address }) =>
        address === 'gone@two.test'
          ? { code: 550, message: '5.1.1 no such user' }
          : address === 'busy@three.test'
            ? { code: 451, message: '4.3.0 try again later' }
            : address === 'rate@slow.test'
              ? { code: 451, message: '4.7.0 slow down' }
              : undefined,
    },
  })
  dns = await startDns({
    'one.test': { MX: [{ exchange: 'mx.test', priority: 10 }] },
    'two.test': { MX: [{ exchange: 'mx.test', priority: 10 }] },
    'three.test': { MX: [{ exchange: 'mx.test', priority: 10 }] },
    'mx.test': { A: ['127.0.0.2'] },
    'broken.test': 'SERVFAIL',
    'slow.test': { MX: [{ exchange: 'mx.test', priority: 10 }] },
    // No MX, A or AAAA record: a no-data answer. nxdomain.test is in no zone: NXDOMAIN.
    'nodata.test': { TXT: ['v=spf1 -all'] },
    'hang.test': 'TIMEOUT',
  })
  relay = await startRelay({
    config: {
      listen: [{ host: '127.0.0.1', port: 0, role: 'mx', tls: 'starttls' }],
      tls: { cert: cert.cert, key: cert.key },
      dns: { servers: [dns.server], timeout: '1s' },
      // One attempt per recipient in this test: the retry is far away.
      // Idle outbound connections stay for the open-connections gauge; a "slow down" pauses long enough to see.
      delivery: { port: mx.port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s', reuse: { idleTimeout: '1m' }, throttle: { backoff: { base: '10m' } } },
      smtp: { reverseLookup: false, authFailureDelay: '100ms' },
      plugins: [
        ['admin', { host: '127.0.0.1', port: 0, token: TOKEN, metrics: { maxDomainLabels: 1 } }],
        [STATIC_AUTH, { users: { 'alice@sender.test': { password: 'right-password' } } }],
        ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }],
      ],
    },
  })
  const line = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listener on'))
  adminUrl = line.url as string
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), mx?.close()])
})

const delivered = (to: string) => relay.waitForLog((l) => l.recipient === to && ['delivered', 'deferred', 'bounced'].includes(l.event as string) && l.msg === l.event, 15_000)

describe('GET /metrics', () => {
  it('needs the admin token', async () => {
    const res = await fetch(`${adminUrl}/metrics`)
    expect(res.status).toBe(401)
    await res.body?.cancel()
  })

  it('counts a known sequence exactly', async () => {
    // 3 delivered to one.test: the first domain seen, so the only one with its own label.
    for (const n of [1, 2, 3]) {
      const r = await sendMail(relay.port, { from: 'alice@sender.test', to: [`user${n}@one.test`], data: message(`one-${n}`) })
      expect(r.lastReply).toMatch(/^250 /)
      expect((await delivered(`user${n}@one.test`)).event).toBe('delivered')
    }
    // 1 bounced (5.1.1: bad-mailbox, and now suppressed); the null sender gets no DSN.
    expect((await sendMail(relay.port, { from: '', to: ['gone@two.test'], data: message('two') })).lastReply).toMatch(/^250 /)
    expect((await delivered('gone@two.test')).event).toBe('bounced')
    // 1 deferred by the receiver's 451, 1 deferred by a SERVFAIL for the domain's MX.
    expect((await sendMail(relay.port, { from: '', to: ['busy@three.test'], data: message('three') })).lastReply).toMatch(/^250 /)
    expect((await delivered('busy@three.test')).event).toBe('deferred')
    expect((await sendMail(relay.port, { from: '', to: ['someone@broken.test'], data: message('broken') })).lastReply).toMatch(/^250 /)
    expect((await delivered('someone@broken.test')).event).toBe('deferred')
    // Refused at RCPT: relaying denied for an untrusted client, and the suppressed address.
    const denied = await sendMail(relay.port, { from: 'x@elsewhere.test', to: ['someone@one.test'], data: message('denied'), localAddress: '127.0.0.77' })
    expect(denied.lastReply).toMatch(/^550 5\.7\.1 Relaying denied/)
    const suppressed = await sendMail(relay.port, { from: '', to: ['gone@two.test'], data: message('suppressed') })
    expect(suppressed.lastReply).toMatch(/^550 5\.1\.1 .*suppressed/)
    // 1 TLS session with 1 failed AUTH.
    const auth = await sendMail(relay.port, { from: 'alice@sender.test', to: ['x@one.test'], data: 'x', starttls: { ca: ca.caPem, servername: 'relay.test' }, auth: { user: 'alice@sender.test', pass: 'wrong' } })
    expect(auth.lastReply).toMatch(/^535 /)

    // 9 sessions in all; the counters of ended sessions are up once the relay saw each one close.
    const { samples, text, contentType } = await eventually(async () => {
      const s = await scrape()
      return value(s.samples, 'relay_smtp_sessions_closed_total', { listener: 'mx' }) === 9 ? s : undefined
    }, 10_000, '9 closed sessions in /metrics')
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/)

    expect(value(samples, 'relay_smtp_connections_total', { listener: 'mx' })).toBe(9)
    expect(value(samples, 'relay_smtp_connections_total', { listener: 'submission' })).toBe(0)
    expect(value(samples, 'relay_smtp_active_sessions', { listener: 'mx' })).toBe(0)
    const tls = samples.filter((s) => s.name === 'relay_smtp_tls_sessions_total')
    expect(tls).toHaveLength(1)
    expect(tls[0]!.labels.listener).toBe('mx')
    expect(['TLSv1.2', 'TLSv1.3']).toContain(tls[0]!.labels.version)
    expect(tls[0]!.value).toBe(1)
    expect(value(samples, 'relay_smtp_auth_failures_total', { temporary: 'false' })).toBe(1)

    expect(value(samples, 'relay_messages_accepted_total', { listener: 'mx' })).toBe(6)
    expect(value(samples, 'relay_messages_accepted_bytes_total', { listener: 'mx' })).toBeGreaterThan(6 * 80)
    // Relaying denied and the suppressed recipient: the core's own refusals at RCPT.
    expect(value(samples, 'relay_smtp_rejections_total', { stage: 'rcpt', code: '550', plugin: 'core' })).toBe(2)
    // The failed AUTH: static-auth's reject.
    expect(value(samples, 'relay_smtp_rejections_total', { stage: 'auth', code: '535', plugin: 'static-auth' })).toBe(1)
    expect(samples.filter((s) => s.name === 'relay_smtp_rejections_total')).toHaveLength(2)
    expect(value(samples, 'relay_smtp_suppressed_recipients_total')).toBe(1)

    // Per domain, bounded: one.test has its own label; two.test, three.test, broken.test are 'other'.
    expect(value(samples, 'relay_delivery_delivered_total', { domain: 'one.test' })).toBe(3)
    expect(samples.filter((s) => s.name === 'relay_delivery_delivered_total')).toHaveLength(1)
    expect(value(samples, 'relay_delivery_bounced_total', { domain: 'other', category: 'bad-mailbox' })).toBe(1)
    expect(samples.filter((s) => s.name === 'relay_delivery_bounced_total')).toHaveLength(1)
    expect(value(samples, 'relay_delivery_deferred_total', { domain: 'other', category: 'other' })).toBe(1)
    expect(value(samples, 'relay_delivery_deferred_total', { domain: 'other', category: 'dns' })).toBe(1)
    expect(samples.filter((s) => s.name === 'relay_delivery_deferred_total')).toHaveLength(2)
    const domains = new Set(samples.filter((s) => s.labels.domain !== undefined).map((s) => s.labels.domain))
    expect([...domains].sort()).toEqual(['one.test', 'other'])

    // Histograms: one observation per attempt; queue time only for final results.
    expect(value(samples, 'relay_delivery_attempt_duration_seconds_count', { result: 'delivered' })).toBe(3)
    expect(value(samples, 'relay_delivery_attempt_duration_seconds_count', { result: 'deferred' })).toBe(2)
    expect(value(samples, 'relay_delivery_attempt_duration_seconds_count', { result: 'bounced' })).toBe(1)
    expect(value(samples, 'relay_delivery_attempt_duration_seconds_bucket', { result: 'delivered', le: '+Inf' })).toBe(3)
    expect(value(samples, 'relay_delivery_attempt_duration_seconds_bucket', { result: 'delivered', le: '0.05' })).toBeGreaterThanOrEqual(0)
    expect(value(samples, 'relay_delivery_queue_time_seconds_count', { result: 'delivered' })).toBe(3)
    expect(value(samples, 'relay_delivery_queue_time_seconds_count', { result: 'bounced' })).toBe(1)
    expect(value(samples, 'relay_delivery_queue_time_seconds_bucket', { result: 'delivered', le: '432000' })).toBe(3)
    expect(value(samples, 'relay_delivery_queue_time_seconds_count', { result: 'deferred' })).toBeUndefined()

    // The SERVFAIL for broken.test's MX, counted at the shared resolver.
    expect(value(samples, 'relay_dns_failures_total', { type: 'MX', code: 'ESERVFAIL' })).toBe(1)

    // The two deferred recipients wait in the queue (retry in an hour).
    expect(value(samples, 'relay_queue_messages')).toBe(2)
    expect(value(samples, 'relay_queue_recipients', { state: 'deferred' })).toBe(2)
    expect(value(samples, 'relay_queue_recipients', { state: 'queued' })).toBe(0)
    expect(value(samples, 'relay_queue_recipients', { state: 'held' })).toBe(0)
    const age = value(samples, 'relay_queue_oldest_message_age_seconds')!
    expect(age).toBeGreaterThan(0)
    expect(age).toBeLessThan(120)
    // Nothing died mid-delivery: no work taken over from an expired lease.
    expect(value(samples, 'relay_queue_lease_takeovers_total')).toBe(0)

    // Event-loop lag from the default metrics, in our registry with our prefix.
    expect(value(samples, 'relay_nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0)
    expect(text).toContain('# TYPE relay_smtp_connections_total counter')
    expect(text).toContain('# TYPE relay_delivery_attempt_duration_seconds histogram')
    // Every metric is ours: no unprefixed names from prom-client's global registry.
    expect(samples.filter((s) => !s.name.startsWith('relay_'))).toEqual([])
  })

  it('counts DNS failures (SERVFAIL, timeout) but not NXDOMAIN or no-data answers', async () => {
    for (const to of ['someone@nxdomain.test', 'someone@nodata.test', 'someone@hang.test']) {
      expect((await sendMail(relay.port, { from: '', to: [to], data: message(to) })).lastReply).toMatch(/^250 /)
      await delivered(to)
    }
    const { samples } = await scrape()
    const failures = samples.filter((s) => s.name === 'relay_dns_failures_total')
    expect(failures.map((s) => s.labels.code).filter((c) => c !== 'ESERVFAIL' && c !== 'ETIMEOUT')).toEqual([])
    expect(value(samples, 'relay_dns_failures_total', { type: 'MX', code: 'ESERVFAIL' })).toBe(1)
    expect(value(samples, 'relay_dns_failures_total', { type: 'MX', code: 'ETIMEOUT' })).toBeGreaterThanOrEqual(1)
  }, 30_000)

  it('shows build info, certificate expiry, outbound connections and throttled destinations', async () => {
    const { samples } = await scrape()
    const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }
    expect(value(samples, 'relay_build_info', { version, node: process.version })).toBe(1)
    const notAfter = Math.floor(Date.parse(new X509Certificate(fs.readFileSync(certFile)).validTo) / 1000)
    expect(value(samples, 'relay_tls_certificate_expiry_timestamp_seconds', { file: certFile, subject: 'relay.test' })).toBe(notAfter)

    // Nothing paused yet; then slow.test says "slow down" (4.7.0) and is paused for 10 minutes.
    expect(value(samples, 'relay_delivery_paused_destinations')).toBe(0)
    expect((await sendMail(relay.port, { from: '', to: ['rate@slow.test'], data: message('slow') })).lastReply).toMatch(/^250 /)
    expect((await delivered('rate@slow.test')).event).toBe('deferred')
    const after = (await scrape()).samples
    expect(value(after, 'relay_delivery_paused_destinations')).toBe(1)
    expect(value(after, 'relay_delivery_deferred_total', { domain: 'other', category: 'throttled' })).toBe(1)
    // The connection to mx.test stays open in the pool (idle for up to a minute).
    expect(value(after, 'relay_delivery_open_connections')).toBe(1)
  })

  it("an operator's bounce counts as bounced and in queue time, not as an attempt (it took none)", async () => {
    const before = (await scrape()).samples
    const id = relay.logs.find((l) => l.event === 'accepted' && (l.recipients as string[] | undefined)?.includes('busy@three.test'))!.queueId as string
    const res = await fetch(`${adminUrl}/api/queue/${id}/bounce`, { method: 'POST', headers: { Authorization: `Bearer ${TOKEN}` } })
    expect(res.status).toBe(200)
    await res.body?.cancel()
    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'busy@three.test')
    expect(bounced.byOperator).toBe(true)
    const { samples } = await scrape()
    const count = (s: typeof samples, name: string) => value(s, name, { result: 'bounced' }) ?? 0
    expect(count(samples, 'relay_delivery_attempt_duration_seconds_count')).toBe(count(before, 'relay_delivery_attempt_duration_seconds_count'))
    expect(count(samples, 'relay_delivery_queue_time_seconds_count')).toBe(count(before, 'relay_delivery_queue_time_seconds_count') + 1)
    expect(value(samples, 'relay_delivery_bounced_total', { domain: 'other', category: 'other' })).toBe(1)
  })

  it('counts reloads by result', async () => {
    const reload = () => fetch(`${adminUrl}/api/reload`, { method: 'POST', headers: { Authorization: `Bearer ${TOKEN}` } })
    expect((await reload()).status).toBe(200)
    const good = fs.readFileSync(relay.configFile, 'utf8')
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...JSON.parse(good), noSuchSetting: true }))
    try {
      expect((await reload()).status).toBe(422)
    } finally {
      fs.writeFileSync(relay.configFile, good)
    }
    const { samples } = await scrape()
    expect(value(samples, 'relay_config_reloads_total', { result: 'ok' })).toBe(1)
    expect(value(samples, 'relay_config_reloads_total', { result: 'failed' })).toBe(1)
  })
})

/** A relay of its own with these admin metrics options (and further plugins), and its admin URL. */
async function relayWith(metrics: Record<string, unknown>, plugins: unknown[] = []): Promise<{ relay: RelayProcess; url: string }> {
  const r = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s' },
      plugins: [['admin', { host: '127.0.0.1', port: 0, token: TOKEN, metrics }], ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }], ...plugins],
    },
  })
  const line = await r.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('admin listener on'))
  return { relay: r, url: line.url as string }
}

async function send(r: RelayProcess, to: string): Promise<string> {
  expect((await sendMail(r.port, { from: '', to: [to], data: message(to) })).lastReply).toMatch(/^250 /)
  const l = await r.waitForLog((l) => l.recipient === to && ['delivered', 'deferred', 'bounced'].includes(l.event as string) && l.msg === l.event, 15_000)
  return l.event as string
}

describe('the domain label', () => {
  it('takes an allowlist (metrics.domains); a plugin gauge shows as relay_plugin_<name>', async () => {
    // The webhook's endpoint is down: its events wait in the outbox, shown by its registered gauge.
    const { relay: r, url } = await relayWith({ domains: ['three.test'] }, [['webhook', { url: 'http://127.0.0.1:9/hook', secret: 'webhook-secret-0123456789', retry: { base: '1h', max: '1h' } }]])
    try {
      expect(await send(r, 'a@one.test')).toBe('delivered')
      expect(await send(r, 'busy@three.test')).toBe('deferred')
      const { samples } = await scrape(url)
      expect(value(samples, 'relay_delivery_delivered_total', { domain: 'other' })).toBe(1)
      expect(value(samples, 'relay_delivery_deferred_total', { domain: 'three.test', category: 'other' })).toBe(1)
      expect([...new Set(samples.filter((s) => s.labels.domain !== undefined).map((s) => s.labels.domain))].sort()).toEqual(['other', 'three.test'])
      // accepted + delivered, accepted + deferred (the first POST may have taken none: they stay until a 2xx).
      await eventually(async () => value((await scrape(url)).samples, 'relay_plugin_webhook_outbox_events') === 4 || undefined, 5_000, '4 events in the webhook outbox')
    } finally {
      await r.stop()
    }
  }, 30_000)

  it('takes the top N domains by volume (metrics.topDomains), recomputed periodically', async () => {
    const { relay: r, url } = await relayWith({ topDomains: 1, topDomainsInterval: '1s' })
    try {
      // one.test takes the free label; two.test, busier, takes it over at a recomputation.
      expect(await send(r, 'a@one.test')).toBe('delivered')
      for (const n of [1, 2, 3]) expect(await send(r, `u${n}@two.test`)).toBe('delivered')
      await eventually(async () => value((await scrape(url)).samples, 'relay_delivery_delivered_total', { domain: 'one.test' }) === undefined || undefined, 10_000, 'one.test losing its label')
      expect(await send(r, 'u4@two.test')).toBe('delivered')
      expect(await send(r, 'b@one.test')).toBe('delivered')
      const { samples } = await scrape(url)
      expect(value(samples, 'relay_delivery_delivered_total', { domain: 'two.test' })).toBe(1)
      expect(value(samples, 'relay_delivery_delivered_total', { domain: 'other' })).toBe(4)
      expect(samples.filter((s) => s.name === 'relay_delivery_delivered_total')).toHaveLength(2)
    } finally {
      await r.stop()
    }
  }, 30_000)

  it('refuses an allowlist longer than maxDomainLabels', async () => {
    const { default: admin } = await import('../../plugins/admin/index.js')
    const r = admin.options!.safeParse({ insecureNoToken: true, metrics: { maxDomainLabels: 1, domains: ['a.test', 'b.test'] } })
    expect(r.success).toBe(false)
    expect(JSON.stringify(r.error?.issues)).toMatch(/more than maxDomainLabels/)
  })
})
