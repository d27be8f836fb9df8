/**
 * Part of `relay-mta/testing`.
 *
 * Starts the real relay (`node bin/relay.js start`, the built dist/) as a child process with a
 * generated config in a temp directory, on free ports. Tests talk to it only through sockets,
 * the CLI and its files, as a user would.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The relay package's directory: the first directory above this file with `bin/relay.js`. That is
 * the repository (from testing/*.ts or dist/testing/*.js) or, once installed,
 * node_modules/relay-mta (from dist/testing/*.js).
 */
export const ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)))
/** The `relay` command (it runs the built dist/). */
export const BIN = path.join(ROOT, 'bin/relay.js')

function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'bin/relay.js')) && fs.existsSync(path.join(dir, 'package.json'))) return dir
    if (path.dirname(dir) === dir) throw new Error(`relay-mta/testing: cannot find bin/relay.js above ${from}`)
  }
}

export interface LogLine {
  level: number
  msg: string
  [key: string]: unknown
}

export interface RelayProcess {
  dir: string
  configFile: string
  dataDir: string
  /** Port of the first listener of each role. */
  port: number
  ports: { mx?: number; submission?: number }
  logs: LogLine[]
  child: ChildProcess
  /** Resolves with the first log line matching, waiting up to timeoutMs. */
  waitForLog(match: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>
  /** SIGTERM (or another signal); resolves with the exit code. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>
  kill9(): Promise<void>
  /** Starts the relay again on the same config, data directory and ports. */
  restart(): Promise<void>
  exited(): boolean
  /**
   * `relay queue list --json` on this relay's data directory. It blocks this process while the CLI
   * runs (receivers and DNS servers in it stall): in a polling loop use listQueue().
   */
  queueList(): QueueListEntry[]
  /** The same, without blocking this process's event loop. */
  listQueue(): Promise<QueueListEntry[]>
}

export interface QueueListEntry {
  id: string
  messageId?: string
  sender: string
  size: number
  receivedAt: number
  recipients: { address: string; state: string; attempts: number; nextAttemptAt?: number; lastResponse?: string; delivering?: true }[]
}

export function tempDir(prefix = 'relay-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

/**
 * Runs the CLI to completion without blocking this process (use it where this process also runs
 * servers the relay talks to: test receivers, DNS; runCli's spawnSync would stall them).
 */
export function runCliAsync(args: string[], opts: { cwd?: string; input?: string; env?: Record<string, string | undefined> } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = opts.env ? { ...process.env, ...opts.env } : process.env
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
    child.stdin!.end(opts.input ?? '')
  })
}

/** Runs the CLI to completion. */
export function runCli(args: string[], opts: { cwd?: string; input?: string; env?: Record<string, string | undefined> } = {}): { code: number | null; stdout: string; stderr: string } {
  const env = opts.env ? { ...process.env, ...opts.env } : undefined
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? ROOT, input: opts.input, env, encoding: 'utf8', timeout: 30_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

export interface StartOptions {
  /** Config object, written as JSON. Listeners default to one 'mx' listener on a free port. */
  config?: Record<string, unknown>
  dir?: string
  /** Extra environment for the child. */
  env?: Record<string, string>
  /** How long the relay may take to start (default 60 s); then it is killed and the start rejects. */
  startTimeoutMs?: number
  /**
   * A command the relay runs under (e.g. `['setpriv', '--bounding-set=-dac_override', '--']`):
   * the relay's process is `prefix[0]` with the rest, node and the CLI as its arguments.
   */
  prefix?: string[]
}

/** Writes the config and starts the relay; resolves once every listener is up. */
export async function startRelay(opts: StartOptions = {}): Promise<RelayProcess> {
  const dir = opts.dir ?? tempDir()
  const dataDir = path.join(dir, 'data')
  const config: Record<string, unknown> = {
    hostname: 'relay.test',
    listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }],
    dataDir,
    smtp: { reverseLookup: false },
    log: { level: 'info' },
    shutdownTimeout: '5s',
    ...opts.config,
  }
  const configFile = path.join(dir, 'relay.config.json')
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2))

  const logs: LogLine[] = []
  const waiters = new Set<() => void>()
  let child!: ChildProcess
  let exitCode: number | null | undefined
  let exitWaiters: ((code: number | null) => void)[] = []
  const ports: { mx?: number; submission?: number } = {}
  let fixedPorts: { port: number; role: string }[] | undefined

  const launch = async () => {
    if (fixedPorts) {
      // Same ports again after a restart.
      const written = JSON.parse(fs.readFileSync(configFile, 'utf8')) as { listen: { port: number }[] }
      written.listen = (config.listen as { host: string; port: number; role: string }[]).map((l, i) => ({ ...l, port: fixedPorts![i]!.port }))
      fs.writeFileSync(configFile, JSON.stringify(written, null, 2))
    }
    exitCode = undefined
    const command = [...(opts.prefix ?? []), process.execPath, BIN, 'start', '--config', configFile]
    child = spawn(command[0]!, command.slice(1), {
      cwd: dir,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let buf = ''
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        try {
          logs.push(JSON.parse(line) as LogLine)
        } catch {
          logs.push({ level: 30, msg: line })
        }
        for (const w of [...waiters]) w()
      }
    })
    let stderr = ''
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('exit', (code) => {
      exitCode = code
      for (const w of exitWaiters) w(code)
      exitWaiters = []
      for (const w of [...waiters]) w()
    })
    const started = logs.length
    // One process's 'listening on' lines: with config `workers` each SMTP worker logs its own, and
    // its buffered log may reach stdout after the primary's 'relay started'.
    const listenCount = Array.isArray(config.listen) ? config.listen.length : 0
    const listeningLines = () => {
      const all = logs.slice(started).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'))
      return all.filter((l) => l.pid === all[0]?.pid)
    }
    try {
      await waitForLog((l) => l.msg === 'relay started' && listeningLines().length >= listenCount, opts.startTimeoutMs ?? 60_000, started)
    } catch (err) {
      // Given up: the relay must not go on starting behind the test's back (its ports, files, CPU).
      if (exitCode === undefined) {
        child.kill('SIGKILL')
        await waitExit(5000).catch(() => undefined)
      }
      throw new Error(`relay did not start: ${(err as Error).message}\nstderr: ${stderr}\nlogs: ${JSON.stringify(logs.slice(started))}`)
    }
    const listening = listeningLines()
    fixedPorts = listening.map((l) => ({ port: l.port as number, role: l.role as string }))
    for (const l of fixedPorts) if (!(l.role in ports)) ports[l.role as 'mx'] = l.port
  }

  const waitForLog = (match: (l: LogLine) => boolean, timeoutMs = 10_000, from = 0): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = logs.slice(from).find(match)
        if (found) {
          done()
          resolve(found)
        } else if (exitCode !== undefined) {
          done()
          reject(new Error(`relay exited (code ${exitCode}) before the log line appeared`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`timed out after ${timeoutMs} ms waiting for a log line`))
      }, timeoutMs)
      const done = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })

  const waitExit = (timeoutMs: number): Promise<number | null> =>
    new Promise((resolve, reject) => {
      if (exitCode !== undefined) return resolve(exitCode)
      const timer = setTimeout(() => reject(new Error('relay did not exit in time')), timeoutMs)
      exitWaiters.push((code) => {
        clearTimeout(timer)
        resolve(code)
      })
    })

  await launch()
  const relay: RelayProcess = {
    dir,
    configFile,
    dataDir,
    get port() {
      return (ports.mx ?? ports.submission)!
    },
    ports,
    logs,
    get child() {
      return child
    },
    waitForLog: (match, timeoutMs) => waitForLog(match, timeoutMs),
    async stop(signal = 'SIGTERM', timeoutMs = 15_000) {
      if (exitCode !== undefined) return exitCode
      child.kill(signal)
      return waitExit(timeoutMs)
    },
    async kill9() {
      if (exitCode !== undefined) return
      child.kill('SIGKILL')
      await waitExit(5000)
    },
    restart: launch,
    exited: () => exitCode !== undefined,
    queueList() {
      const r = runCli(['queue', 'list', '--json', '--config', configFile])
      if (r.code !== 0) throw new Error(`relay queue list failed: ${r.stderr}`)
      return JSON.parse(r.stdout) as QueueListEntry[]
    },
    async listQueue() {
      const r = await runCliAsync(['queue', 'list', '--json', '--config', configFile])
      if (r.code !== 0) throw new Error(`relay queue list failed: ${r.stderr}`)
      return JSON.parse(r.stdout) as QueueListEntry[]
    },
  }
  return relay
}

/** Polls until `check` returns a truthy value, or throws after timeoutMs. */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await check()
      if (v) return v as NonNullable<T>
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}
