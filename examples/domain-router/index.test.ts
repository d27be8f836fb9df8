import { afterAll, beforeAll, expect, it } from 'vitest'
import { startReceiver, startTestRelay, type TestReceiver, type TestRelay } from 'relay-mta/testing'

let gateway: TestReceiver
let t: TestRelay
beforeAll(async () => {
  gateway = await startReceiver() // the partner's gateway; partner.test itself has no DNS at all
  t = await startTestRelay({
    plugins: [[new URL('./index.ts', import.meta.url), { routes: { 'Partner.test': { host: '127.0.0.1', port: gateway.port } } }]],
    zones: { 'partner.test': 'NXDOMAIN' },
  })
})
afterAll(async () => {
  await t?.close()
  await gateway?.close()
})

it('sends the routed domain to its fixed host and other domains to their MX', async () => {
  const r = await t.send({ from: 'alice@sender.test', to: ['ann@partner.test', 'bob@example.test'] })
  expect(r.data).toBe(250)
  const [routed] = await gateway.waitForMessages(1, 10_000)
  expect(routed!.to).toEqual(['ann@partner.test'])
  const [byMx] = await t.receiver.waitForMessages(1, 10_000)
  expect(byMx!.to).toEqual(['bob@example.test'])
  await t.relay.waitForLog((l) => l.plugin === 'domain-router' && l.msg === 'routed' && l.domain === 'partner.test')
})
