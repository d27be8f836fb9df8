/**
 * Real spam scanners for tests, each a child process of the test on a free loopback port, with
 * its files in a temp directory; the caller stops them.
 *
 * startSpamd: SpamAssassin's daemon (Debian packages `spamassassin` + `spamd`), local tests only
 * (`--local`: no DNS blocklists, no network at all), one child, no Bayes; ready once it answers PING.
 * startRspamd: rspamd (Debian package `rspamd`) with a config of its own; ready once /ping answers.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

export interface Spamd {
  host: string
  port: number
  /** spamd's own log (stderr), for failure messages. */
  output(): string
  stop(): Promise<void>
}

/** The spamd executable: on PATH, else the Debian location /usr/sbin/spamd; undefined when absent. */
export function findSpamd(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/local/bin']
  for (const dir of dirs) {
    if (!dir) continue
    const file = path.join(dir, 'spamd')
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return file
    } catch {
      // next
    }
  }
  return undefined
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

/** One `PING SPAMC/1.5`: true when spamd answers `SPAMD/1.x 0 PONG`. */
export function pingSpamd(port: number, host = '127.0.0.1', timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port })
    let data = ''
    const done = (ok: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    socket.on('connect', () => socket.write('PING SPAMC/1.5\r\n\r\n'))
    socket.on('data', (d: Buffer) => {
      data += d.toString('latin1')
      if (/^SPAMD\/\d\.\d+ 0 PONG/.test(data)) done(true)
    })
    socket.on('error', () => done(false))
    socket.on('close', () => done(/^SPAMD\/\d\.\d+ 0 PONG/.test(data)))
  })
}

/** Starts spamd; rejects (with its output) when it exits or does not answer PING within timeoutMs. */
export async function startSpamd(opts: { bin?: string; timeoutMs?: number; /** extra config lines (`--cf`), e.g. test rules */ cf?: string[] } = {}): Promise<Spamd> {
  const bin = opts.bin ?? findSpamd()
  if (!bin) throw new Error('spamd is not installed (Debian: apt-get install spamd)')
  const timeoutMs = opts.timeoutMs ?? 30_000
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-spamd-'))
  // spamd drops to `nobody` when started as root; its helper home must be readable and writable then.
  fs.chmodSync(home, 0o777)
  const port = await freePort()
  const args = [
    `--listen=127.0.0.1:${port}`,
    '--allowed-ips=127.0.0.1',
    '--max-children=1',
    '--min-children=1',
    '--local', // no network tests (DNSBL, URIBL, Razor, ...)
    '--nouser-config',
    `--helper-home-dir=${home}`,
    `--pidfile=${path.join(home, 'spamd.pid')}`,
    '--syslog=stderr',
    '--cf=use_bayes 0',
    '--cf=bayes_auto_learn 0',
    ...(opts.cf ?? []).map((line) => `--cf=${line}`),
  ]
  if (process.getuid?.() === 0) args.push('--username=nobody')
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, HOME: home } })
  const { output, stop } = await superviseUntilReady(child, { name: 'spamd', probe: 'PING', ready: () => pingSpamd(port), port, dir: home, timeoutMs })
  return { host: '127.0.0.1', port, output, stop }
}

/**
 * A real rspamd for tests (Debian package `rspamd`): one normal worker on a free loopback port,
 * started with a config of its own in a temp directory, so nothing from /etc/rspamd applies: no
 * Lua rule set (so no remote maps or DNS lists; DNS points at a dead loopback port), a tiny TLD
 * list (the full one takes ~10 s to compile), the test patterns (GTUBE) on, the given actions,
 * and the given Lua rules. Resolves once `/ping` answers.
 */
export interface Rspamd {
  url: string
  output(): string
  stop(): Promise<void>
}

export function findRspamd(): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), '/usr/bin', '/usr/local/bin']) {
    if (!dir) continue
    const file = path.join(dir, 'rspamd')
    try {
      fs.accessSync(file, fs.constants.X_OK)
      return file
    } catch {
      // next
    }
  }
  return undefined
}

function httpPing(port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port })
    let data = ''
    const done = (ok: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), timeoutMs)
    socket.on('connect', () => socket.write('GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n'))
    socket.on('data', (d: Buffer) => {
      data += d.toString('latin1')
      if (/^HTTP\/1\.[01] 200/.test(data) && /pong/i.test(data)) done(true)
    })
    socket.on('error', () => done(false))
    socket.on('close', () => done(/^HTTP\/1\.[01] 200/.test(data) && /pong/i.test(data)))
  })
}

export async function startRspamd(
  opts: {
    bin?: string
    timeoutMs?: number
    /** rspamd `actions { }` scores, e.g. { reject: 15, 'add_header': 6 } */
    actions?: Record<string, number>
    /** Lua source registering test rules (rspamd_config.NAME = { callback, score }). */
    lua?: string
  } = {},
): Promise<Rspamd> {
  const bin = opts.bin ?? findRspamd()
  if (!bin) throw new Error('rspamd is not installed (Debian: apt-get install rspamd)')
  const timeoutMs = opts.timeoutMs ?? 30_000
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-rspamd-'))
  fs.chmodSync(dir, 0o777) // workers run as nobody when started as root
  const port = await freePort()
  const deadDns = await freePort()
  fs.writeFileSync(path.join(dir, 'tld.dat'), 'com\nnet\norg\ntest\nexample\n')
  fs.writeFileSync(path.join(dir, 'rules.lua'), opts.lua ?? '')
  const actions = Object.entries(opts.actions ?? { reject: 15, add_header: 6, greylist: 4 })
    .map(([k, v]) => `  ${k} = ${v};`)
    .join('\n')
  const q = (s: string) => JSON.stringify(s)
  fs.writeFileSync(
    path.join(dir, 'rspamd.conf'),
    `options {
  pidfile = ${q(path.join(dir, 'rspamd.pid'))};
  dbdir = ${q(dir)};
  hs_cache_dir = ${q(dir)};
  tempdir = ${q(dir)};
  control_socket = ${q(`${path.join(dir, 'rspamd.sock')} mode=0600`)};
  url_tld = ${q(path.join(dir, 'tld.dat'))};
  dns { nameserver = [${q(`127.0.0.1:${deadDns}`)}]; timeout = 0.2s; retransmits = 1; }
  enable_test_patterns = true;
  local_addrs = [];
}
logging { type = "console"; level = "notice"; }
worker "normal" { bind_socket = ${q(`127.0.0.1:${port}`)}; count = 1; }
actions {
${actions}
}
lua = ${q(path.join(dir, 'rules.lua'))};
`,
  )
  const args = ['-f', '-c', path.join(dir, 'rspamd.conf')]
  if (process.getuid?.() === 0) args.push('-u', 'nobody', '-g', 'nogroup')
  const child = spawn(bin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: dir } })
  const { output, stop } = await superviseUntilReady(child, { name: 'rspamd', probe: '/ping', ready: () => httpPing(port), port, dir, timeoutMs })
  return { url: `http://127.0.0.1:${port}`, output, stop }
}

/**
 * Keeps a scanner's output (the tail), polls `ready` until it answers, and gives a `stop` that
 * ends the process (TERM, then KILL after 5 s) and removes its directory. Throws with the output
 * when the process exits or does not answer in time.
 */
async function superviseUntilReady(
  child: ChildProcess,
  o: { name: string; probe: string; ready: () => Promise<boolean>; port: number; dir: string; timeoutMs: number },
): Promise<{ output: () => string; stop: () => Promise<void> }> {
  let output = ''
  const keep = (d: Buffer) => {
    output += d.toString()
    if (output.length > 200_000) output = output.slice(-100_000)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal }
      resolve()
    })
  })
  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM')
      const done = await Promise.race([exit.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))])
      if (!done) {
        child.kill('SIGKILL')
        await exit
      }
    }
    fs.rmSync(o.dir, { recursive: true, force: true })
  }
  const until = Date.now() + o.timeoutMs
  for (;;) {
    if (exited) {
      await stop()
      throw new Error(`${o.name} exited (code ${exited.code}, signal ${exited.signal}) before answering ${o.probe}:\n${output.slice(-4000)}`)
    }
    if (await o.ready()) break
    if (Date.now() > until) {
      await stop()
      throw new Error(`${o.name} did not answer ${o.probe} on 127.0.0.1:${o.port} within ${o.timeoutMs} ms:\n${output.slice(-4000)}`)
    }
    await new Promise((r) => setTimeout(r, 150))
  }
  return { output: () => output, stop }
}
