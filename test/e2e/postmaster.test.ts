// Mail to the relay's postmaster is always taken (RFC 5321 §4.5.1), from any client, with any
// sender, <> included: every form the relay knows as its postmaster (`<postmaster>`,
// `<postmaster@hostname>`, postmaster at a local domain, `<postmaster@[the address the client
// reached]>`) gets 250 at RCPT. A hard bounce from the mailbox behind it does not put it on the
// suppression list, `relay suppression add` will not, and an entry already there (written by an older
// relay) refuses nothing. The relay (hostname relay-a.test; local.test, local2.test) listens on
// 127.0.0.2 and [::1]; relay-acl trusts only 127.0.0.1, so 127.0.0.77 and ::1 are untrusted
// clients. Its local mailstore is a real server on 127.0.0.3.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import path from 'node:path'
import Database from 'better-sqlite3'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw, dotStuff } from '../harness/smtp-client.js'
import { eventually, runCliAsync, startRelay, type RelayProcess } from '../harness/relay.js'

const UNTRUSTED = '127.0.0.77'
const TRUSTED = '127.0.0.1'
const OK = /^250 /
const DENIED = /^550 5\.7\.1 Relaying denied/

let dns: TestDns
let mailstore: TestReceiver // 127.0.0.3: MX of local.test and local2.test; 550 5.1.1 to the addresses in `gone`
let relay: RelayProcess
let v6Port: number
const gone = new Set<string>()

const message = (subject: string) => `From: <someone@sender.test>\r\nTo: <postmaster@local.test>\r\nSubject: ${subject}\r\n\r\nHello postmaster.\r\n`

/** MAIL, every RCPT (whatever the replies), then DATA when `data` is given and a recipient was taken: the replies a client sees. */
async function transaction(o: { host?: string; port?: number; from?: string; mail: string; rcpts: string[]; data?: string }): Promise<{ rcpts: string[]; data?: string }> {
  const { client, greeting } = await connectRaw(o.port ?? relay.port, o.host ?? '127.0.0.2', 5000, undefined, o.from)
  try {
    expect(greeting).toMatch(/^220 /)
    expect(await client.command('EHLO client.test')).toMatch(/^250 /m)
    expect(await client.command(`MAIL FROM:<${o.mail}>`)).toMatch(/^250 /)
    const rcpts: string[] = []
    for (const to of o.rcpts) rcpts.push(await client.command(`RCPT TO:<${to}>`))
    if (o.data === undefined || !rcpts.some((r) => r.startsWith('250'))) return { rcpts }
    expect(await client.command('DATA')).toMatch(/^354 /)
    const end = client.read(10_000)
    client.send(dotStuff(o.data))
    return { rcpts, data: await end }
  } finally {
    client.close()
  }
}

/** The `n` messages with this Subject the mailstore took (each domain is a delivery of its own). */
const delivered = (subject: string, n = 1) =>
  eventually(() => {
    const got = mailstore.messages.filter((m) => m.raw.toString().includes(`\r\nSubject: ${subject}\r\n`))
    return got.length >= n ? got : undefined
  }, 15_000, `${n} delivery(ies) of '${subject}'`)
const cli = (...args: string[]) => runCliAsync([...args, '--config', relay.configFile])
const suppressed = async () => (JSON.parse((await cli('suppression', 'list', '--json')).stdout) as { address: string }[]).map((s) => s.address)

beforeAll(async () => {
  mailstore = await startReceiver({
    host: '127.0.0.3',
    behaviour: { noStartTls: true, reply: { rcpt: ({ address }) => (gone.has(address!.toLowerCase()) ? { code: 550, message: '5.1.1 no such user' } : undefined) } },
  })
  const mx = { MX: [{ exchange: 'mx.local.test', priority: 10 }] }
  dns = await startDns({ 'local.test': mx, 'local2.test': mx, 'mx.local.test': { A: ['127.0.0.3'] } })
  relay = await startRelay({
    config: {
      hostname: 'relay-a.test',
      localDomains: ['local.test', 'local2.test'],
      listen: [
        { host: '127.0.0.2', port: 0, role: 'mx' },
        { host: '::1', port: 0, role: 'mx' },
      ],
      dns: { servers: [dns.server], timeout: '1s' },
      // The suppression list as it is by default (on, 30 days).
      delivery: { port: mailstore.port, retry: { base: '1s', factor: 1, max: '1s' }, connectTimeout: '2s' },
      smtp: { reverseLookup: false, maxErrors: 1000 },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.1/32'] }]],
    },
  })
  v6Port = relay.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on') && l.host === '::1')!.port as number
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), mailstore?.close()])
})

describe("the relay's postmaster", () => {
  it('is taken in every form from any client, <> included, after a hard bounce from its mailbox; neither that bounce nor `relay suppression add` suppresses it, nor does an entry already on the list', async () => {
    // The mailstore has lost the postmaster mailbox for a while: mail to it bounces, 550 5.1.1.
    gone.add('postmaster@local.test')
    const first = await transaction({ from: TRUSTED, mail: '', rcpts: ['postmaster'], data: message('bounces') })
    expect(first.data).toMatch(/^250 2\.0\.0 Ok: queued as /)
    await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'postmaster@local.test', 15_000)
    gone.clear()

    // Every form of postmaster, from an untrusted client with the null sender, and from the trusted one.
    // A quoted local part that needs no quotes is the same mailbox (RFC 5321 §4.1.2).
    const forms = ['postmaster', 'PostMaster@Relay-A.test', '"postmaster"@relay-a.test', 'postmaster@local.test', 'Postmaster@LOCAL2.test']
    const untrusted = await transaction({ from: UNTRUSTED, mail: '', rcpts: forms })
    expect(untrusted.rcpts).toEqual(forms.map(() => expect.stringMatching(OK)))
    const trusted = await transaction({ from: TRUSTED, mail: 'alice@sender.test', rcpts: forms })
    expect(trusted.rcpts).toEqual(forms.map(() => expect.stringMatching(OK)))

    // The bounce put nothing on the list, and the operator cannot either (exit 1, nothing written).
    expect(relay.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('suppressed '))).toEqual([])
    expect(await suppressed()).toEqual([])
    for (const address of ['postmaster@relay-a.test', 'Postmaster@local.test', 'postmaster@local2.test']) {
      const added = await cli('suppression', 'add', address)
      expect(added.code, address).toBe(1)
      expect(added.stderr).toContain(`${address} is the relay's postmaster: mail to it is always taken (RFC 5321 §4.5.1), so it is never suppressed`)
    }
    expect(await suppressed()).toEqual([])
    // Another local mailbox is still suppressed by hand as before.
    expect((await cli('suppression', 'add', 'gone@local.test')).code).toBe(0)

    // Entries an older relay wrote (its bounce, an operator's add) are on the list: they refuse nothing.
    const db = new Database(path.join(relay.dataDir, 'queue.sqlite'))
    try {
      db.pragma('busy_timeout = 5000')
      const insert = db.prepare('INSERT INTO suppressions (address, reason, source, created_at, expires_at) VALUES (?, ?, ?, ?, NULL)')
      for (const address of ['postmaster@local.test', 'postmaster@local2.test', 'postmaster@relay-a.test']) insert.run(address, '550 5.1.1 no such user', 'cli', Date.now())
    } finally {
      db.close()
    }
    const again = await transaction({ from: UNTRUSTED, mail: '', rcpts: [...forms, 'gone@local.test'], data: message('to the postmaster') })
    expect(again.rcpts).toEqual([...forms.map(() => expect.stringMatching(OK)), '550 5.1.1 <gone@local.test>: recipient suppressed (added by hand)'])
    expect(again.data).toMatch(/^250 2\.0\.0 Ok: queued as /)
    // One copy per mailbox.
    const got = await delivered('to the postmaster', 2)
    expect(got.flatMap((m) => m.to.map((a) => a.toLowerCase())).sort()).toEqual(['postmaster@local.test', 'postmaster@local2.test'])
    // Nothing said "suppressed" about a postmaster.
    expect(relay.logs.filter((l) => l.msg === 'suppressed' && String(l.recipient).startsWith('postmaster'))).toEqual([])
  })

  it('at the address literal of the listener the client reached (IPv4 and IPv6, any spelling) is taken from an untrusted client; other mailboxes there and other literals are not', async () => {
    const v4 = await transaction({
      from: UNTRUSTED,
      mail: '',
      rcpts: ['postmaster@[127.0.0.2]', 'user@[127.0.0.2]', 'postmaster@[127.0.0.9]', 'Postmaster@[IPv6:::ffff:127.0.0.2]', '"Postmaster"@[127.0.0.2]', '"user"@[127.0.0.2]'],
      data: message('to the postmaster at [127.0.0.2]'),
    })
    expect(v4.rcpts).toEqual([expect.stringMatching(OK), expect.stringMatching(DENIED), expect.stringMatching(DENIED), expect.stringMatching(OK), expect.stringMatching(OK), expect.stringMatching(DENIED)])
    expect(v4.data).toMatch(/^250 2\.0\.0 Ok: queued as /)
    const [v4got] = await delivered('to the postmaster at [127.0.0.2]')
    // One copy: the literal's postmaster is the postmaster mailbox, however spelt.
    expect(v4got!.to).toEqual(['postmaster@local.test'])

    // ::1 is not in relay-acl's trusted networks either.
    const v6 = await transaction({
      host: '::1',
      port: v6Port,
      mail: 'someone@sender.test',
      rcpts: ['postmaster@[IPv6:::1]', 'postmaster@[ipv6:0:0:0:0:0:0:0:1]', 'user@[IPv6:::1]', 'postmaster@[IPv6:::2]'],
      data: message('to the postmaster at [IPv6:::1]'),
    })
    expect(v6.rcpts).toEqual([expect.stringMatching(OK), expect.stringMatching(OK), expect.stringMatching(DENIED), expect.stringMatching(DENIED)])
    expect(v6.data).toMatch(/^250 2\.0\.0 Ok: queued as /)
    const [v6got] = await delivered('to the postmaster at [IPv6:::1]')
    expect(v6got!.to).toEqual(['postmaster@local.test'])
  })
})
