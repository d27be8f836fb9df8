import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ConfigError, loadConfig, loadRawConfig } from '../config/load.js'
import { DEFAULT_SETUP_TIMEOUT, type RelayConfig } from '../config/schema.js'
import type { ReloadResult } from '../reload.js'
import { readReloadResult, readReloadResults, RELOAD_RESULT_FILE, type ReloadRecord } from '../reload-result.js'
import fs from 'node:fs'
import { livePid, PID_FILE } from '../pid-file.js'

/**
 * How long to wait for the relay's answer: a reload sets every plugin up again, each within config
 * setupTimeout, in the primary and then in the SMTP workers; one asked for earlier may run first.
 */
const answerWait = (setupTimeout: number) => 2 * setupTimeout + 10_000

/**
 * `relay reload`: SIGHUP to the pid in `<dataDir>/relay.pid`, then the answer the relay writes to
 * `<dataDir>/reload-result.json` after the reload (core/reload-result.ts). An edited config that
 * does not validate is still sent for: the relay refuses it and says why (exit 1), and keeps
 * running on the old one.
 */
export async function reload(opts: { config?: string }): Promise<void> {
  let config: Pick<RelayConfig, 'dataDir' | 'setupTimeout' | 'configFile'>
  let invalid: ConfigError | undefined
  try {
    config = await loadConfig(opts.config)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    invalid = err
    const found = await dataDirOf(opts.config)
    // A file that does not even parse names no data directory: no relay to ask, and any would refuse it.
    if (!found) return refusedHere(err)
    config = found
  }

  // Another user's relay (the data directory is the relay user's): say so, not "no running relay".
  const denied = (what: string) => {
    process.stderr.write(`relay: ${what}: permission denied; run relay reload as the relay's user (sudo -u relay relay reload), or as root\n`)
    process.exitCode = 1
  }
  const pidFile = path.join(config.dataDir, PID_FILE)
  if (['EACCES', 'EPERM'].includes(accessError(pidFile) ?? '')) return denied(`cannot read ${pidFile}`)
  const pid = livePid(config.dataDir)
  if (!pid) {
    if (invalid) throw invalid
    // The relay is found by the data directory it started with: a config that moved it finds none.
    process.stderr.write(`relay: no running relay found for ${config.dataDir} (no live pid in relay.pid; if the config's dataDir was changed, the running relay still uses the old one: a new dataDir takes a restart)\n`)
    process.exitCode = 1
    return
  }
  const before = readReloadResult(config.dataDir)
  const sent = Date.now()
  const signal = signalError(pid)
  if (signal === 'EPERM') return denied(`cannot signal relay ${pid}`)
  if (signal) throw Object.assign(new Error(`cannot signal relay ${pid}: ${signal}`), { kind: 'failed' })
  const wait = answerWait(config.setupTimeout)
  const result = await answer(config.dataDir, pid, before?.pid === pid ? before.seq : 0, sent, wait)
  if (!result) {
    process.stderr.write(
      `relay: sent SIGHUP to relay ${pid}, but it wrote no answer to ${RELOAD_RESULT_FILE} within ${wait / 1000} s; its log says whether the config was reloaded or refused\n`,
    )
    process.exitCode = 1
    return
  }
  printResult(result)
  if (!result.ok) process.exitCode = 1
  // A relay re-reads the file it was started with; another one named here was not applied.
  if (result.configFile && config.configFile && path.resolve(result.configFile) !== path.resolve(config.configFile)) {
    process.stderr.write(
      `relay: relay ${pid} runs ${result.configFile} and re-read that file; ${config.configFile} was not applied (a relay reloads the file it started with: restart it with --config ${config.configFile} to run that one)\n`,
    )
    process.exitCode = 1
  }
}

/** A config that cannot be read at all: said as a refused reload (exit 1), as the relay would. */
function refusedHere(err: ConfigError): void {
  const text = (err.terminalText ?? err.message).replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?')
  process.stderr.write(`relay: reload refused, the running config stays in force (not sent: the file cannot be read, so no relay would take it):\n${text}\n`)
  process.exitCode = 1
}

/**
 * The first result of relay `pid` numbered after `seenSeq` of a reload that began after `sent` (one
 * asked for earlier, still running when the signal came, read the file before this call's edit);
 * undefined when none comes in time (or it stopped).
 */
async function answer(dataDir: string, pid: number, seenSeq: number, sent: number, wait: number): Promise<ReloadRecord | undefined> {
  const deadline = Date.now() + wait
  while (Date.now() < deadline) {
    await sleep(50)
    const r = readReloadResults(dataDir).find((x) => x.pid === pid && x.seq > seenSeq && !(x.started < sent))
    if (r) return r
    if (livePid(dataDir) !== pid) return undefined
  }
  return undefined
}

function printResult(r: ReloadResult): void {
  if (!r.ok) {
    process.stderr.write(`relay: reload refused, the running config stays in force:\n${r.error.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?')}\n`)
    return
  }
  const lines = ['config reloaded']
  lines.push(r.changed.length ? `  changed: ${r.changed.join(', ')}` : '  no setting changed (plugins and certificates were loaded again)')
  if (r.restartNeeded.length) lines.push(`  needs a restart to take effect: ${r.restartNeeded.join(', ')}`)
  process.stdout.write(lines.join('\n') + '\n')
}

/** The data directory of a config that does not validate, as far as it says (relay.pid is there); undefined when the file cannot be read. */
async function dataDirOf(file: string | undefined): Promise<Pick<RelayConfig, 'dataDir' | 'setupTimeout' | 'configFile'> | undefined> {
  let raw: { config: unknown; filepath: string } | null
  try {
    raw = await loadRawConfig(file)
  } catch {
    return undefined
  }
  const c = (raw?.config ?? {}) as { dataDir?: unknown }
  const dir = raw ? path.dirname(raw.filepath) : process.cwd()
  const dataDir = path.resolve(dir, typeof c.dataDir === 'string' ? c.dataDir : './data')
  return { dataDir, setupTimeout: DEFAULT_SETUP_TIMEOUT, configFile: raw?.filepath }
}

/** The error code of a check that fails (a file this user may not read, a process it may not signal). */
const code = (fn: () => void): string | undefined => {
  try {
    return void fn()
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'ERROR'
  }
}
const accessError = (file: string) => code(() => fs.accessSync(file, fs.constants.R_OK))
const signalError = (pid: number) => code(() => process.kill(pid, 'SIGHUP'))
