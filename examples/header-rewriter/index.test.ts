import { afterAll, beforeAll, expect, it } from 'vitest'
import { buildMessage, startTestRelay, type TestRelay } from 'relay-mta/testing'

let t: TestRelay
beforeAll(async () => {
  t = await startTestRelay({
    plugins: [[new URL('./index.ts', import.meta.url), { set: { 'X-Relayed-By': 'relay.test' } }]],
    config: { localDomains: ['local.test'] },
    zones: { 'local.test': { MX: [{ exchange: 'mx.example.test', priority: 10 }] } }, // the same receiver
  })
})
afterAll(() => t?.close())

const internal = { 'X-Internal-Ticket': 'OPS-1234', 'x-internal-route': 'backend-7', 'X-Mailer': 'kept' }
const headerNames = (raw: Buffer) => raw.toString('latin1').split('\r\n\r\n')[0]!.split('\r\n').map((l) => l.split(':')[0]!.toLowerCase())

it('strips X-Internal-* and sets X-Relayed-By on mail to another domain, not on local mail', async () => {
  const out = await t.send({ from: 'alice@local.test', to: 'bob@example.test', data: buildMessage({ from: 'alice@local.test', to: 'bob@example.test', subject: 'out', headers: internal }) })
  expect(out.data).toBe(250)
  const local = await t.send({ from: 'alice@local.test', to: 'carol@local.test', data: buildMessage({ from: 'alice@local.test', to: 'carol@local.test', subject: 'in', headers: internal }) })
  expect(local.data).toBe(250)

  const messages = await t.receiver.waitForMessages(2, 10_000)
  const outbound = messages.find((m) => m.to[0] === 'bob@example.test')!
  expect(headerNames(outbound.raw)).not.toContain('x-internal-ticket')
  expect(headerNames(outbound.raw)).not.toContain('x-internal-route')
  expect(outbound.raw.toString('latin1')).toContain('\r\nX-Mailer: kept\r\n')
  expect(outbound.raw.toString('latin1')).toContain('\r\nX-Relayed-By: relay.test\r\n')
  const inbound = messages.find((m) => m.to[0] === 'carol@local.test')!
  expect(headerNames(inbound.raw)).toEqual(expect.arrayContaining(['x-internal-ticket', 'x-internal-route']))
  expect(headerNames(inbound.raw)).not.toContain('x-relayed-by')
})
