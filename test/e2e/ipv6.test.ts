// IPv6 end to end, as an operator writes it and a client sees it: listeners given as '[::1]'
// (bracketed, as Postfix writes IPv6 hosts) bind and are shown as [v6]:port; a client's reverse
// name (ip6.arpa PTR) counts only when it resolves back to the client (forward-confirmed, as
// Postfix's `unknown[ip]`); an address literal is one destination however it is spelled
// ([IPv6:::1], [IPv6:0:0:0:0:0:0:0:1]; [IPv6:::ffff:127.0.0.1] is [127.0.0.1]).
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, rcptReply, sendMail } from '../harness/smtp-client.js'
import { eventually, runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

const ENV = { RELAY_CONFIG: undefined, RELAY_SYSTEM_CONFIG_DIR: tempDir('relay-etc-empty-') }
/** The PTR name of ::1. */
const ARPA_V6_LOOPBACK = `1.${'0.'.repeat(31)}ip6.arpa`

function checkConfig(listen: Record<string, unknown>[]) {
  const dir = tempDir('relay-ipv6-cfg-')
  const file = path.join(dir, 'relay.config.json')
  fs.writeFileSync(file, JSON.stringify({ hostname: 'relay.test', listen, dataDir: path.join(dir, 'data'), log: { level: 'silent' } }))
  return runCli(['check-config', '--config', file], { env: ENV })
}

describe('IPv6 listen addresses', () => {
  const relays: RelayProcess[] = []
  afterAll(async () => {
    for (const r of relays) await r.stop()
  })

  it("'[::1]' (bracketed) binds on ::1, and listeners are shown as [::1]:port", async () => {
    const ok = checkConfig([
      { host: '[::1]', port: 37531, role: 'mx' },
      { host: '::', port: 37532, role: 'mx' },
    ])
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toContain('  listen [::1]:37531 (mx')
    expect(ok.stdout).toContain('  listen [::]:37532 (mx')

    for (const host of ['[::1]']) {
      const relay = await startRelay({ config: { listen: [{ host, port: 0, role: 'mx' }] } })
      relays.push(relay)
      const line = relay.logs.find((l) => String(l.msg).startsWith('listening on'))!
      expect(line.msg).toBe(`listening on [::1]:${relay.port} (mx)`)
      const { client, greeting } = await connectRaw(relay.port, '::1')
      client.close()
      expect(greeting).toMatch(/^220 relay\.test/)
    }
  })

  it('a malformed IPv6 address is named as one, not as "more than one \':\'"; \'[IPv6:::1]\' says how to write it', () => {
    const tagged = checkConfig([{ host: '[IPv6:::1]', port: 37533, role: 'mx' }])
    expect(tagged.code).toBe(2)
    expect(tagged.stderr).toContain("listen[0].host: expected a host name or IP address: an IPv6 address is written without 'IPv6:' (that is the form in mail addresses), like '[::1]'")
    for (const host of ['::g', '1::2::3', 'fd00:::1']) {
      const r = checkConfig([{ host, port: 37534, role: 'mx' }])
      expect(r.code).toBe(2)
      expect(r.stderr).toContain(`listen[0].host: expected a host name or IP address: '${host}' is not a valid IPv6 address`)
    }
  })
})

describe('the reverse name of an IPv6 client (ip6.arpa)', () => {
  let dns: TestDns
  let rx: TestReceiver
  let relay: RelayProcess
  beforeAll(async () => {
    rx = await startReceiver({ host: '::1' })
    dns = await startDns({ 'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] }, 'mx.dest.test': { AAAA: ['::1'] } })
    relay = await startRelay({
      config: {
        listen: [{ host: '::1', port: 0, role: 'mx' }],
        smtp: { reverseLookup: true },
        dns: { servers: [dns.server] },
        delivery: { port: rx.port },
        plugins: [['relay-acl', { trustedNetworks: ['::1/128'] }]],
      },
    })
  }, 30_000)
  afterAll(async () => {
    await relay?.stop()
    await rx?.close()
    await dns?.close()
  })

  const receivedFor = async (subject: string) => {
    await sendMail(relay.port, { host: '::1', helo: 'client.test', from: 'a@sender.test', to: ['b@dest.test'], data: `Subject: ${subject}\r\n\r\nhi\r\n` })
    const m = await eventually(() => rx.messages.find((x) => x.raw.toString().includes(`Subject: ${subject}`)), 10_000, subject)
    return /^Received: (.*)$/m.exec(m.raw.toString())![1]!
  }

  it('counts only when the name resolves back to the client (FCrDNS), as Postfix does', async () => {
    // A PTR record says what its address owner likes: a name whose AAAA is not ::1 is no name.
    dns.set(ARPA_V6_LOOPBACK, { PTR: ['mail.forged.test'] })
    dns.set('mail.forged.test', { AAAA: ['fd00::99'], A: ['127.0.0.1'] })
    expect(await receivedFor('forged')).toBe('from client.test ([IPv6:::1])')

    dns.set(ARPA_V6_LOOPBACK, { PTR: ['mail.client.test'] })
    dns.set('mail.client.test', { AAAA: ['0:0:0:0:0:0:0:1'] })
    expect(await receivedFor('confirmed')).toBe('from client.test (mail.client.test [IPv6:::1])')
    // The log line may reach stdout after the delivery.
    const accepted = await eventually(() => relay.logs.filter((l) => l.event === 'accepted').length === 2 && relay.logs.filter((l) => l.event === 'accepted'), 5000, 'two accepted lines')
    expect(accepted.map((l) => l.clientHostname)).toEqual(['[::1]', 'mail.client.test'])
  })
})

describe('IPv6 address literals in recipients', () => {
  let relay: RelayProcess
  beforeAll(async () => {
    relay = await startRelay({ config: { listen: [{ host: '::1', port: 0, role: 'mx' }], plugins: [['relay-acl', { trustedNetworks: ['::1/128'] }]] } })
  }, 30_000)
  afterAll(async () => {
    await relay?.stop()
  })

  const rcpt = (to: string) => rcptReply(relay.port, to, { host: '::1' })

  it('are one address however the literal is spelled (a suppression holds for every spelling)', async () => {
    const added = runCli(['suppression', 'add', 'gone@[IPv6:::1]', '--reason', 'gone', '--config', relay.configFile])
    expect(added.code, added.stderr).toBe(0)
    const added4 = runCli(['suppression', 'add', 'gone@[127.0.0.1]', '--reason', 'gone', '--config', relay.configFile])
    expect(added4.code, added4.stderr).toBe(0)
    for (const to of ['gone@[IPv6:::1]', 'gone@[ipv6:0:0:0:0:0:0:0:1]', 'gone@[IPv6:0000::0001]', 'gone@[127.0.0.1]', 'gone@[IPv6:::FFFF:127.0.0.1]', 'gone@[IPv6:::ffff:7f00:1]']) {
      expect(await rcpt(to), to).toMatch(/^550 5\.1\.1 .*recipient suppressed/)
    }
    expect(await rcpt('gone@[IPv6:::2]')).toMatch(/^250 /)
    // `relay suppression add|remove` take any spelling too.
    expect(runCli(['suppression', 'add', 'Other@[IPv6:0:0:0:0:0:0:0:1]', '--config', relay.configFile]).code).toBe(0)
    expect(await rcpt('other@[IPv6:::1]')).toMatch(/^550 5\.1\.1 .*recipient suppressed/)
    const removed = runCli(['suppression', 'remove', 'other@[IPv6:0::1]', '--config', relay.configFile])
    expect(removed.stdout).toContain('removed other@[ipv6:::1]')
    expect(await rcpt('other@[IPv6:::1]')).toMatch(/^250 /)
  })
})
