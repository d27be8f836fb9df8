import path from 'node:path'
import { ConfigError, loadConfig, loadRawConfig } from '../config/load.js'
import type { RelayConfig } from '../config/schema.js'
import type { ReloadResult } from '../reload.js'
import { livePid } from '../pid-file.js'
import { AdminFailed, AdminUnreachable, adminCall, findAdmin } from './admin-client.js'

/**
 * `relay reload`: POST /api/reload on the running relay's admin listener, else SIGHUP to the pid in
 * `<dataDir>/relay.pid`. An edited config that does not validate is still sent for: the relay
 * refuses it and says why (exit 1), and keeps running on the old one.
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

  const target = findAdmin(config)
  if (target) {
    try {
      const result = await adminCall<ReloadResult>(target, 'POST', '/api/reload')
      printResult(result)
      return
    } catch (err) {
      if (err instanceof AdminFailed && (err.body as ReloadResult | undefined)?.ok === false) {
        printResult(err.body as ReloadResult)
        process.exitCode = 1
        return
      }
      if (!(err instanceof AdminUnreachable)) throw err
      process.stderr.write(`relay: ${err.message}; sending SIGHUP instead\n`)
    }
  }

  const pid = livePid(config.dataDir)
  if (!pid) {
    if (invalid) throw invalid
    process.stderr.write(`relay: no running relay found for ${config.dataDir} (no live pid in relay.pid)\n`)
    process.exitCode = 1
    return
  }
  if (invalid) {
    // Without an admin listener there is no answer to wait for: say now why it will be refused.
    process.stderr.write(`relay: ${invalid.message}\nrelay: not sent; the running relay would refuse this config and keep the old one\n`)
    process.exitCode = 1
    return
  }
  process.kill(pid, 'SIGHUP')
  process.stdout.write(`sent SIGHUP to relay ${pid} (no admin listener); its log says whether the config was reloaded or refused\n`)
}

function printResult(r: ReloadResult): void {
  if (!r.ok) {
    process.stderr.write(`relay: reload refused, the running config stays in force:\n${r.error}\n`)
    return
  }
  const lines = ['config reloaded']
  lines.push(r.changed.length ? `  changed: ${r.changed.join(', ')}` : '  no setting changed (plugins and certificates were loaded again)')
  if (r.restartNeeded.length) lines.push(`  needs a restart to take effect: ${r.restartNeeded.join(', ')}`)
  process.stdout.write(lines.join('\n') + '\n')
}

/** The data directory of a config that does not validate, as far as it says (admin.json there has the token). */
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
