// A usage error (unknown verb or option, a missing argument) exited 1, the code the queue verbs
// give for "not found or failed": a script could not tell a typo from a missing message. Usage
// errors exit 2 now, with commander's message and the help; --help and --version exit 0.
import { describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { runCliAsync, tempDir } from '../harness/relay.js'

describe('CLI usage errors', () => {
  it.each([
    ['an unknown verb', ['bogus'], /unknown command 'bogus'/],
    ['an unknown option', ['queue', 'list', '--bogus'], /unknown option '--bogus'/],
    ['an unknown option of a core verb', ['check-config', '--bogus'], /unknown option '--bogus'/],
    ['a missing argument', ['queue', 'show'], /missing required argument 'id'/],
    ['an option without its value', ['queue', 'list', '--limit'], /option '--limit <n>' argument missing/],
    ['too many arguments', ['queue', 'show', 'A', 'B'], /too many arguments/],
    ['a group without its verb', ['queue'], /Usage: relay queue/],
    ['options that exclude each other', ['config', 'show', '--changed', '--defaults'], /option '-d, --defaults' cannot be used with option '-n, --changed'/],
  ])('%s: exit 2 and says what is wrong', async (_, args, said) => {
    const r = await runCliAsync(args)
    expect([r.code, r.stdout]).toEqual([2, ''])
    expect(r.stderr).toMatch(said)
  })

  it.each([[['--help']], [['queue', '--help']], [['queue', 'list', '--help']], [['--version']], [['help', 'queue']]])('%j exits 0', async (args) => {
    const r = await runCliAsync(args)
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).not.toBe('')
  })

  it("a core verb's help imports none of the config's plugins; the top-level help lists their verbs", async () => {
    const dir = tempDir('relay-help-')
    const marker = path.join(dir, 'imported')
    // A plugin whose import leaves a mark, and which adds the verb `marked`.
    fs.writeFileSync(path.join(dir, 'marking.mjs'), `import fs from 'node:fs'\nfs.appendFileSync(${JSON.stringify(marker)}, 'x')\nexport default { name: 'marking', commands(program) { program.command('marked').description('a verb of the marking plugin') } }\n`)
    const config = path.join(dir, 'relay.config.json')
    fs.writeFileSync(config, JSON.stringify({ dataDir: './data', log: { level: 'silent' }, plugins: ['./marking.mjs'] }))
    for (const args of [['start', '--help'], ['help', 'start'], ['check-config', '-h']]) {
      const r = await runCliAsync([...args, '--config', config])
      expect(r.code, r.stderr).toBe(0)
      expect(r.stdout).toMatch(/^Usage: relay (start|check-config) /)
      expect(fs.existsSync(marker), args.join(' ')).toBe(false)
    }
    const top = await runCliAsync(['--help', '--config', config])
    expect(top.code, top.stderr).toBe(0)
    expect(top.stdout).toMatch(/marked\s+a verb of the marking plugin/)
    expect(fs.existsSync(marker)).toBe(true)
  })

  it('the top-level help lists the bundled plugins\' verbs as they declare them, without importing those plugins', async () => {
    const dir = tempDir('relay-help-')
    // A preload that writes down every module the relay command imports.
    const imported = path.join(dir, 'imported.txt')
    const preload = path.join(dir, 'record-imports.mjs')
    const hooks = `import fs from 'node:fs'\nexport async function resolve(s, c, next) { const r = await next(s, c); fs.appendFileSync(${JSON.stringify(imported)}, r.url + '\\n'); return r }`
    fs.writeFileSync(preload, `import { register } from 'node:module'\nregister('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hooks)}))\n`)
    for (const args of [['--help'], ['help'], []]) {
      fs.rmSync(imported, { force: true })
      const r = await runCliAsync(args, { cwd: dir, env: { NODE_OPTIONS: `--import=${preload}` } })
      expect(r.code, r.stderr).toBe(args.length === 0 ? 2 : 0)
      const out = args.length === 0 ? r.stderr : r.stdout
      expect(out).toMatch(/^ {2}queue +inspect and control the mail queue/m)
      expect(out).toMatch(/^ {2}stats \[options\] +reputation figures per sending and destination/m)
      expect(out).toMatch(/^ {2}doctor \[options\] <domain> +check a sending domain's DNS/m)
      expect(out).toMatch(/^ {2}user +logins of the auth-file plugin/m)
      expect(out).toMatch(/^ {2}plugin +write your own plugins\n {2}help \[command\]/m)
      const urls = fs.readFileSync(imported, 'utf8')
      expect(urls).toContain('/core/cli/plugin-commands.js')
      expect(urls, args.join(' ')).not.toMatch(/\/plugins\/[\w-]+\/index\.[jt]s/)
    }
    // A verb's own help still comes from its plugin.
    const queue = await runCliAsync(['queue', '--help'], { cwd: dir })
    expect(queue.stdout).toMatch(/^Usage: relay queue \[options\] \[command\]/)
    expect(queue.stdout).toMatch(/^ {2}list /m)
  })
})

// A value an option cannot take, or a verb given nothing to act on, is a usage error too: `relay
// queue list --state bogus` and `relay queue hold` (no id, no filter) exited 1, the code for "no
// such message", while `relay stats --period week` exited 2. Every verb of the queue now says 2.
describe('bad option values and missing targets of the queue verbs', () => {
  const dir = tempDir('relay-usage-')
  const config = path.join(dir, 'relay.config.json')
  fs.writeFileSync(config, JSON.stringify({ listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: './data', log: { level: 'silent' } }))
  it.each([
    ['list --state', ['queue', 'list', '--state', 'bogus'], /--state: expected queued, deferred or held/],
    ['list --limit', ['queue', 'list', '--limit', 'x'], /--limit: expected a positive whole number/],
    ['hold with no id and no filter', ['queue', 'hold'], /give a queue id, ALL, -/],
    ['flush of an empty id (an unset shell variable)', ['queue', 'flush', ''], /not a queue id: ''/],
    ['delete --older-than', ['queue', 'delete', '--older-than', '4x'], /--older-than: expected a duration/],
    ['bounce ALL with a filter', ['queue', 'bounce', 'ALL', '--domain', 'example.com'], /ALL selects every message/],
    ['cat with both halves excluded', ['queue', 'cat', 'ABC', '--header-only', '--body-only'], /exclude each other/],
    ['suppression add of no address', ['suppression', 'add', 'not-an-address'], /not an email address/],
    ['suppression add --ttl', ['suppression', 'add', 'a@example.com', '--ttl', 'forever'], /--ttl: expected a duration/],
    // Past what a date holds: the entry was written, then every `suppression list` crashed on it.
    ['suppression add --ttl of 300,000,000 days', ['suppression', 'add', 'a@example.com', '--ttl', '300000000d'], /--ttl: expected a duration/],
    ['delete --older-than of 1e400 seconds', ['queue', 'delete', '--older-than', `1${'0'.repeat(400)}`], /--older-than: expected a duration/],
  ])('%s: exit 2', async (_, args, said) => {
    const r = await runCliAsync([...args, '--config', config])
    expect(r.stderr).toMatch(said)
    expect(r.code, r.stderr).toBe(2)
  })

  it('a message or address that is not there is still 1', async () => {
    expect((await runCliAsync(['queue', 'show', 'NOSUCHID', '--config', config])).code).toBe(1)
    expect((await runCliAsync(['suppression', 'remove', 'nobody@example.com', '--config', config])).code).toBe(1)
  })
})

// `relay suppression list` printed its times with milliseconds (`2026-12-04T18:39:32.474Z`) while
// the queue verbs print them to the second, as docs/config.md says; the same format now.
describe('what the verbs print', () => {
  const dir = tempDir('relay-print-')
  const config = path.join(dir, 'relay.config.json')
  fs.writeFileSync(config, JSON.stringify({ listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }], dataDir: './data', log: { level: 'silent' } }))
  const SECOND = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ'

  it('suppression add and list: times to the second, as the queue verbs', async () => {
    const added = await runCliAsync(['suppression', 'add', 'gone@example.com', '--ttl', '1h', '--config', config])
    expect(added.code, added.stderr).toBe(0)
    expect(added.stdout).toMatch(new RegExp(`^suppressed gone@example\\.com \\(expires ${SECOND}\\)\\n$`))
    const forever = await runCliAsync(['suppression', 'add', 'never@example.com', '--ttl', '0', '--config', config])
    expect(forever.stdout).toBe('suppressed never@example.com (expires never)\n')
    const list = await runCliAsync(['suppression', 'list', '--config', config])
    expect(list.code, list.stderr).toBe(0)
    expect(list.stdout).toMatch(new RegExp(`^gone@example\\.com  added ${SECOND}  expires ${SECOND}  source cli  reason: added by hand$`, 'm'))
    expect(list.stdout).toMatch(new RegExp(`^never@example\\.com  added ${SECOND}  expires never  source cli  reason: added by hand$`, 'm'))
  })

  it('queue summary of a data directory no relay has used yet: as an empty queue (docs/config.md), not "0 messages"', async () => {
    const fresh = tempDir('relay-fresh-')
    const file = path.join(fresh, 'relay.config.json')
    fs.writeFileSync(file, JSON.stringify({ dataDir: './data', log: { level: 'silent' } }))
    const r = await runCliAsync(['queue', 'summary', '--config', file])
    expect([r.code, r.stdout], r.stderr).toEqual([0, '0 messages; recipients: 0 queued, 0 deferred, 0 held\noldest: -\n'])
    expect(fs.existsSync(path.join(fresh, 'data'))).toBe(false)
  })

  it('stats: the period start to the second, as the other times', async () => {
    const r = await runCliAsync(['stats', '--config', config])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(new RegExp(`^Reputation, last day \\(since ${SECOND};`))
    expect(r.stdout).not.toMatch(/^[ \t]+$/m)
  })
})

// `relay queue list`, `relay suppression list`, `relay stats` with the shared PostgreSQL queue down
// printed a stack trace under the message; the message alone says it all (as `relay start` does).
describe('a queue the verbs cannot reach', () => {
  const dir = tempDir('relay-pgdown-')
  const config = path.join(dir, 'relay.config.json')
  // Port 1 on loopback: nothing listens (connection refused at once).
  fs.writeFileSync(config, JSON.stringify({ dataDir: './data', queue: { driver: 'postgres', url: 'postgres://relay:s3cret-pw@127.0.0.1:1/relay' }, log: { level: 'silent' } }))
  it.each([[['queue', 'list']], [['queue', 'summary']], [['suppression', 'list']], [['stats']]])('%j: one line naming the database (no password), exit 1, no stack trace', async (args) => {
    const r = await runCliAsync([...args, '--config', config])
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(/^relay: queue: PostgreSQL at postgres:\/\/relay:\*\*\*@127\.0\.0\.1:1\/relay.*ECONNREFUSED.*\n$/)
  })
})

// A verb that cannot write where it was told (`relay tls selfsigned --out /proc/x`, `relay dkim keygen
// --out`, `relay plugin new --dir`) printed a Node stack trace; the system's message is the answer.
describe('a directory the verbs cannot write', () => {
  it.each([
    [['tls', 'selfsigned', '--out', '/proc/relay-tls']],
    [['dkim', 'keygen', 'example.com', '--out', '/proc/relay-dkim']],
    [['plugin', 'new', 'thing', '--dir', '/proc/relay-plugin']],
  ])('%j: one line with the failed call, exit 1, no stack trace', async (args) => {
    const r = await runCliAsync(args, { cwd: tempDir('relay-nowrite-') })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/^relay: E[A-Z]+: [^\n]*'\/proc\/relay-[a-z]+'\n$/)
  })
})
