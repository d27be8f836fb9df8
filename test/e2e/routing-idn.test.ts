// The routing plugin with internationalized domains: a `match` written with U-labels ('bücher.test')
// fits mail to that domain however the client spelt it (U-labels with SMTPUTF8, or A-labels), and
// mail from it; a pattern that is no domain is a config error naming the key (check-config exit 2).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { SMTPServer } from 'smtp-server'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw } from '../harness/smtp-client.js'
import { runCli, startRelay, tempDir, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let mx: TestReceiver // 127.0.8.1: the MX of every domain here (what a route that does not fit leaves the mail to)
let store: SMTPServer // LMTP on a unix socket
let sockPath: string
const stored: { from: string; to: string[] }[] = []
let relay: RelayProcess

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.8.1', behaviour: { noStartTls: true } })
  sockPath = path.join(tempDir('relay-lmtp-idn-'), 'lmtp.sock')
  store = new SMTPServer({
    lmtp: true,
    logger: false,
    disableReverseLookup: true,
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    onData(stream, session, cb) {
      stored.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address) })
      stream.on('data', () => undefined)
      stream.on('end', () => cb(null, 'saved'))
    },
  })
  await new Promise<void>((resolve) => store.listen(sockPath, resolve))
  dns = await startDns({
    'xn--bcher-kva.test': { A: ['127.0.8.1'] },
    'shop.xn--bcher-kva.test': { A: ['127.0.8.1'] },
    'dest.test': { A: ['127.0.8.1'] },
    'other.test': { A: ['127.0.8.1'] },
  })
  const lmtp = { kind: 'lmtp', socket: sockPath }
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1h', factor: 1, max: '1h' }, mtaSts: { enabled: false }, delayWarning: false },
      smtp: { trustedNetworks: ['127.0.0.0/8'], reverseLookup: false },
      plugins: [
        ['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }],
        [
          'routing',
          {
            routes: [
              { name: 'idn-rcpt', match: { domain: ['Bücher.test', '*.bücher.test'] }, ...lmtp },
              { name: 'idn-sender', match: { sender: 'münchen.test' }, ...lmtp },
              { name: 'idn-address', match: { sender: 'Chef@Köln.test' }, ...lmtp },
            ],
          },
        ],
      ],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await new Promise<void>((resolve) => (store ? store.close(() => resolve()) : resolve()))
  await Promise.all([dns?.close(), mx?.close()])
})

/** One message over a raw session (SMTPUTF8 when asked): the final reply. */
async function send(from: string, to: string, utf8 = false): Promise<string> {
  const { client } = await connectRaw(relay.port)
  try {
    expect(await client.command('EHLO client.test')).toMatch(/^250 /m)
    expect(await client.command(`MAIL FROM:<${from}>${utf8 ? ' SMTPUTF8' : ''}`)).toMatch(/^250 /)
    expect(await client.command(`RCPT TO:<${to}>`)).toMatch(/^250 /)
    expect(await client.command('DATA')).toMatch(/^354 /)
    return await client.command(`From: <${from}>\r\nTo: <${to}>\r\nSubject: idn route\r\n\r\nbody\r\n.`)
  } finally {
    client.close()
  }
}

const delivered = (recipient: string) => relay.waitForLog((l) => l.event === 'delivered' && l.recipient === recipient, 10_000)

describe('routing on internationalized domains', () => {
  it('a recipient domain pattern in U-labels fits the domain as U-labels (SMTPUTF8), as A-labels, and its subdomains', async () => {
    expect(await send('a@dest.test', 'u1@bücher.test', true)).toMatch(/^250 /)
    expect(await send('a@dest.test', 'u2@xn--bcher-kva.test')).toMatch(/^250 /)
    expect(await send('a@dest.test', 'u3@shop.bücher.test', true)).toMatch(/^250 /)
    for (const rcpt of ['u1@xn--bcher-kva.test', 'u2@xn--bcher-kva.test', 'u3@shop.xn--bcher-kva.test']) {
      const ev = await delivered(rcpt)
      expect({ route: ev.route, routeName: ev.routeName }).toEqual({ route: 'lmtp', routeName: 'idn-rcpt' })
    }
    // (smtp-server hands the store's recipients over in U-labels)
    expect(stored.flatMap((s) => s.to).sort()).toEqual(['u1@bücher.test', 'u2@bücher.test', 'u3@shop.bücher.test'])
    expect(mx.messages).toEqual([])
  })

  it('a sender domain or address pattern in U-labels fits the sender however it is spelt', async () => {
    expect(await send('k@münchen.test', 'v1@dest.test', true)).toMatch(/^250 /)
    expect(await send('k@xn--mnchen-3ya.test', 'v2@dest.test')).toMatch(/^250 /)
    // a UTF-8 local part keeps the domain in U-labels inside the relay: still the same domain
    expect(await send('jösé@münchen.test', 'v3@dest.test', true)).toMatch(/^250 /)
    expect(await send('chef@xn--kln-sna.test', 'v4@dest.test')).toMatch(/^250 /)
    for (const [rcpt, name] of [['v1@dest.test', 'idn-sender'], ['v2@dest.test', 'idn-sender'], ['v3@dest.test', 'idn-sender'], ['v4@dest.test', 'idn-address']]) {
      const ev = await delivered(rcpt!)
      expect({ rcpt, route: ev.route, routeName: ev.routeName }).toEqual({ rcpt, route: 'lmtp', routeName: name })
    }
    // another domain still goes to its MX
    expect(await send('k@other.test', 'v5@dest.test')).toMatch(/^250 /)
    expect((await delivered('v5@dest.test')).route).toBe('mx')
    expect(mx.messages.map((m) => m.to[0])).toEqual(['v5@dest.test'])
  })

  it('check-config takes the config (exit 0)', () => {
    const r = runCli(['check-config', '--config', relay.configFile])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toContain('config ok')
  })
})

describe('routing patterns that are no domain', () => {
  it('check-config and start exit 2 naming each key', () => {
    const dir = tempDir('relay-routing-idn-config-')
    const file = path.join(dir, 'relay.config.json')
    const lmtp = { kind: 'lmtp', socket: '/tmp/none.sock' }
    fs.writeFileSync(
      file,
      JSON.stringify({
        hostname: 'config.test',
        listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }],
        dataDir: path.join(dir, 'data'),
        log: { level: 'silent' },
        plugins: [
          [
            'routing',
            {
              routes: [
                { match: { domain: 'bü cher.test' }, ...lmtp },
                { match: { domain: ['ok.test', '.bücher.test'] }, ...lmtp },
                { match: { sender: 'a@@bücher.test' }, ...lmtp },
                { match: { domain: '/bücher/' }, ...lmtp },
                { kind: 'mx', helo: 'bad name ü' },
              ],
            },
          ],
        ],
      }),
    )
    for (const command of ['check-config', 'start']) {
      const r = runCli([command, '--config', file])
      expect(r.code, `${command}: ${r.stderr}`).toBe(2)
      expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(routing\) options\.routes\[0\]\.match\.domain\[0\]: 'bü cher\.test' is not a domain name: expected a domain like 'example\.com', '\*\.example\.com'/m)
      expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(routing\) options\.routes\[1\]\.match\.domain\[1\]: '\.bücher\.test' is not a domain: for the subdomains of bücher\.test write '\*\.bücher\.test' /m)
      expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(routing\) options\.routes\[2\]\.match\.sender\[0\]: 'a@@bücher\.test' is not an address/m)
      expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(routing\) options\.routes\[3\]\.match\.domain\[0\]: the regular expression \/bücher\/ is matched against the domain in its ASCII form/m)
      expect(r.stderr).toMatch(/^ {2}plugins\[0\] \(routing\) options\.routes\[4\]\.helo: 'bad name ü' is not a domain name/m)
    }
    fs.rmSync(dir, { recursive: true, force: true })
  })
})
