// `relay sendmail` and the `sendmail` alias: the message on stdin goes through <dataDir>/maildrop/
// to the running relay's pickup, which queues it through the same checks as SMTP submission (a
// refused one bounces to the sender); with no relay running it waits until one starts.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ROOT, eventually, runCli, startRelay, type RelayProcess } from '../harness/relay.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { startDns, type TestDns } from '../harness/dns-server.js'

/** The first bytes of a maildrop file (core/queue/maildrop.ts). */
const MAGIC = 'RELAY-MAILDROP 1\n'

let relay: RelayProcess
let rx: TestReceiver // dest.test
let senderRx: TestReceiver // sender.test: bounces
let dns: TestDns

const sendmail = (args: string[], input: string) => runCli(['sendmail', '--config', relay.configFile, ...args], { input })
const maildrop = () => fs.readdirSync(path.join(relay.dataDir, 'maildrop'))
const to = (address: string) => rx.messages.filter((m) => m.to.includes(address))
const text = (m: { raw: Buffer }) => m.raw.toString('latin1')

beforeAll(async () => {
  rx = await startReceiver({ host: '127.0.0.2', behaviour: { noStartTls: true } })
  senderRx = await startReceiver({ host: '127.0.0.3', port: rx.port, behaviour: { noStartTls: true } })
  dns = await startDns({ 'dest.test': { A: ['127.0.0.2'] }, 'sender.test': { A: ['127.0.0.3'] } })
  relay = await startRelay({
    config: {
      dns: { servers: [dns.server], timeout: '1s' },
      delivery: { port: rx.port, connectTimeout: '2s', delayWarning: false },
      smtp: { reverseLookup: false, maxHops: 3 },
    },
  })
})

afterAll(async () => {
  await relay?.stop()
  await Promise.all([dns, rx, senderRx].map((x) => x?.close()))
})

describe('relay sendmail', () => {
  it('-t takes To, Cc and Bcc and removes Bcc; -f sets the sender; LF becomes CRLF; Received names the uid', async () => {
    const r = sendmail(['-t', '-i', '-f', 'alice@sender.test'], 'To: bob@dest.test\nCc: Carol <carol@dest.test>\nBcc: dave@dest.test\nSubject: from cron\n\nline one\n.\nline three\n')
    expect([r.code, r.stdout, r.stderr]).toEqual([0, '', ''])
    const m = await eventually(() => to('bob@dest.test')[0], 10_000, 'delivered to bob')
    expect(m.from).toBe('alice@sender.test')
    expect(m.to.sort()).toEqual(['bob@dest.test', 'carol@dest.test', 'dave@dest.test'])
    const t = text(m)
    expect(t).not.toMatch(/^Bcc:/im)
    expect(t).not.toMatch(/[^\r]\n/)
    expect(t).toMatch(new RegExp(`^Received: by relay\\.test \\(Relay, from userid ${os.userInfo().uid}\\)\\r\\n\\twith local id \\w+;`))
    // A submission: Message-ID and Date added; -i kept the lone dot.
    expect(t).toMatch(/^Message-ID: <\w+@relay\.test>\r$/m)
    expect(t).toMatch(/^Date: /m)
    expect(t).toContain('\r\n\r\nline one\r\n.\r\nline three\r\n')
    expect(maildrop()).toEqual([])
    const accepted = await relay.waitForLog((l) => l.msg === 'accepted' && (l.recipients as string[]).includes('bob@dest.test'))
    expect(accepted).toMatchObject({ sender: 'alice@sender.test', listener: 'submission' })
  })

  it('recipients as arguments; without -i a lone dot ends the message; a From field is added when missing', async () => {
    const r = sendmail(['-oi', '-oem', 'erin@dest.test'], 'Subject: dots\n\nbefore\n.\nafter\n')
    expect(r.code, r.stderr).toBe(0)
    const withDot = await eventually(() => to('erin@dest.test')[0], 10_000, 'delivered to erin')
    expect(text(withDot)).toContain('before\r\n.\r\nafter\r\n')

    const cut = sendmail(['frank@dest.test'], 'Subject: cut\n\nbefore\n.\nafter\n')
    expect(cut.code, cut.stderr).toBe(0)
    const m = await eventually(() => to('frank@dest.test')[0], 10_000, 'delivered to frank')
    expect(text(m)).toMatch(/\r\n\r\nbefore\r\n$/)
    expect(m.from).toBe(`${os.userInfo().username}@relay.test`)
    expect(text(m)).toContain(`\r\nFrom: <${os.userInfo().username}@relay.test>\r\n`)
  })

  it('-F names the sender in the From field it adds: quoted when ASCII, RFC 2047 words when not (a UTF-8 name came out as Latin-1 bytes)', async () => {
    const name = 'Jöe Ünicode, the ' + 'long'.repeat(12) + ' 名前'
    expect(sendmail(['-F', name, 'gwen@dest.test'], 'Subject: name\n\nhi\n').code).toBe(0)
    expect(sendmail(['-F', 'Plain Name', 'hank@dest.test'], 'Subject: name\n\nhi\n').code).toBe(0)
    const utf8 = await eventually(() => to('gwen@dest.test')[0], 10_000, 'delivered to gwen')
    const from = /\r\nFrom: (.*)\r\n/.exec(text(utf8))![1]!
    expect(from).toMatch(/^(=\?UTF-8\?B\?[A-Za-z0-9+/=]+\?= )+<[^>]+@relay\.test>$/)
    for (const word of from.split(' ').slice(0, -1)) expect(word.length).toBeLessThanOrEqual(75)
    const decoded = from.split(' ').slice(0, -1).map((w) => Buffer.from(w.slice(10, -2), 'base64').toString('utf8')).join('')
    expect(decoded).toBe(name)
    expect(utf8.raw.includes(Buffer.from([0xf6]))).toBe(false)
    const plain = await eventually(() => to('hank@dest.test')[0], 10_000, 'delivered to hank')
    expect(text(plain)).toMatch(/\r\nFrom: "Plain Name" <[^>]+@relay\.test>\r\n/)
  })

  it('text with no header (echo ... | sendmail), or a header with no blank line after it: From goes into the header, the text stays the body', async () => {
    expect(sendmail(['nohead@dest.test'], 'disk almost full\nsecond line\n').code).toBe(0)
    expect(sendmail(['noblank@dest.test'], 'Subject: no blank line\nthe body starts here\n').code).toBe(0)
    for (const [rcpt, subject, body] of [['nohead@dest.test', undefined, 'disk almost full\r\nsecond line\r\n'], ['noblank@dest.test', 'no blank line', 'the body starts here\r\n']] as const) {
      const t = text(await eventually(() => to(rcpt)[0], 10_000, `delivered to ${rcpt}`))
      const split = t.indexOf('\r\n\r\n')
      const head = t.slice(0, split + 2)
      expect(head).toContain(`\r\nFrom: <${os.userInfo().username}@relay.test>\r\n`)
      if (subject) expect(head).toContain(`\r\nSubject: ${subject}\r\n`)
      expect(t.slice(split + 4)).toBe(body)
    }
  })

  it('the sendmail alias (bin/sendmail.js) is the same code; -C names the config', async () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/sendmail.js'), '-C', relay.configFile, '-f', 'alice@sender.test', 'grace@dest.test'], { input: 'Subject: alias\n\nhi\n', encoding: 'utf8' })
    expect([r.status, r.stderr]).toEqual([0, ''])
    await eventually(() => to('grace@dest.test')[0], 10_000, 'delivered to grace')
  })

  it('no config in -C, $RELAY_CONFIG or /etc/relay/ (a cron job in $HOME): exit 78 saying where it looked; a config in the current directory is not read (anyone may have put it there); --help prints the options', () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-sendmail-home-'))
    // Planted: its dataDir would be a maildrop its writer reads, and a .js one would run as the caller.
    fs.writeFileSync(path.join(home, 'relay.config.json'), JSON.stringify({ dataDir: './stolen' }))
    const env = { RELAY_CONFIG: undefined, RELAY_SYSTEM_CONFIG_DIR: path.join(home, 'no-etc') }
    for (const command of [[path.join(ROOT, 'bin/sendmail.js')], [path.join(ROOT, 'bin/relay.js'), 'sendmail']]) {
      const r = spawnSync(process.execPath, [...command, 'ops@dest.test'], { input: 'Subject: cron\n\nhi\n', encoding: 'utf8', cwd: home, env: { ...process.env, ...env } })
      expect(r.status).toBe(78)
      expect(r.stderr).toMatch(/^sendmail: no config file found; looked in:\n/)
      expect(r.stderr).not.toContain(home + '/ (relay.config.ts')
      expect(r.stderr).toContain(`${path.join(home, 'no-etc')}/ (relay.config.ts`)
      expect(fs.readdirSync(home)).toEqual(['relay.config.json'])
      const help = spawnSync(process.execPath, [...command, '--help'], { encoding: 'utf8', cwd: home })
      expect([help.status, help.stderr]).toEqual([0, ''])
      expect(help.stdout).toMatch(/^Usage: sendmail \[-t\] \[-i\] \[-f sender\]/)
    }
  })

  it('usage errors exit with sysexits codes', () => {
    const none = sendmail([], 'Subject: nobody\n\nhi\n')
    expect(none.code).toBe(64)
    expect(none.stderr).toMatch(/no recipients/)
    expect(sendmail(['-t'], 'Subject: nobody\n\nhi\n').code).toBe(64)
    expect(sendmail(['-bp'], '').code).toBe(64)
    expect(sendmail(['-Z', 'x@dest.test'], 'hi\n').code).toBe(64)
    // A long option is named; --config without its value is said to need one (not "no config file found").
    const long = sendmail(['--bogus', 'x@dest.test'], 'hi\n')
    expect([long.code, long.stderr]).toEqual([64, expect.stringContaining('unknown option --bogus')])
    const noValue = runCli(['sendmail', '--config'], { input: 'hi\n' })
    expect([noValue.code, noValue.stderr]).toEqual([64, expect.stringContaining('option --config needs a value')])
    expect(maildrop()).toEqual([])
  })

  it('a recipient that is no address (as an argument, or in the header with -t) exits 64 naming it; nothing written, the good ones not bounced with it', () => {
    for (const [args, input] of [
      [['good@dest.test', 'typo@@dest.test'], 'Subject: x\n\nhi\n'],
      [['-t'], 'To: good@dest.test, typo@@dest.test\nSubject: x\n\nhi\n'],
    ] as const) {
      const r = sendmail([...args], input)
      expect(r.code, `${JSON.stringify(args)}: ${r.stderr}`).toBe(64)
      expect(r.stderr).toMatch(/^sendmail: recipient "typo@@dest\.test"( \(in the message header\))? is not an address: nothing written\n$/)
    }
    expect(maildrop()).toEqual([])
  })

  it('input over smtp.maxMessageSize is not read to its end: exit 69, message file too big, nothing written', async () => {
    // The same relay's config with a 1 MB limit.
    const small = path.join(relay.dir, 'small.config.json')
    fs.writeFileSync(small, JSON.stringify({ ...JSON.parse(fs.readFileSync(relay.configFile, 'utf8')), smtp: { maxMessageSize: '1MB' } }))
    const over = runCli(['sendmail', '--config', small, 'big@dest.test'], { input: `Subject: big\n\n${'x'.repeat(2 * 1024 * 1024)}\n` })
    expect(over.code, over.stderr).toBe(69)
    expect(over.stderr).toMatch(/^sendmail: message file too big/)
    // Input that never ends (a runaway script) ends the same way, in bounded memory.
    const zero = fs.openSync('/dev/zero', 'r')
    try {
      const endless = spawnSync(process.execPath, [path.join(ROOT, 'bin/relay.js'), 'sendmail', '--config', small, 'big@dest.test'], { stdio: [zero, 'pipe', 'pipe'], encoding: 'utf8', timeout: 20_000 })
      expect(endless.status, endless.stderr).toBe(69)
    } finally {
      fs.closeSync(zero)
    }
    expect(maildrop()).toEqual([])
    // Under the limit as written, over it as queued (CRLF line ends, the fields the relay adds): said at once, not bounced later.
    const lines = `Subject: near\n\n${'x\n'.repeat(1024 * 1024 / 2 - 100)}`
    expect(Buffer.byteLength(lines)).toBeLessThan(1024 * 1024)
    const near = runCli(['sendmail', '--config', small, 'near@dest.test'], { input: lines })
    expect(near.code, near.stderr).toBe(69)
    expect(near.stderr).toMatch(/^sendmail: message file too big .*with CRLF line ends/)
    expect(maildrop()).toEqual([])
    const fits = runCli(['sendmail', '--config', small, 'fits@dest.test'], { input: `Subject: fits\n\n${'x'.repeat(1000)}\n` })
    expect(fits.code, fits.stderr).toBe(0)
    await eventually(() => to('fits@dest.test')[0], 10_000, 'delivered to fits')
  })

  it('an address argument with a line break, or a -f that is no address, exits 64 and writes nothing', () => {
    for (const args of [
      ['-f', 'alice@sender.test', 'r3@dest.test\r\nBcc: attacker@evil.test'],
      ['-f', 'alice@sender.test', 'r4@dest.test\nCc: attacker@evil.test'],
      ['-f', 'evil@sender.test\r\nX-Injected: yes', 'r1@dest.test'],
      ['-F', 'Name\nBcc: attacker@evil.test', 'r5@dest.test'],
      ['-f', 'not an address', 'r6@dest.test'],
    ]) {
      const r = sendmail(args, 'Subject: x\n\nhi\n')
      expect(r.code, JSON.stringify(args)).toBe(64)
      expect(r.stderr).toMatch(/^sendmail: /)
    }
    expect(maildrop()).toEqual([])
  })

  it('a host name with no dot (os.hostname() on many machines) makes no sender or recipient like user@buildbox, which every next hop refuses: exit 78, saying to set hostname; full addresses still go', () => {
    const file = path.join(path.dirname(relay.configFile), 'unqualified.config.json')
    fs.writeFileSync(file, JSON.stringify({ hostname: 'buildbox', dataDir: relay.dataDir }))
    const run = (args: string[]) => runCli(['sendmail', '--config', file, ...args], { input: 'Subject: x\n\nhi\n' })
    for (const args of [['bob@dest.test'], ['-f', 'alice', 'bob@dest.test'], ['-f', 'alice@sender.test', 'bob']]) {
      const r = run(args)
      expect([r.code, JSON.stringify(args)]).toEqual([78, JSON.stringify(args)])
      expect(r.stderr).toMatch(/^sendmail: hostname 'buildbox' is not a fully qualified domain name: .*@buildbox.* set hostname in the config .*; nothing written\n$/)
    }
    expect(maildrop()).toEqual([])
    const full = run(['-f', 'alice@sender.test', 'unqualified-ok@dest.test'])
    expect([full.code, full.stderr]).toEqual([0, ''])
  })

  it('whatever else a local user leaves in the maildrop (a directory, a FIFO, a symlink) is set aside and holds up no message', async () => {
    const dir = path.join(relay.dataDir, 'maildrop')
    const secret = path.join(relay.dir, 'not-for-mail.txt')
    fs.writeFileSync(secret, 'private bytes\n')
    fs.mkdirSync(path.join(dir, '0-a-directory'))
    expect(spawnSync('mkfifo', [path.join(dir, '0-a-fifo')]).status).toBe(0)
    fs.symlinkSync(secret, path.join(dir, '0-a-symlink'))
    const r = sendmail(['-f', 'alice@sender.test', 'ivan@dest.test'], 'Subject: after odd entries\n\nstill goes\n')
    expect(r.code, r.stderr).toBe(0)
    await eventually(() => to('ivan@dest.test')[0], 10_000, 'the message delivered past the odd entries')
    await eventually(() => maildrop().every((n) => n.startsWith('.')) || undefined, 10_000, 'the odd entries set aside')
    const aside = maildrop().filter((n) => n.startsWith('.corrupt-'))
    expect(aside.sort()).toEqual(['.corrupt-0-a-directory', '.corrupt-0-a-fifo', '.corrupt-0-a-symlink'])
    expect(rx.messages.some((m) => text(m).includes('private bytes'))).toBe(false)
    for (const n of aside) fs.rmSync(path.join(dir, n), { recursive: true })
  })

  it('a maildrop file a local user wrote by hand: a line break in a recipient does not reach the bounce as a line of its own; a name taken by a directory does not keep a bad file in the scans', async () => {
    const dir = path.join(relay.dataDir, 'maildrop')
    const envelope = JSON.stringify({ sender: 'alice@sender.test', recipients: ['r@example.com>\r\nDATA\r\nX-Injected: yes'] })
    fs.writeFileSync(path.join(dir, '1-crlf-rcpt'), `${MAGIC}${envelope}\nSubject: crafted\r\n\r\nbody\r\n`)
    const dsn = await eventually(() => senderRx.messages.find((m) => text(m).includes('Subject: crafted')), 10_000, 'the bounce of the crafted file')
    expect(text(dsn)).toContain('Final-Recipient: rfc822; r@example.com>??DATA??X-Injected: yes')
    expect(text(dsn)).not.toMatch(/^X-Injected: yes/m)
    expect(text(dsn)).not.toMatch(/^DATA\r$/m)
    // `.corrupt-1-taken` is a directory with something in it: the bad file cannot get that name.
    fs.mkdirSync(path.join(dir, '.corrupt-1-taken', 'x'), { recursive: true })
    fs.writeFileSync(path.join(dir, '1-taken'), 'not a maildrop file\n')
    await eventually(() => !fs.existsSync(path.join(dir, '1-taken')) || undefined, 10_000, 'the bad file out of the way')
    const errors = relay.logs.filter((l) => l.msg === 'maildrop: cannot pick up this file; the others go on')
    expect(errors).toEqual([])
    fs.rmSync(path.join(dir, '.corrupt-1-taken'), { recursive: true })
    for (const n of maildrop().filter((n) => n.startsWith('.corrupt-1-taken-'))) fs.rmSync(path.join(dir, n))
  })

  it('a file a local user writes in place, in two steps: read once complete, not set aside half written', async () => {
    const dir = path.join(relay.dataDir, 'maildrop')
    const file = path.join(dir, '2-in-place')
    fs.writeFileSync(file, MAGIC)
    // The write woke a scan, which read the file half written.
    await new Promise((r) => setTimeout(r, 500))
    fs.appendFileSync(file, `${JSON.stringify({ sender: 'alice@sender.test', recipients: ['inplace@dest.test'] })}\nSubject: in place\r\n\r\nbody\r\n`)
    const m = await eventually(() => to('inplace@dest.test')[0], 15_000, 'delivered to inplace')
    expect(text(m)).toContain('Subject: in place')
    expect(maildrop().filter((n) => n.includes('in-place'))).toEqual([])
  })

  it('more recipients than smtp.maxRecipients: bounced with the limit in the report, not retried (and logged) at every scan', async () => {
    const many = Array.from({ length: 1001 }, (_, i) => `m${i}@dest.test`)
    const r = sendmail(['-f', 'alice@sender.test', ...many], 'Subject: to a crowd\n\nhello all\n')
    expect(r.code, r.stderr).toBe(0)
    const dsn = await eventually(() => senderRx.messages.find((m) => text(m).includes('Subject: to a crowd')), 15_000, 'the bounce of the crowd')
    expect(text(dsn)).toContain('Too many recipients (at most 1000)')
    await eventually(() => maildrop().filter((n) => !n.startsWith('.')).length === 0 || undefined, 10_000, 'the file gone')
    expect(to('m0@dest.test')).toHaveLength(0)
    expect(relay.logs.filter((l) => String(l.msg).startsWith('maildrop: not picked up now'))).toEqual([])
  })

  it('a message the checks refuse bounces to the sender and leaves the maildrop', async () => {
    const hops = 'Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\n'.repeat(4)
    const r = sendmail(['-f', 'alice@sender.test', 'loop@dest.test'], `${hops}Subject: looping\n\nround and round\n`)
    expect(r.code, r.stderr).toBe(0)
    const dsn = await eventually(() => senderRx.messages.find((m) => text(m).includes('Final-Recipient: rfc822; loop@dest.test')), 10_000, 'bounce at the sender')
    expect(text(dsn)).toContain('5.4.6')
    expect(to('loop@dest.test')).toHaveLength(0)
    await relay.waitForLog((l) => l.msg === 'refused' && l.rule === 'core:too-many-hops' && l.proto === 'local')
    expect(maildrop()).toEqual([])
  })

  it('a file the relay may not remove (maildrop and file another user\'s, sticky) is not queued at all, rather than at every scan; once it may, it goes out once', async () => {
    // The relay runs as root without the capabilities that pass over file modes and owners (setpriv).
    const drop = ['setpriv', '--inh-caps=-all', '--bounding-set=-dac_override,-dac_read_search,-fowner']
    const r2 = await startRelay({
      prefix: drop,
      config: { dns: { servers: [dns.server], timeout: '1s' }, delivery: { port: rx.port, connectTimeout: '2s', delayWarning: false }, smtp: { reverseLookup: false } },
    })
    try {
      expect(await r2.stop()).toBe(0)
      const w = runCli(['sendmail', '--config', r2.configFile, '-f', 'alice@sender.test', 'stuck@dest.test'], { input: 'Subject: cannot be removed\n\nonce\n' })
      expect(w.code, w.stderr).toBe(0)
      const dir = path.join(r2.dataDir, 'maildrop')
      const [file] = fs.readdirSync(dir)
      fs.chownSync(path.join(dir, file!), 65534, 65534)
      fs.chownSync(dir, 65534, 65534)
      fs.chmodSync(dir, 0o1777)
      await r2.restart()
      await r2.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith(`maildrop: cannot take ${file}`), 10_000)
      // Scans go on (every change in the directory, the poll): nothing is queued or delivered meanwhile.
      await new Promise((r) => setTimeout(r, 6000))
      expect(to('stuck@dest.test')).toEqual([])
      expect(r2.logs.filter((l) => l.msg === 'maildrop: picked up')).toEqual([])
      expect(fs.readdirSync(dir)).toEqual([file])
      // The directory the relay's again: the next start takes it, and it is delivered once.
      expect(await r2.stop()).toBe(0)
      fs.chownSync(dir, 0, 0)
      await r2.restart()
      await eventually(() => to('stuck@dest.test')[0], 10_000, 'delivered once the relay may take it')
      await new Promise((r) => setTimeout(r, 6000))
      expect(to('stuck@dest.test')).toHaveLength(1)
      expect(fs.readdirSync(dir)).toEqual([])
    } finally {
      if (!r2.exited()) await r2.stop()
    }
  }, 60_000)

  it('with no relay running the message waits in the maildrop (-v says so) and goes out once one starts', async () => {
    expect(await relay.stop()).toBe(0)
    const r = sendmail(['-v', '-f', 'alice@sender.test', 'henry@dest.test'], 'Subject: later\n\nqueued while stopped\n')
    expect(r.code).toBe(0)
    expect(r.stderr).toMatch(/^sendmail: message for henry@dest\.test written to .*maildrop.*; no relay is running: it waits there until one starts\n$/)
    expect(maildrop()).toHaveLength(1)
    const mode = fs.statSync(path.join(relay.dataDir, 'maildrop')).mode & 0o7777
    expect(mode.toString(8)).toBe('1733')
    await relay.restart()
    await eventually(() => to('henry@dest.test')[0], 10_000, 'delivered after the start')
    expect(maildrop()).toEqual([])
  })
})

describe('sendmail argument and message handling', () => {
  it('parses options getopt-style and builds the envelope', async () => {
    const { parseSendmailArgs, buildSubmission } = await import('../../core/cli/sendmail.js')
    expect(parseSendmailArgs(['-ti', '-fme@x.test', '-oem', '-F', 'Me Myself', '-B8BITMIME', '--', '-odd@x.test'])).toEqual({
      extractRecipients: true, ignoreDots: true, verbose: false, sender: 'me@x.test', fullName: 'Me Myself', recipients: ['-odd@x.test'],
    })
    expect(parseSendmailArgs(['-f', '<>', 'a@x.test']).sender).toBe('<>')
    const m = buildSubmission(
      { extractRecipients: true, ignoreDots: true, verbose: false, sender: '', recipients: ['root'] },
      Buffer.from('To: a@x.test,\n  B <b@x.test>\nBcc: c@x.test,\n d@x.test\nSubject: s\n\nbody\n'),
      { hostname: 'relay.test', user: 'nobody' },
    )
    expect(m.sender).toBe('')
    expect(m.recipients).toEqual(['root@relay.test', 'a@x.test', 'b@x.test', 'c@x.test', 'd@x.test'])
    // Bcc (with its continuation line) is gone; for the null sender the From field names the mail
    // system (RFC 5322 §3.6 wants one; Postfix's cleanup writes MAILER-DAEMON).
    expect(m.raw.toString()).toBe('To: a@x.test,\n  B <b@x.test>\nSubject: s\nFrom: Mail Delivery System <MAILER-DAEMON@relay.test>\n\nbody\n')
  })

  it('-t on a resent message takes the Resent- recipients only and removes Resent-Bcc; a leading mbox From line is dropped', async () => {
    const { buildSubmission } = await import('../../core/cli/sendmail.js')
    const m = buildSubmission(
      { extractRecipients: true, ignoreDots: false, verbose: false, sender: 'me@x.test', recipients: [] },
      Buffer.from('From me@x.test Thu Dec  3 10:00:00 2026\nResent-To: new@x.test\nResent-Bcc: hidden@x.test\nFrom: a@x.test\nTo: old@x.test\nSubject: s\n\nbody\n'),
      { hostname: 'relay.test', user: 'nobody' },
    )
    expect(m.recipients).toEqual(['new@x.test', 'hidden@x.test'])
    expect(m.raw.toString()).toBe('Resent-To: new@x.test\nFrom: a@x.test\nTo: old@x.test\nSubject: s\n\nbody\n')
  })

  it('a local message gets CRLF line ends', async () => {
    const { toCrlf } = await import('../../core/smtp/inject.js')
    expect(toCrlf(Buffer.from('a\nb\r\nc\n')).toString()).toBe('a\r\nb\r\nc\r\n')
    expect(toCrlf(Buffer.from('\n\n')).toString()).toBe('\r\n\r\n')
  })
})
