// A route a deliver hook returns with a key no route has (`host` for `hosts`) or a value of the wrong
// kind (a port as text) is not followed some other way: the attempt is deferred with 4.3.5 naming the
// plugin and the key, and nothing reaches the domain's MX; a well-formed route is followed.
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { ROOT, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let mx: TestReceiver // 127.0.8.1: every domain's MX (A record)
let smarthost: TestReceiver // 127.0.8.2: where the routes point
let relay: RelayProcess

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.8.1', behaviour: { noStartTls: true } })
  smarthost = await startReceiver({ host: '127.0.8.2', behaviour: { noStartTls: true } })
  dns = await startDns({ 'good.test': { A: ['127.0.8.1'] }, 'typo.test': { A: ['127.0.8.1'] }, 'textport.test': { A: ['127.0.8.1'] }, 'mxhosts.test': { A: ['127.0.8.1'] }, 'smtpsocket.test': { A: ['127.0.8.1'] }, 'badhelo.test': { A: ['127.0.8.1'] }, 'badhost.test': { A: ['127.0.8.1'] } })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1h', factor: 1, max: '1h' }, connectTimeout: '2s', delayWarning: false },
      plugins: [
        [path.join(ROOT, 'test/fixtures/routes-by-domain.plugin.ts'), {
          routes: {
            'good.test': { hosts: ['127.0.8.2'], port: smarthost.port },
            'typo.test': { host: ['127.0.8.2'], port: smarthost.port },
            'textport.test': { hosts: ['127.0.8.2'], port: String(smarthost.port) },
            // Keys the kind would not use: the MX would get it, the hosts ignored; a socket ignored.
            'mxhosts.test': { kind: 'mx', hosts: ['127.0.8.2'], port: smarthost.port },
            'smtpsocket.test': { kind: 'smtp', hosts: ['127.0.8.2'], port: smarthost.port, socketPath: '/run/lmtp.sock' },
            // Text that goes into an SMTP command or a connect: a CR LF would end the command early.
            'badhelo.test': { hosts: ['127.0.8.2'], port: smarthost.port, helo: 'relay.example\r\nRSET' },
            'badhost.test': { hosts: ['127.0.8.2 \n'], port: smarthost.port },
          },
        }],
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
      ],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), mx?.close(), smarthost?.close()])
})

const send = (to: string) => sendMail(relay.port, { from: 'app@sender.test', to: [to], data: `From: app@sender.test\r\nTo: ${to}\r\nSubject: route to ${to}\r\n\r\nbody\r\n` })

describe('routes from a deliver hook', () => {
  it('a well-formed route is followed: the smarthost has the message, the MX nothing', async () => {
    await send('a@good.test')
    await smarthost.waitForMessages(1, 10_000)
    expect(smarthost.messages.some((m) => m.raw.toString().includes('Subject: route to a@good.test'))).toBe(true)
  })

  it("a route with 'host' for 'hosts', or a port as text, is deferred 4.3.5 naming the plugin and the key; neither the MX nor the smarthost gets it", async () => {
    await send('b@typo.test')
    await send('c@textport.test')
    const typo = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'b@typo.test', 10_000)
    expect(typo.response).toMatch(/^4\.3\.5 Route from routes-by-domain unusable: unknown key 'host' \(a route has: kind, hosts,/)
    const port = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'c@textport.test', 10_000)
    expect(port.response).toBe('4.3.5 Route from routes-by-domain unusable: port must be a whole number from 1 to 65535')
    await send('d@mxhosts.test')
    await send('e@smtpsocket.test')
    const mxHosts = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'd@mxhosts.test', 10_000)
    expect(mxHosts.response).toBe("4.3.5 Route from routes-by-domain unusable: kind 'mx' delivers to the domain's MX hosts, and hosts were given too (kind 'smtp' sends to them)")
    const socket = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'e@smtpsocket.test', 10_000)
    expect(socket.response).toBe("4.3.5 Route from routes-by-domain unusable: socketPath is for kind 'lmtp', not 'smtp'")
    await send('f@badhelo.test')
    await send('g@badhost.test')
    const helo = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'f@badhelo.test', 10_000)
    expect(helo.response).toMatch(/^4\.3\.5 Route from routes-by-domain unusable: helo must be a host name /)
    const host = await relay.waitForLog((l) => l.event === 'deferred' && l.recipient === 'g@badhost.test', 10_000)
    expect(host.response).toBe('4.3.5 Route from routes-by-domain unusable: hosts must be a list of host names or IP addresses (no spaces or control characters)')
    const all = [...mx.messages, ...smarthost.messages].map((m) => m.raw.toString())
    expect(all.some((t) => /Subject: route to (b@typo|c@textport|d@mxhosts|e@smtpsocket|f@badhelo|g@badhost)\.test/.test(t))).toBe(false)
    expect(mx.messages).toHaveLength(0)
  })
})
