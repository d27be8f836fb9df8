// ESMTP semantics a client relies on, as Postfix and the RFCs have them: internationalized domains
// (A-labels and, with SMTPUTF8, U-labels) are taken and routed by their ASCII form; a recipient given
// twice keeps every notification either RCPT asked for; message data sent before the 354 reply
// (improper pipelining, RFC 2920) closes the session instead of running the data as commands;
// DSN parameters a next hop would refuse, AUTH= where AUTH is not offered, and a UTF-8 mailbox
// without SMTPUTF8 are refused at once; a SMTPUTF8 transaction is `with UTF8SMTP` in the Received
// field (RFC 6531 §3.7.3); NOTIFY=SUCCESS gets a success report where no next hop takes it on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { connectRaw } from '../harness/smtp-client.js'
import { eventually, startRelay, type RelayProcess } from '../harness/relay.js'

let dns: TestDns
let mx: TestReceiver // 127.0.5.1: takes everything (dest.test, the IDN domains)
let refusing: TestReceiver // 127.0.5.2: 550 5.1.1 for every recipient (bad.test)
let senderMx: TestReceiver // 127.0.5.3: sender.test, where DSNs arrive
let dsnMx: TestReceiver // 127.0.5.4: offers DSN (dsn.test): NOTIFY goes on to it
let relay: RelayProcess

beforeAll(async () => {
  mx = await startReceiver({ host: '127.0.5.1', behaviour: { noStartTls: true } })
  refusing = await startReceiver({ host: '127.0.5.2', port: mx.port, behaviour: { noStartTls: true, reply: { rcpt: () => ({ code: 550, message: '5.1.1 No such user' }) } } })
  senderMx = await startReceiver({ host: '127.0.5.3', port: mx.port, behaviour: { noStartTls: true } })
  dsnMx = await startReceiver({ host: '127.0.5.4', port: mx.port, behaviour: { noStartTls: true }, serverOptions: { hideDSN: false } })
  dns = await startDns({
    'dest.test': { A: ['127.0.5.1'] },
    // bücher.test and münchen.test exist in DNS only by their A-labels.
    'xn--bcher-kva.test': { A: ['127.0.5.1'] },
    'xn--mnchen-3ya.test': { A: ['127.0.5.1'] },
    'bad.test': { A: ['127.0.5.2'] },
    'sender.test': { A: ['127.0.5.3'] },
    'dsn.test': { A: ['127.0.5.4'] },
  })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: mx.port, retry: { base: '1h', factor: 1, max: '1h' }, mtaSts: { enabled: false }, delayWarning: false },
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    },
  })
}, 30_000)

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns?.close(), mx?.close(), refusing?.close(), senderMx?.close(), dsnMx?.close()])
})

/** A session after EHLO. */
async function session() {
  const { client } = await connectRaw(relay.port)
  expect(await client.command('EHLO client.test')).toMatch(/^250 /m)
  return client
}

const message = (subject: string) => `From: a@sender.test\r\nTo: x@dest.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\n\r\nbody\r\n.`

describe('ESMTP semantics', () => {
  it('internationalized domains: A-labels always, U-labels with SMTPUTF8, routed and logged by their ASCII form', async () => {
    const c = await session()
    expect(await c.command('MAIL FROM:<a@xn--mnchen-3ya.test> SMTPUTF8')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<u@xn--bcher-kva.test>')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<v@bücher.test>')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<w@mail.xn--bcher-kva.test>')).toMatch(/^250 /)
    expect(await c.command('DATA')).toMatch(/^354 /)
    const done = await c.command(message('idn'))
    expect(done).toMatch(/^250 /)
    c.close()
    const accepted = await relay.waitForLog((l) => l.event === 'accepted' && l.messageId === '<idn@sender.test>', 5000)
    expect(accepted.sender).toBe('a@xn--mnchen-3ya.test')
    expect(accepted.recipients).toEqual(['u@xn--bcher-kva.test', 'v@xn--bcher-kva.test', 'w@mail.xn--bcher-kva.test'])
    await eventually(() => relay.logs.filter((l) => l.event === 'delivered' && l.messageId === '<idn@sender.test>').length === 2, 10_000, 'u and v delivered')
    // mail.xn--bcher-kva.test has no address: a DNS failure for that domain alone.
    const bounced = await relay.waitForLog((l) => l.event === 'bounced' && l.recipient === 'w@mail.xn--bcher-kva.test', 10_000)
    expect(bounced.response).toMatch(/does not exist|no MX, A or AAAA/)
    // The transaction had SMTPUTF8: the Received field says so (RFC 6531 §3.7.3).
    const got = mx.messages.find((m) => m.raw.toString().includes('Subject: idn'))!
    expect(got.raw.toString()).toMatch(/by relay\.test \(Relay\) with UTF8SMTP id /)
  })

  it('REQUIRETLS is not offered: 555 5.5.4 like any unknown parameter, also in plain text (not 530 "not permitted on non-TLS")', async () => {
    const { client } = await connectRaw(relay.port)
    await client.command('EHLO client.test')
    expect(await client.command('MAIL FROM:<a@client.test> REQUIRETLS')).toMatch(/^555 5\.5\.4 .*REQUIRETLS/)
    expect(await client.command('MAIL FROM:<a@client.test> REQUIRETLS=yes')).toMatch(/^555 5\.5\.4 /)
    expect(await client.command('MAIL FROM:<a@client.test>')).toMatch(/^250 /)
    client.close()
  })

  it('a UTF-8 mailbox needs SMTPUTF8 on MAIL (553 5.6.7, RFC 6531 §3.4); an internationalized domain alone does not', async () => {
    const c = await session()
    expect(await c.command('MAIL FROM:<jösé@sender.test>')).toMatch(/^553 5\.6\.7 Must declare SMTPUTF8/)
    expect(await c.command('MAIL FROM:<a@sender.test>')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<ünï@dest.test>')).toMatch(/^553 5\.6\.7 Must declare SMTPUTF8/)
    expect(await c.command('RCPT TO:<u@bücher.test>')).toMatch(/^250 /)
    expect(await c.command('RSET')).toMatch(/^250 /)
    expect(await c.command('MAIL FROM:<jösé@sender.test> SMTPUTF8')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<ünï@dest.test>')).toMatch(/^250 /)
    c.close()
  })

  it('a recipient given twice keeps every notification either RCPT asked for, in either order', async () => {
    for (const [first, second, sender] of [
      ['RCPT TO:<X@bad.test> NOTIFY=FAILURE', 'RCPT TO:<x@bad.test> NOTIFY=NEVER', 'dup1@sender.test'],
      ['RCPT TO:<y@bad.test> NOTIFY=NEVER', 'RCPT TO:<y@bad.test> NOTIFY=FAILURE', 'dup2@sender.test'],
    ] as const) {
      const c = await session()
      expect(await c.command(`MAIL FROM:<${sender}>`)).toMatch(/^250 /)
      expect(await c.command(first)).toMatch(/^250 /)
      expect(await c.command(second)).toMatch(/^250 /)
      expect(await c.command('DATA')).toMatch(/^354 /)
      expect(await c.command(message(`twice ${sender}`))).toMatch(/^250 /)
      c.close()
      // Refused by bad.test's MX: the bounce the FAILURE asked for reaches the sender.
      await eventually(() => senderMx.messages.some((m) => m.to.includes(sender)), 10_000, `a DSN to ${sender}`)
      expect(senderMx.messages.find((m) => m.to.includes(sender))!.raw.toString()).toMatch(/Action: failed/)
    }
    // One delivery per address: the duplicate was merged, not sent twice (its line may trail the DSN).
    const bounced = () => relay.logs.filter((l) => l.event === 'bounced' && /^[xX]@bad\.test$/.test(String(l.recipient)))
    await eventually(() => bounced().length > 0, 5000, 'the bounced line')
    expect(bounced()).toHaveLength(1)
  })

  it('one mailbox in several spellings (U-label, A-label, upper case) is one recipient: one queue row, one copy, one delivered line', async () => {
    const c = await session()
    expect(await c.command('MAIL FROM:<spell@sender.test> SMTPUTF8')).toMatch(/^250 /)
    for (const rcpt of ['u@bücher.test', 'u@xn--bcher-kva.test', 'U@BÜCHER.test', 'u@XN--BCHER-KVA.TEST']) expect(await c.command(`RCPT TO:<${rcpt}>`), rcpt).toMatch(/^250 /)
    expect(await c.command('DATA')).toMatch(/^354 /)
    const reply = await c.command(message('one mailbox, four spellings'))
    expect(reply).toMatch(/^250 /)
    c.close()
    const id = /queued as (\w+)/.exec(reply)![1]!
    const delivered = () => relay.logs.filter((l) => l.event === 'delivered' && l.queueId === id)
    await eventually(() => delivered().length > 0, 10_000, 'the delivered line')
    await new Promise((r) => setTimeout(r, 300))
    expect(delivered()).toHaveLength(1)
    const got = mx.messages.filter((m) => m.raw.toString().includes('one mailbox, four spellings'))
    expect(got).toHaveLength(1)
    expect(got[0]!.to).toHaveLength(1)
  })

  it('NOTIFY=SUCCESS: a next hop without DSN gets the mail and the sender a "relayed" report; one with DSN gets NOTIFY and the report is its to send', async () => {
    for (const [rcpt, sender] of [['s1@dest.test', 'succ1@sender.test'], ['s2@dsn.test', 'succ2@sender.test']] as const) {
      const c = await session()
      expect(await c.command(`MAIL FROM:<${sender}>`)).toMatch(/^250 /)
      expect(await c.command(`RCPT TO:<${rcpt}> NOTIFY=SUCCESS,FAILURE`)).toMatch(/^250 /)
      expect(await c.command('DATA')).toMatch(/^354 /)
      expect(await c.command(message(`success ${sender}`))).toMatch(/^250 /)
      c.close()
      await relay.waitForLog((l) => l.event === 'delivered' && l.recipient === rcpt, 10_000)
    }
    await eventually(() => senderMx.messages.some((m) => m.to.includes('succ1@sender.test')), 10_000, 'the success report for s1')
    const report = senderMx.messages.find((m) => m.to.includes('succ1@sender.test'))!.raw.toString().replace(/\r\n[ \t]+/g, ' ')
    expect(report).toMatch(/^Subject: Successful Mail Delivery Report$/m)
    expect(report).toMatch(/Action: relayed/)
    expect(report).toMatch(/Final-Recipient: rfc822; s1@dest\.test/)
    expect(dsnMx.messages.find((m) => m.to.includes('s2@dsn.test'))!.rcptParams[0]).toMatchObject({ NOTIFY: 'SUCCESS,FAILURE' })
    // Give a stray report for s2 time to arrive: none may.
    await new Promise((r) => setTimeout(r, 1000))
    expect(senderMx.messages.some((m) => m.to.includes('succ2@sender.test'))).toBe(false)
  })

  it('message data sent before the 354 reply closes the session with 554 5.5.0; none of it runs as commands', async () => {
    const { client } = await connectRaw(relay.port)
    // The recipient is refused, so DATA fails; the "body" holds a second transaction.
    client.send('EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<nobody@x..test>\r\nDATA\r\nMAIL FROM:<smuggled@sender.test>\r\nRCPT TO:<s@dest.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\nQUIT\r\n')
    const replies: string[] = []
    for (;;) {
      const r = await client.read(5000).catch(() => undefined)
      if (r === undefined) break
      replies.push(r.split('\r\n').at(-2) ?? r)
    }
    await client.closed
    expect(replies.at(-1)).toMatch(/^554 5\.5\.0 Improper pipelining/)
    expect(replies.some((r) => /^354 /.test(r))).toBe(false)
    await relay.waitForLog((l) => /improper pipelining/.test(String(l.msg)), 5000)
    expect(relay.logs.some((l) => l.event === 'accepted' && l.sender === 'smuggled@sender.test')).toBe(false)
  })

  it('DATA and RSET take no argument (RFC 5321 §4.1.1.4/5): 501 5.5.4 Syntax, the transaction kept; DATA with one and bytes after it is improper pipelining', async () => {
    const c = await session()
    expect(await c.command('RSET foo')).toBe('501 5.5.4 Syntax: RSET')
    expect(await c.command('MAIL FROM:<args@sender.test>')).toMatch(/^250 /)
    expect(await c.command('DATA now')).toMatch(/^503 /) // no recipient yet: that comes first, as in Postfix
    expect(await c.command('RCPT TO:<args@dest.test>')).toMatch(/^250 /)
    expect(await c.command('DATA foo')).toBe('501 5.5.4 Syntax: DATA')
    // Nothing was lost: the next DATA (trailing spaces are no argument) takes the message.
    expect(await c.command('DATA  ')).toMatch(/^354 /)
    expect(await c.command(message('data with an argument first'))).toMatch(/^250 2\.0\.0 /)
    expect(await c.command('NOOP anything')).toMatch(/^250 /) // NOOP and QUIT may have one
    // A client that sends its message without waiting for the 354 of such a DATA: the message's
    // lines must not run as commands.
    expect(await c.command('MAIL FROM:<args@sender.test>')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<args@dest.test>')).toMatch(/^250 /)
    c.send('DATA foo\r\nRSET\r\nMAIL FROM:<smuggled2@sender.test>\r\n')
    expect(await c.read()).toMatch(/^554 5\.5\.0 Improper pipelining/)
    await c.closed
    expect(relay.logs.some((l) => l.sender === 'smuggled2@sender.test')).toBe(false)
  })

  it('pipelining after the end of data (RFC 2920) is still taken: the next transaction in the same write as the final dot', async () => {
    const c = await session()
    expect(await c.command('MAIL FROM:<p1@sender.test>')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<p1@dest.test>')).toMatch(/^250 /)
    expect(await c.command('DATA')).toMatch(/^354 /)
    c.send(`${message('pipelined one')}\r\nMAIL FROM:<p2@sender.test>\r\nRCPT TO:<p2@dest.test>\r\nDATA\r\n`)
    expect(await c.read()).toMatch(/^250 2\.0\.0 /)
    expect(await c.read()).toMatch(/^250 /)
    expect(await c.read()).toMatch(/^250 /)
    expect(await c.read()).toMatch(/^354 /)
    expect(await c.command(message('pipelined two'))).toMatch(/^250 2\.0\.0 /)
    c.close()
  })

  it('refuses DSN parameters a next hop would refuse (501 5.5.4), and AUTH= where AUTH is not offered (555 5.5.4)', async () => {
    const c = await session()
    // Too long says so; too long and not xtext is the syntax.
    expect(await c.command(`MAIL FROM:<a@sender.test> ENVID=${'e'.repeat(101)}`)).toBe('501 5.5.4 Bad ENVID parameter syntax: longer than 100 characters (RFC 3461)')
    expect(await c.command(`MAIL FROM:<a@sender.test> ENVID=${'e'.repeat(101)}+ZZ`)).toBe('501 5.5.4 Bad ENVID parameter syntax (RFC 3461: xtext)')
    expect(await c.command('MAIL FROM:<a@sender.test> AUTH=<a@sender.test>')).toMatch(/^555 5\.5\.4 MAIL FROM parameter AUTH not supported/)
    expect(await c.command(`MAIL FROM:<a@sender.test> ENVID=${'e'.repeat(100)}`)).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<b@dest.test> ORCPT=rfc822;a+20b@dest.test')).toMatch(/^501 5\.5\.4 Bad ORCPT parameter syntax/)
    expect(await c.command(`RCPT TO:<b@dest.test> ORCPT=rfc822;${'o'.repeat(500)}@dest.test`)).toBe('501 5.5.4 Bad ORCPT parameter syntax: longer than 500 characters (RFC 3461)')
    expect(await c.command('RCPT TO:<b@dest.test> ORCPT=rfc822;b+2Bx@dest.test')).toMatch(/^250 /)
    c.close()
  })

  it('ENVID and ORCPT values that are not xtext (RFC 3461 §4: "+" without two hex digits, a bare "=") are refused 501 5.5.4', async () => {
    const c = await session()
    expect(await c.command('MAIL FROM:<a@sender.test> ENVID=a+ZZ')).toMatch(/^501 5\.5\.4 Bad ENVID parameter syntax/)
    expect(await c.command('MAIL FROM:<a@sender.test> ENVID=a=b')).toMatch(/^501 5\.5\.4 Bad ENVID parameter syntax/)
    expect(await c.command('MAIL FROM:<a@sender.test> ENVID=a+2')).toMatch(/^501 5\.5\.4 Bad ENVID parameter syntax/)
    // Encoded control characters (CR, LF, NUL, DEL): the parameter is bad, not the address.
    for (const envid of ['a+0Ab', 'a+0D+0Ab', 'a+00b', 'a+7Fb', 'a+0ab']) {
      expect(await c.command(`MAIL FROM:<a@sender.test> ENVID=${envid}`), envid).toMatch(/^501 5\.5\.4 Bad ENVID parameter syntax/)
    }
    expect(await c.command('MAIL FROM:<a@sender.test> ENVID=x+3Dy')).toMatch(/^250 /)
    for (const orcpt of ['rfc822;a+0Db@x.test', 'rfc822;a+00b@x.test', 'rfc822;a+1Bb@x.test']) {
      expect(await c.command(`RCPT TO:<b@dest.test> ORCPT=${orcpt}`), orcpt).toMatch(/^501 5\.5\.4 Bad ORCPT parameter syntax/)
    }
    expect(await c.command('RCPT TO:<b@dest.test> ORCPT=rfc822;x+ZZ@dest.test')).toMatch(/^501 5\.5\.4 Bad ORCPT parameter syntax/)
    expect(await c.command('RCPT TO:<b@dest.test> ORCPT=rfc822;b+40x@dest.test')).toMatch(/^250 /)
    // RFC 6533 §3: the utf-8 type escapes as \x{HEX}; a bare backslash, '+' or '=' (once xtext-decoded) is no address.
    for (const orcpt of ['utf-8;b\\\\x{E4}d@x.test', 'utf-8;a\\b@x.test', 'utf-8;a\\x{}b@x.test', 'utf-8;a+2Bb@x.test', 'utf-8;a+3Db@x.test', 'UTF-8;a\\x{GG}@x.test']) {
      expect(await c.command(`RCPT TO:<b@dest.test> ORCPT=${orcpt}`), orcpt).toMatch(/^501 5\.5\.4 Bad ORCPT parameter syntax/)
    }
    for (const orcpt of ['utf-8;b\\x{E4}d@x.test', 'utf-8;j\\x{2B}tag@x.test']) expect(await c.command(`RCPT TO:<b@dest.test> ORCPT=${orcpt}`), orcpt).toMatch(/^250 /)
    c.close()
  })

  it('after HELO (not EHLO) no service extension is in force: MAIL and RCPT parameters get 555 5.5.4; plain commands are taken', async () => {
    const { client: c } = await connectRaw(relay.port)
    expect(await c.command('HELO client.test')).toMatch(/^250 /)
    for (const param of ['SIZE=100', 'BODY=8BITMIME', 'SMTPUTF8', 'RET=HDRS', 'ENVID=x']) {
      expect(await c.command(`MAIL FROM:<a@sender.test> ${param}`), param).toMatch(/^555 5\.5\.4 .*EHLO/)
    }
    expect(await c.command('MAIL FROM:<a@sender.test>')).toMatch(/^250 /)
    expect(await c.command('RCPT TO:<b@dest.test> NOTIFY=FAILURE')).toMatch(/^555 5\.5\.4 .*EHLO/)
    expect(await c.command('RCPT TO:<b@dest.test>')).toMatch(/^250 /)
    // EHLO after HELO brings the extensions in.
    expect(await c.command('EHLO client.test')).toMatch(/^250 /m)
    expect(await c.command('MAIL FROM:<a@sender.test> SIZE=100')).toMatch(/^250 /)
    c.close()
  })

  it('takes MAIL/RCPT with more than one space between the words and around the path, as Postfix does', async () => {
    const c = await session()
    expect(await c.command('MAIL  FROM:<a@sender.test>')).toMatch(/^250 /)
    expect(await c.command('RCPT   TO: <b@dest.test>  ')).toMatch(/^250 /)
    expect(await c.command('RSET')).toMatch(/^250 /)
    expect(await c.command('mail  from: <a@sender.test> SIZE=10')).toMatch(/^250 /)
    c.close()
  })
})
