// The reputation plugin's hooks with a stand-in operator API: feedback addresses accepted at RCPT,
// a report taken at DATA as a `handled` verdict (never queued), ordinary mail passed on, a failure
// to record a 451; and where its old core settings went.
import { Readable, Writable } from 'node:stream'
import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { MessageHeaders, type Complaint, type ComplaintResult, type Plugin, type RelayOperations } from '../../core/index.js'
import { parseConfig } from '../../core/config/load.js'
import reputation, { optionsSchema } from '../../plugins/reputation/index.js'
import { originalFromRelay, yahooReport } from './reports.js'

const FBL = 'fbl@feedback.test'
const plugin = reputation as Plugin

function capture() {
  const lines: Record<string, unknown>[] = []
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>)
      cb()
    },
  })
  return { log: pino({ level: 'info' }, stream), lines }
}

async function setUp(o: { mode?: 'start' | 'check'; record?: (c: Complaint) => Promise<ComplaintResult> } = {}) {
  const { log, lines } = capture()
  const complaints: Complaint[] = []
  const relay = {
    queue: {
      stats: async () => [],
      recordComplaint: async (c: Complaint) => {
        complaints.push(c)
        return o.record ? o.record(c) : { matched: true, queueId: 'Q1', sender: 'news@news.test', senderDomain: 'news.test' }
      },
    },
  } as unknown as RelayOperations
  const options = optionsSchema.parse({ feedbackAddresses: ['FBL@Feedback.test'] })
  const processes = { role: 'single' as const, handle: () => undefined, call: () => Promise.reject(new Error('no calls')) }
  const base = { log, options, hostname: 'relay.test', isLocalDomain: () => false, configDir: '/tmp', resolvePath: (f: string) => f, processes }
  const state = await plugin.setup!({ ...base, dataDir: '/tmp', mode: o.mode ?? 'start', relay: o.mode === 'check' ? undefined : relay } as never)
  const ctx = { ...base, state }
  return { ctx, lines, complaints, stop: () => plugin.teardown!(ctx as never) }
}

function dataCtx(recipients: string[], raw: string) {
  const split = raw.indexOf('\r\n\r\n')
  const headers = MessageHeaders.parse(raw.slice(0, split + 2))
  return {
    session: { id: 'S1', remoteAddress: '127.0.0.77' },
    envelope: { sender: { address: '', args: {} }, recipients: recipients.map((address) => ({ address, args: {} })) },
    headers,
    size: raw.length,
    readMessage: () => Readable.from([Buffer.from(raw, 'latin1')]),
    notes: { session: new Map(), message: new Map() },
  }
}

const report = () =>
  yahooReport({
    original: originalFromRelay({ queueId: 'BCDFGHJKLMNPQRST', relayHost: 'relay.test', from: 'news@news.test', to: 'user@dest.test', messageId: 'm1@news.test' }),
    mailFrom: 'news@news.test',
    rcptTo: 'user@dest.test',
    to: FBL,
  })

describe('reputation plugin', () => {
  it('options: addresses lower-cased; unknown keys refused', () => {
    expect(optionsSchema.parse({})).toEqual({ feedbackAddresses: [] })
    // The warning thresholds are the core's (config stats), shared with relay stats and the admin API.
    expect(optionsSchema.safeParse({ minVolume: 5 }).success).toBe(false)
    expect(optionsSchema.parse({ feedbackAddresses: ['A@B.test'] }).feedbackAddresses).toEqual(['a@b.test'])
    expect(optionsSchema.safeParse({ retention: '30d' }).success).toBe(false)
  })

  it('rcpt: accepts the feedback addresses (any case), passes on the rest', async () => {
    const { ctx, stop } = await setUp()
    const rcpt = (address: string, before: string[] = []) =>
      plugin.hooks!.rcpt!({ ...ctx, recipient: { address, args: {} }, isLocal: false, envelope: { sender: { address: '', args: {} }, recipients: before.map((a) => ({ address: a, args: {} })) }, notes: { session: new Map(), message: new Map() } } as never)
    expect(rcpt('fbl@FEEDBACK.test')).toMatchObject({ action: 'accept' })
    expect(rcpt('user@dest.test')).toBeUndefined()
    // A feedback address outside the local domains is not mixed with other recipients (it would relay).
    expect(rcpt('user@dest.test', [FBL])).toMatchObject({ action: 'tempfail', code: 452, status: '4.5.3' })
    expect(rcpt(FBL, ['user@dest.test'])).toMatchObject({ action: 'tempfail', code: 452, status: '4.5.3' })
    await stop()
  })

  it('data: a report is recorded and answered as handled; mixed recipients are ordinary mail', async () => {
    const { ctx, lines, complaints, stop } = await setUp()
    const data = (recipients: string[], raw: string) => plugin.hooks!.data!({ ...ctx, ...dataCtx(recipients, raw) } as never)
    expect(await data([FBL, 'user@dest.test'], report())).toBeUndefined()
    expect(await data([FBL], report())).toEqual({ action: 'accept', status: '2.0.0', message: 'Ok: feedback report recorded for Q1', handled: true })
    expect(complaints).toEqual([expect.objectContaining({ feedbackType: 'abuse', queueIds: ['BCDFGHJKLMNPQRST'], originalRcptTo: 'user@dest.test', userAgent: 'Yahoo!-Mail-Feedback/2.0' })])
    expect(lines.find((l) => l.event === 'complaint')).toMatchObject({ senderDomain: 'news.test', queueId: 'Q1', matched: true, destDomain: 'dest.test' })
    const unparsed = await data([FBL], 'Subject: hello\r\nContent-Type: text/plain\r\n\r\nnot a report\r\n')
    expect(unparsed).toMatchObject({ action: 'accept', handled: true, message: expect.stringMatching(/^Ok: feedback report not recorded, not a feedback report/) })
    await stop()
  })

  it('data: a failure to record is a 451, so the report comes again', async () => {
    const { ctx, lines, stop } = await setUp({ record: () => Promise.reject(new Error('database down')) })
    const verdict = await plugin.hooks!.data!({ ...ctx, ...dataCtx([FBL], report()) } as never)
    expect(verdict).toEqual({ action: 'tempfail', code: 451, status: '4.3.0', message: 'Feedback report could not be recorded, try again later' })
    expect(lines.some((l) => l.msg === 'recording a complaint failed')).toBe(true)
    await stop()
  })

  it("check mode: starts nothing and needs no running relay; the hooks pass", async () => {
    const { ctx, stop } = await setUp({ mode: 'check' })
    expect(ctx.state).toEqual({})
    expect(plugin.hooks!.rcpt!({ ...ctx, recipient: { address: FBL, args: {} } } as never)).toBeUndefined()
    await stop()
  })
})

describe('the old core settings', () => {
  const base = { hostname: 'relay.test', listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }] }
  it('a top-level reputation key is a config error naming the plugin and queue.retention', () => {
    expect(() => parseConfig({ ...base, reputation: { feedbackAddresses: [FBL] } } as never, '/tmp')).toThrow(/reputation: moved: .*plugin 'reputation'.*before content scanners.*queue\.retention/)
  })
  it('queue.retention: 30 days by default, for either driver', () => {
    expect(parseConfig(base as never, '/tmp').queue.retention).toBe(30 * 86_400_000)
    expect(parseConfig({ ...base, queue: { driver: 'sqlite', retention: '7d' } } as never, '/tmp').queue.retention).toBe(7 * 86_400_000)
  })
})
