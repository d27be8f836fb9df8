// Reputation figures end to end: mail delivered and bounced through the relay, a feedback-loop
// report (ARF) about one of those messages sent to the feedback address, then `relay stats` (on the
// running relay through the admin API, and on the stopped data directory) and the warning log line.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type ReceivedMessage, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'
import { microsoftReport, yahooReport } from '../reputation/reports.js'

let dns: TestDns
let rx: TestReceiver // 127.0.0.2: dest.test (550 5.1.1 for gone-*), news.test (DSNs), feedback.test
let relay: RelayProcess

const UNTRUSTED = '127.0.0.77' // a client that may not relay (relay-acl trusts 127.0.0.1 only)
const FBL = 'fbl@feedback.test'

interface StatsJson {
  period: string
  figures: {
    senders: { domain: string; delivered: number; deferred: number; bounced: number; bouncedBy: Record<string, number>; complaints: number; bounceRate: number | null; warnings: { kind: string }[] }[]
    destinations: { domain: string; delivered: number; bounced: number; complaints: number }[]
    warnings: { senderDomain: string; kind: string; rate: number; threshold: number; volume: number }[]
  }
  series: { hour: number; delivered: number; deferred: number; bounced: number; complaints: number }[]
}

const message = (from: string, to: string, subject: string) =>
  `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@${from.split('@')[1]}>\r\n\r\nHello.\r\n`

async function send(o: { from: string; to: string[]; data: string; localAddress?: string }): Promise<string> {
  const { lastReply } = await sendMail(relay.port, { ...o, helo: 'client.test' })
  return lastReply
}
const queueIdOf = (reply: string) => /queued as (\w+)/.exec(reply)?.[1]
const stats = (...args: string[]) => {
  const r = runCli(['stats', ...args, '--config', relay.configFile])
  if (r.code !== 0) throw new Error(`relay stats failed (${r.code}): ${r.stderr}`)
  return r
}
const statsJson = () => JSON.parse(stats('--json').stdout) as StatsJson
const sender = (s: StatsJson, domain: string) => s.figures.senders.find((x) => x.domain === domain)

/** The original as the receiving MX got it: header lines (folded lines kept apart) and body. */
function originalOf(m: ReceivedMessage): { headers: string[]; body: string } {
  const raw = m.raw.toString('latin1')
  const split = raw.indexOf('\r\n\r\n')
  return { headers: raw.slice(0, split).split('\r\n'), body: raw.slice(split + 4) }
}

const ids: { delivered: string[]; bounced: string[]; other?: string } = { delivered: [], bounced: [] }

beforeAll(async () => {
  rx = await startReceiver({
    host: '127.0.0.2',
    behaviour: { noStartTls: true, reply: { rcpt: ({ address }) => (address?.startsWith('gone-') ? { code: 550, message: '5.1.1 <' + address + '>: Recipient address rejected: User unknown' } : undefined) } },
  })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] }, 'news.test': { A: ['127.0.0.2'] }, 'other.test': { A: ['127.0.0.2'] }, 'feedback.test': { A: ['127.0.0.2'] } })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
      // reputation first: its data hook takes the reports before any other plugin sees them.
      stats: { minVolume: 5 },
      plugins: [['reputation', { feedbackAddresses: [FBL] }], ['admin', { port: 0, insecureNoToken: true }], ['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }]],
    },
  })
}, 60_000)

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), rx?.close()])
})

describe('reputation figures and feedback-loop complaints', () => {
  it('relay stats on a data directory with no queue yet: empty figures, nothing created', () => {
    const dir = tempDir('relay-stats-empty-')
    const configFile = path.join(dir, 'relay.config.json')
    fs.writeFileSync(configFile, JSON.stringify({ hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: path.join(dir, 'data') }))
    const r = runCli(['stats', '--json', '--config', configFile])
    expect(r.code, r.stderr).toBe(0)
    expect((JSON.parse(r.stdout) as StatsJson).figures).toMatchObject({ senders: [], destinations: [], warnings: [] })
    expect(runCli(['stats', '--config', configFile]).stdout).toContain('Sending domains\n  (nothing sent)')
    expect(fs.existsSync(path.join(dir, 'data'))).toBe(false)
  })


  it('counts deliveries and bounces per sending and destination domain', async () => {
    for (let i = 0; i < 8; i++) {
      const reply = await send({ from: 'news@news.test', to: [`user-${i}@dest.test`], data: message('news@news.test', `user-${i}@dest.test`, `news ${i}`) })
      ids.delivered.push(queueIdOf(reply)!)
    }
    for (let i = 0; i < 2; i++) {
      const reply = await send({ from: 'news@news.test', to: [`gone-${i}@dest.test`], data: message('news@news.test', `gone-${i}@dest.test`, `gone ${i}`) })
      ids.bounced.push(queueIdOf(reply)!)
    }
    ids.other = queueIdOf(await send({ from: 'billing@other.test', to: ['user-0@dest.test'], data: message('billing@other.test', 'user-0@dest.test', 'invoice') }))
    expect(ids.delivered.every(Boolean) && ids.bounced.every(Boolean)).toBe(true)

    const s = await eventually(
      () => {
        const s = statsJson()
        const news = sender(s, 'news.test')
        return news && news.delivered === 8 && news.bounced === 2 && sender(s, 'other.test')?.delivered === 1 ? s : undefined
      },
      20_000,
      'delivered and bounced counts in relay stats',
    )
    expect(sender(s, 'news.test')).toMatchObject({ delivered: 8, bounced: 2, bouncedBy: { 'bad-mailbox': 2 }, complaints: 0, bounceRate: 0.2 })
    expect(s.figures.destinations.find((d) => d.domain === 'dest.test')).toMatchObject({ delivered: 9, bounced: 2 })
    // 20% bounces over 10 messages (minVolume 5): a warning for news.test; other.test has 1 message.
    expect(s.figures.warnings).toEqual([{ senderDomain: 'news.test', kind: 'bounce-rate', rate: 0.2, threshold: 0.05, volume: 10 }])
    expect(sender(s, 'other.test')!.warnings).toEqual([])
    const current = s.series[s.series.length - 1]!
    expect(s.series).toHaveLength(24)
    expect(current.delivered).toBeGreaterThanOrEqual(9)
    expect(current.bounced).toBeGreaterThanOrEqual(2)
  }, 40_000)

  it('an ARF report to the feedback address is counted against the original sender and not queued', async () => {
    const queueId = ids.delivered[3]!
    const delivered = rx.messages.find((m) => m.raw.toString('latin1').includes(`id ${queueId}`))
    expect(delivered, `the receiver has message ${queueId}`).toBeDefined()
    const report = yahooReport({ original: originalOf(delivered!), mailFrom: 'news@news.test', rcptTo: 'user-3@dest.test', to: FBL })

    // From a client that may not relay: the feedback address is taken although feedback.test is not local.
    const refused = await sendMail(relay.port, { from: 'someone@else.test', to: ['user@dest.test'], data: 'Subject: x\r\n\r\nx\r\n', localAddress: UNTRUSTED })
    expect(refused.lastReply).toMatch(/^550 5\.7\.1 Relaying denied/)
    const reply = await send({ from: '', to: [FBL], data: report, localAddress: UNTRUSTED })
    expect(reply).toBe(`250 2.0.0 Ok: feedback report recorded for ${queueId}`)

    const line = await relay.waitForLog((l) => l.event === 'complaint', 5000)
    expect(line).toMatchObject({ event: 'complaint', senderDomain: 'news.test', queueId, feedbackType: 'abuse', matched: true, destDomain: 'dest.test' })

    // Counted: one complaint against news.test (and dest.test as destination).
    const s = statsJson()
    expect(sender(s, 'news.test')).toMatchObject({ complaints: 1, delivered: 8, bounced: 2 })
    expect(s.figures.destinations.find((d) => d.domain === 'dest.test')!.complaints).toBe(1)
    expect(s.series[s.series.length - 1]!.complaints).toBe(1)

    // Not queued, never delivered.
    const queued = JSON.parse(runCli(['queue', 'list', '--json', '--config', relay.configFile]).stdout) as { recipients: { address: string }[] }[]
    expect(queued.flatMap((m) => m.recipients.map((r) => r.address))).not.toContain(FBL)
    expect(rx.messages.some((m) => m.to.includes(FBL))).toBe(false)
  }, 30_000)

  it('a large report (over 128 KB: spooled to disk) with a base64 original is matched the same', async () => {
    const delivered = rx.messages.find((m) => m.raw.toString('latin1').includes(`id ${ids.other}`))!
    const original = originalOf(delivered)
    original.body += 'Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n'.repeat(4000)
    const report = microsoftReport({ original, mailFrom: 'billing@other.test', rcptTo: 'user-0@dest.test', to: FBL })
    expect(report.length).toBeGreaterThan(200_000)
    const reply = await send({ from: 'staff@hotmail.example', to: [FBL], data: report, localAddress: UNTRUSTED })
    expect(reply).toBe(`250 2.0.0 Ok: feedback report recorded for ${ids.other}`)
    await relay.waitForLog((l) => l.event === 'complaint' && l.queueId === ids.other, 5000)
    expect(sender(statsJson(), 'other.test')).toMatchObject({ delivered: 1, complaints: 1, warnings: [] })
    // Nothing of it stays in the spool.
    const spool = path.join(relay.dataDir, 'spool')
    expect(fs.existsSync(spool) ? fs.readdirSync(spool, { recursive: true }).filter((f) => !fs.statSync(path.join(spool, String(f))).isDirectory()) : []).toEqual([])
  }, 30_000)

  it('an unparseable report gets a 250 that says it was not recorded, and a warn line with the reason', async () => {
    const reply = await send({ from: 'fbl-sender@provider.test', to: [FBL], data: 'From: a@provider.test\r\nSubject: hello\r\nContent-Type: text/plain\r\n\r\nnot a report\r\n', localAddress: UNTRUSTED })
    expect(reply).toBe('250 2.0.0 Ok: feedback report not recorded, not a feedback report: Content-Type is text/plain (an ARF report is multipart/report; report-type=feedback-report)')
    const line = await relay.waitForLog((l) => l.event === 'complaint-unparsed', 5000)
    expect(line.level).toBe(40)
    expect(line.reason).toMatch(/^not a feedback report: Content-Type is text\/plain/)
    expect(sender(statsJson(), 'news.test')!.complaints).toBe(1)
  })

  it('the feedback address is not mixed with other recipients (it would relay): the second RCPT gets 452 4.5.3, also from a client that may relay', async () => {
    const { replies } = await sendMail(relay.port, { from: 'news@news.test', to: [FBL, 'user-9@dest.test'], data: message('news@news.test', 'user-9@dest.test', 'mixed'), helo: 'client.test' })
    expect(replies.at(-1)).toBe('452 4.5.3 Feedback reports go in a transaction of their own: send to <user-9@dest.test> separately')
  })

  it('relay stats prints tables with the warning marked; works on the stopped data directory; the warning is logged', async () => {
    const text = stats().stdout
    expect(text).toMatch(/^Reputation, last day \(since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ;/)
    // Blank lines between the tables are empty, not a single space.
    expect(text).not.toMatch(/^[ \t]+$/m)
    // news.test: 8 delivered, 2 bounced, 1 complaint.
    expect(text).toMatch(/^ ! news\.test +8 +0 +2 +20\.0% +1 +12\.5% +bad-mailbox 2$/m)
    expect(text).toMatch(/^ {3}other\.test +1 /m)
    expect(text).toMatch(/^! news\.test: bounce rate 20\.0% is above 5\.0% \(10 messages\)$/m)
    expect(text).toMatch(/^! news\.test: complaint rate 12\.5% is above 0\.3% \(10 messages\)$/m)
    expect(fs.existsSync(path.join(relay.dataDir, 'admin.json'))).toBe(true)
    const running = statsJson()
    // The API behind it: bad parameters are a 400 naming the parameter.
    const url = (JSON.parse(fs.readFileSync(path.join(relay.dataDir, 'admin.json'), 'utf8')) as { url: string }).url
    const week = await fetch(`${url}/api/stats?period=week`)
    expect([week.status, await week.json()]).toEqual([400, { error: "period: expected 'hour' or 'day', got 'week'" }])
    const events = await fetch(`${url}/api/events?type=complaint`)
    expect(((await events.json()) as { events: { type: string; queueId?: string; domain?: string }[] }).events).toEqual([
      expect.objectContaining({ type: 'complaint', queueId: ids.other, domain: 'other.test', text: 'abuse from Microsoft Junk Mail Reporting Program' }),
      expect.objectContaining({ type: 'complaint', queueId: ids.delivered[3], domain: 'news.test', text: 'abuse from Yahoo!-Mail-Feedback/2.0' }),
    ])
    expect((await fetch(`${url}/api/events?type=bogus`)).status).toBe(400)

    await relay.stop()
    expect(fs.existsSync(path.join(relay.dataDir, 'admin.json'))).toBe(false)
    const stopped = statsJson()
    expect(stopped.figures.senders).toEqual(running.figures.senders)
    expect(stopped.figures.warnings).toEqual(running.figures.warnings)
    expect(sender(stopped, 'news.test')).toMatchObject({ delivered: 8, bounced: 2, complaints: 1 })
    const hour = JSON.parse(stats('--period', 'hour', '--json').stdout) as StatsJson
    expect(hour.period).toBe('hour')
    expect(sender(hour, 'news.test')!.complaints).toBe(1)
    const bad = runCli(['stats', '--period', 'week', '--config', relay.configFile])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain("--period: expected 'hour' or 'day' (got 'week')")

    // The monitor checks shortly after start: one warn line per offending domain and rate.
    const before = relay.logs.length
    await relay.restart()
    const warning = await relay.waitForLog((l) => l.event === 'reputation-warning' && l.bounceRate !== undefined && relay.logs.indexOf(l) >= before, 15_000)
    expect(warning).toMatchObject({ level: 40, event: 'reputation-warning', senderDomain: 'news.test', bounceRate: 0.2, threshold: 0.05, volume: 10 })
    const complaint = await relay.waitForLog((l) => l.event === 'reputation-warning' && l.complaintRate !== undefined && relay.logs.indexOf(l) >= before, 5000)
    expect(complaint).toMatchObject({ senderDomain: 'news.test', complaintRate: 0.125, threshold: 0.003 })
    expect(relay.logs.slice(before).filter((l) => l.event === 'reputation-warning' && l.senderDomain !== 'news.test')).toEqual([])
  }, 60_000)

  it('with SMTP workers (config workers: 2) the monitor runs once: each warning is logged once, not once per process', async () => {
    const config = JSON.parse(fs.readFileSync(relay.configFile, 'utf8')) as Record<string, unknown>
    fs.writeFileSync(relay.configFile, JSON.stringify({ ...config, workers: 2 }))
    await relay.stop()
    const before = relay.logs.length
    await relay.restart()
    const since = (l: (typeof relay.logs)[number]) => relay.logs.indexOf(l) >= before
    await relay.waitForLog((l) => l.event === 'reputation-warning' && l.complaintRate !== undefined && since(l), 15_000)
    await new Promise((r) => setTimeout(r, 1500)) // any repeat from another process would be out by now
    const warnings = relay.logs.slice(before).filter((l) => l.event === 'reputation-warning')
    expect(warnings.map((w) => (w.bounceRate !== undefined ? 'bounce' : 'complaint')).sort()).toEqual(['bounce', 'complaint'])
  }, 60_000)
})
