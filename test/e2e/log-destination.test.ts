// The log's destination failing (stdout on a full disk, a reader that went away) stops or pauses
// logging, never the relay: a log line that threw into the mail path crashed it (exit 7) between
// a delivery and its record, so the message went out twice after the restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { startDns, type TestDns } from '../harness/dns-server.js'
import { startReceiver, type TestReceiver } from '../harness/smtp-receiver.js'
import { sendMail } from '../harness/smtp-client.js'
import { BIN, ROOT, eventually, runCliAsync, tempDir } from '../harness/relay.js'

let rx: TestReceiver
let zones: TestDns

beforeAll(async () => {
  rx = await startReceiver({ host: '127.0.0.1' })
  zones = await startDns({ 'dest.test': { A: ['127.0.0.1'] } })
})

afterAll(async () => {
  await Promise.all([rx?.close(), zones?.close()])
})

async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => s.once('listening', r))
  const port = (s.address() as net.AddressInfo).port
  await new Promise((r) => s.close(r))
  return port
}

/** A relay whose stdout is `stdout` (a file descriptor or 'pipe'); resolves once it answers SMTP. */
async function relayWithStdout(stdout: number | 'pipe'): Promise<{ child: ChildProcess; port: number; configFile: string; exited: Promise<number | null> }> {
  const dir = tempDir('relay-logdest-')
  const port = await freePort()
  const configFile = path.join(dir, 'relay.config.json')
  fs.writeFileSync(
    configFile,
    JSON.stringify({
      hostname: 'relay.test',
      listen: [{ host: '127.0.0.1', port, role: 'mx' }],
      dataDir: path.join(dir, 'data'),
      smtp: { reverseLookup: false },
      dns: { servers: [zones.server] },
      delivery: { port: rx.port },
      log: { level: 'debug' },
      shutdownTimeout: '5s',
      plugins: [['relay-acl', { trustedNetworks: ['127.0.0.0/8'] }]],
    }),
  )
  const child = spawn(process.execPath, [BIN, 'start', '--config', configFile], { cwd: dir, stdio: ['ignore', stdout, 'pipe'] })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  await eventually(
    () =>
      new Promise<boolean>((resolve) => {
        const s = net.connect(port, '127.0.0.1')
        s.once('data', (d) => resolve(d.toString().startsWith('220') && Boolean(s.end())))
        s.once('error', () => resolve(false))
      }),
    20_000,
    'the relay answering SMTP',
  ).catch((err: Error) => {
    child.kill('SIGKILL')
    throw err
  })
  return { child, port, configFile, exited }
}

/** The exit code, or 'still running' (then killed) when it has not exited within `ms`. */
async function exitWithin(child: ChildProcess, exited: Promise<number | null>, ms: number): Promise<number | null | 'still running'> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), ms)))
  const code = await Promise.race([exited, late])
  clearTimeout(timer)
  if (code === 'still running') child.kill('SIGKILL')
  return code
}

/** n messages, each 250, each delivered exactly once, the relay still running. */
async function relaysEveryMessage(r: { child: ChildProcess; port: number }, tag: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const data = `Subject: ${tag} ${i}\r\nMessage-ID: <${tag}-${i}@sender.test>\r\n\r\n${'x'.repeat(2000)}\r\n`
    expect((await sendMail(r.port, { from: 'a@sender.test', to: [`u${i}@dest.test`], data })).lastReply, `${tag} ${i}`).toMatch(/^250 2\.0\.0 /)
  }
  const ours = () => rx.messages.filter((m) => m.raw.toString().includes(`Subject: ${tag} `))
  await eventually(() => ours().length >= n, 15_000, `${n} deliveries`)
  await new Promise((res) => setTimeout(res, 300))
  const subjects = ours().map((m) => /Subject: (.*)\r\n/.exec(m.raw.toString())![1]!)
  expect(subjects.sort()).toEqual(Array.from({ length: n }, (_, i) => `${tag} ${i}`).sort())
  expect(r.child.exitCode).toBeNull()
}

describe("the log's destination failing", () => {
  it('stdout on a full disk (/dev/full: every write ENOSPC): the relay takes and delivers mail, once each, and stops cleanly', async () => {
    const full = fs.openSync('/dev/full', 'w')
    try {
      const r = await relayWithStdout(full)
      try {
        await relaysEveryMessage(r, 'devfull', 30)
        // The queue is empty: every delivery was recorded.
        const q = await runCliAsync(['queue', 'list', '--json', '--config', r.configFile])
        expect(JSON.parse(q.stdout)).toEqual([])
      } finally {
        r.child.kill('SIGTERM')
      }
      expect(await exitWithin(r.child, r.exited, 10_000)).toBe(0)
    } finally {
      fs.closeSync(full)
    }
  })

  it('a reader that goes away (| head -c 200): the relay takes and delivers mail, once each, and stops cleanly', async () => {
    const r = await relayWithStdout('pipe')
    try {
      // The first 200 bytes read, then the pipe closed, as `relay start | head -c 200` does.
      await new Promise<void>((resolve) => {
        let got = 0
        r.child.stdout!.on('data', (d: Buffer) => {
          got += d.length
          if (got >= 200) {
            r.child.stdout!.destroy()
            resolve()
          }
        })
      })
      await relaysEveryMessage(r, 'closedpipe', 30)
    } finally {
      r.child.kill('SIGTERM')
    }
    expect(await exitWithin(r.child, r.exited, 10_000)).toBe(0)
  })

  it('writes that fail for a while (the log file at its size limit: EFBIG) are kept and written once it takes them again, with a line saying so; the process exits at once while they fail', async () => {
    const dir = tempDir('relay-logfull-')
    const file = path.join(dir, 'relay.log')
    // The relay's logger, in a process whose files may not grow past 20,000 bytes (prlimit(1)).
    const script = `
      import { createLogger, flushLogs } from ${JSON.stringify(path.join(ROOT, 'dist/core/log.js'))}
      const log = createLogger('info')
      for (let i = 0; i < 150; i++) log.info({ i, pad: 'p'.repeat(100) }, 'before')
      await new Promise((r) => setTimeout(r, 500))
      process.stderr.write('full\\n')
      await new Promise((r) => process.stdin.once('data', r))
      log.info('after')
      await new Promise((r) => setTimeout(r, 500))
      await flushLogs()
      for (let i = 0; i < 300; i++) log.info({ i, pad: 'q'.repeat(100) }, 'at exit')
      process.exit(0)
    `
    const out = fs.openSync(file, 'a')
    const child = spawn('prlimit', ['--fsize=20000', process.execPath, '--input-type=module', '-e', script], { stdio: ['pipe', out, 'pipe'] })
    fs.closeSync(out)
    let stderr = ''
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    await eventually(() => stderr.includes('full'), 15_000, 'the log at its limit').catch((err: Error) => {
      child.kill('SIGKILL')
      throw err
    })
    expect(fs.statSync(file).size).toBe(20_000)
    // The operator makes room (logrotate's copytruncate does the same): the lines wait for it.
    fs.truncateSync(file, 0)
    child.stdin!.write('go\n')
    // It exits at once (the last 300 lines fail again: they are not waited for).
    expect(await exitWithin(child, exited, 5000)).toBe(0)
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => { try { return JSON.parse(l) as Record<string, unknown> } catch { return { partial: l } } })
    const again = lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('log writes failed (EFBIG) and now work again'))
    expect(again, JSON.stringify(lines.slice(0, 3))).toMatchObject({ level: 40, code: 'EFBIG', dropped: 0 })
    // Every line after the first 20,000 bytes was kept while the writes failed, and written once.
    const before = lines.filter((l) => l.msg === 'before').map((l) => l.i as number)
    expect(before.length).toBeGreaterThan(20)
    expect(before).toEqual(Array.from({ length: before.length }, (_, k) => 150 - before.length + k))
    expect(lines.filter((l) => l.msg === 'after')).toHaveLength(1)
  })
})

