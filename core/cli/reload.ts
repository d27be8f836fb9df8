import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { ConfigError, loadConfig, loadRawConfig } from '../config/load.js'
import type { RelayConfig } from '../config/schema.js'
import type { ReloadResult } from '../reload.js'
import { readReloadResult, RELOAD_RESULT_FILE } from '../reload-result.js'
import fs from 'node:fs'
import { livePid, PID_FILE } from '../pid-file.js'

/** How long to wait for the relay's answer (a reload sets plugins up again, each within setupTimeout). */
const ANSWER_WAIT_MS = 20_000

/**
 * `relay reload`: SIGHUP to the pid in `<dataDir>/relay.pid`, then the answer the relay writes to
 * `<dataDir>/reload-result.json` after the reload (core/reload-result.ts). An edited config that
 * does not validate is still sent for: the relay refuses it and says why (exit 1), and keeps
 * running on the old one.
 */
export async function reload(opts: { config?: string }): Promise<void> {
  let config: Pick<RelayConfig, 'dataDir'>
  let invalid: ConfigError | undefined
  try {
    config = await loadConfig(opts.config)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    invalid = err
    config = await dataDirOf(opts.config, err)
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
  const signal = signalError(pid)
  if (signal === 'EPERM') return denied(`cannot signal relay ${pid}`)
  if (signal) throw Object.assign(new Error(`cannot signal relay ${pid}: ${signal}`), { kind: 'failed' })
  const result = await answer(config.dataDir, pid, before?.pid === pid ? before.seq : 0)
  if (!result) {
    process.stderr.write(
      `relay: sent SIGHUP to relay ${pid}, but it wrote no answer to ${RELOAD_RESULT_FILE} within ${ANSWER_WAIT_MS / 1000} s; its log says whether the config was reloaded or refused\n`,
    )
    process.exitCode = 1
    return
  }
  printResult(result)
  if (!result.ok) process.exitCode = 1
}

/** The first result of relay `pid` numbered after `seenSeq`; undefined when none comes in time (or it stopped). */
async function answer(dataDir: string, pid: number, seenSeq: number): Promise<ReloadResult | undefined> {
  const deadline = Date.now() + ANSWER_WAIT_MS
  while (Date.now() < deadline) {
    await sleep(50)
    const r = readReloadResult(dataDir)
    if (r && r.pid === pid && r.seq > seenSeq) return r
    if (livePid(dataDir) !== pid) return undefined
  }
  return undefined
}

function printResult(r: ReloadResult): void {
  if (!r.ok) {
    const what = r.partial ? 'reload applied in part' : 'reload refused, the running config stays in force'
    process.stderr.write(`relay: ${what}:\n${r.error.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?')}\n`)
    return
  }
  const lines = ['config reloaded']
  lines.push(r.changed.length ? `  changed: ${r.changed.join(', ')}` : '  no setting changed (plugins and certificates were loaded again)')
  if (r.restartNeeded.length) lines.push(`  needs a restart to take effect: ${r.restartNeeded.join(', ')}`)
  process.stdout.write(lines.join('\n') + '\n')
}

/** The data directory of a config that does not validate, as far as it says (relay.pid is there). */
async function dataDirOf(file: string | undefined, err: ConfigError): Promise<Pick<RelayConfig, 'dataDir'>> {
  let raw: { config: unknown; filepath: string } | null
  try {
    raw = await loadRawConfig(file)
  } catch {
    throw err
  }
  const c = (raw?.config ?? {}) as { dataDir?: unknown }
  const dir = raw ? path.dirname(raw.filepath) : process.cwd()
  const dataDir = path.resolve(dir, typeof c.dataDir === 'string' ? c.dataDir : './data')
  return { dataDir }
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
