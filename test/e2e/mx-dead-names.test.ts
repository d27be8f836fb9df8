// MX host names without addresses (NXDOMAIN, no A/AAAA) take no place among the names looked up:
// ten dead names at a better preference do not hide a working backup MX, nor dead names a working
// host among equals; DNS work stays bounded (at most 25 names asked) for a zone of hundreds of them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let good: TestReceiver // 127.0.35.2: the only MX host with an address
let relay: RelayProcess

const dead = (n: number, preference: number, prefix = 'old') => Array.from({ length: n }, (_, i) => ({ exchange: `${prefix}${i}.dead.test`, priority: preference }))
const message = (subject: string) => `From: <a@sender.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\n\r\nhello\r\n`

beforeAll(async () => {
  good = await startReceiver({ host: '127.0.35.2', port: 0, behaviour: { noStartTls: true } })
  dns = await startDns({
    'good.mx.test': { A: ['127.0.35.2'] },
    // old*.dead.test are in no zone: NXDOMAIN; nodata*.dead.test exist without addresses.
    ...Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`nodata${i}.dead.test`, { TXT: ['x'] }])),
    'backup.test': { MX: [...dead(10, 10), ...dead(5, 10, 'nodata'), { exchange: 'good.mx.test', priority: 20 }] },
    'equals.test': { MX: [...dead(24, 10), { exchange: 'good.mx.test', priority: 10 }] },
    'hostile.test': { MX: [...dead(200, 10, 'h'), { exchange: 'good.mx.test', priority: 20 }] },
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      smtp: { reverseLookup: false, trustedNetworks: ['127.0.0.0/8'] },
      delivery: { port: good.port, mtaSts: { enabled: false }, delayWarning: false, connectTimeout: '1s', retry: { base: '1s', factor: 1, max: '1s' } },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, good].map((x) => x?.close()))
})

describe('MX names without addresses', () => {
  it('delivers to the backup MX behind fifteen better-preference names that do not resolve', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@backup.test'], data: message('behind dead names') })
    const delivered = await relay.waitForLog((l) => l.recipient === 'u@backup.test' && ['delivered', 'bounced', 'deferred'].includes(l.event as string), 15_000)
    expect(delivered.event, String(delivered.response)).toBe('delivered')
    expect(good.messages.some((m) => m.to.includes('u@backup.test'))).toBe(true)
  })

  it('delivers to the one working host among 25 of equal preference, every time', async () => {
    const to = Array.from({ length: 3 }, (_, i) => `u${i}@equals.test`)
    // One message each: every delivery job resolves (or reshuffles) the MX set anew.
    for (const r of to) await sendMail(relay.port, { from: 'a@sender.test', to: [r], data: message(`equal ${r}`) })
    for (const r of to) {
      const e = await relay.waitForLog((l) => l.recipient === r && ['delivered', 'bounced', 'deferred'].includes(l.event as string), 15_000)
      expect(e.event, `${r}: ${e.response}`).toBe('delivered')
    }
  })

  it('asks DNS about at most 25 MX names of a zone publishing 200 dead ones, and bounces 5.4.4', async () => {
    await sendMail(relay.port, { from: 'a@sender.test', to: ['u@hostile.test'], data: message('hostile zone') })
    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'u@hostile.test', 15_000)
    expect(bounced.response).toMatch(/^5\.4\.4 No address found for the MX hosts of hostile\.test \(.*, \.\.\. 201 in all, 25 looked up\): no such hosts/)
    const asked = new Set(dns.queries.filter((q) => /^h\d+\.dead\.test$/.test(q.name)).map((q) => q.name))
    expect(asked.size).toBe(25)
    expect(good.messages.some((m) => m.to.includes('u@hostile.test'))).toBe(false)
  })
})
