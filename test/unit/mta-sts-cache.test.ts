// core/delivery/mta-sts.ts keeps what it learnt per recipient domain (a policy, or "none here, do
// not ask again for a while"). Recipient domains are whatever senders write, so that memory must be
// bounded: a relay sending to ever new domains (bounces to forged senders, a bulk list) kept one
// entry per domain for the life of the process. Real DNS (loopback) and a real HTTPS policy server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import https from 'node:https'
import { Resolver } from 'node:dns/promises'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { makeCa } from '../harness/tls.js'
import { MtaSts } from '../../core/delivery/mta-sts.js'

let dns: TestDns
let policyServer: https.Server
let connectTo: string
let ca: Buffer
const resolver = new Resolver({ timeout: 1000, tries: 1 })

beforeAll(async () => {
  const testCa = makeCa()
  ca = testCa.caPem
  const cert = testCa.issue(['mta-sts.kept.test'])
  policyServer = https.createServer({ key: fs.readFileSync(cert.key), cert: fs.readFileSync(cert.cert) }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('version: STSv1\nmode: enforce\nmx: mx.kept.test\nmax_age: 86400\n')
  })
  await new Promise<void>((resolve) => policyServer.listen(0, '127.0.0.1', resolve))
  connectTo = `127.0.0.1:${(policyServer.address() as { port: number }).port}`
  dns = await startDns({ '_mta-sts.kept.test': { TXT: ['v=STSv1; id=20260101T000000'] } })
  resolver.setServers([dns.server])
})

afterAll(async () => {
  policyServer?.close()
  await dns?.close()
})

describe('MTA-STS policy cache', () => {
  it('stays within its bound however many distinct domains are asked, and keeps an enforce policy over "no record" answers', async () => {
    const sts = new MtaSts({ resolver, timeoutMs: 2000, connectTo, ca: [ca], maxCached: 50 })
    expect((await sts.lookup('kept.test')).policy?.mode).toBe('enforce')
    // Bounded in count: 300 domains without a record, 20 at a time.
    for (let i = 0; i < 300; i += 20) {
      const found = await Promise.all(Array.from({ length: 20 }, (_, j) => sts.lookup(`none${i + j}.test`)))
      for (const f of found) expect(f.policy).toBeUndefined()
    }
    expect(sts.size).toBeLessThanOrEqual(50)
    // The enforce policy is still cached: answered without asking DNS again.
    const asked = dns.queries.filter((q) => q.name === '_mta-sts.kept.test').length
    expect((await sts.lookup('kept.test')).policy?.mode).toBe('enforce')
    expect(dns.queries.filter((q) => q.name === '_mta-sts.kept.test').length).toBe(asked)
    // A recent "no record" answer is still remembered too (the newest entries stay).
    const before = dns.queries.length
    expect((await sts.lookup('none299.test')).policy).toBeUndefined()
    expect(dns.queries.length).toBe(before)
  })
})
