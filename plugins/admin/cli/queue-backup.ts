// `relay queue backup <dir>` and `relay queue restore <dir>`: the SQLite queue (database by online
// backup, then the spool files it refers to) into a directory, and from one into a new data
// directory (core/queue/backup.ts). The PostgreSQL queue is backed up with pg_dump.
import path from 'node:path'
import { queueBackup as loadBackup, type CommandEnv, type RelayConfig } from '../../../core/index.js'
import { fail, json, out } from './output.js'
import type { QueueVerbOptions } from './queue.js'

function postgresRefused(config: RelayConfig): boolean {
  if (config.queue.driver !== 'postgres') return false
  process.stderr.write(`relay: the PostgreSQL queue is backed up with PostgreSQL's tools: use pg_dump (e.g. pg_dump --schema=${config.queue.schema} <database>) and pg_restore\n`)
  process.exitCode = 1
  return true
}

export async function queueBackup(env: CommandEnv, dir: string, opts: QueueVerbOptions): Promise<void> {
  // Never the defaults' ./data of wherever it runs: no config found is exit 2, saying where it looked.
  const config = (await env.loadConfig(opts.config, { required: true })) as RelayConfig
  if (postgresRefused(config)) return
  try {
    const { backupQueue } = await loadBackup()
    const r = await backupQueue(config.dataDir, path.resolve(dir))
    if (opts.json) return json(r)
    const leftOut = r.leftOut.length ? `; ${r.leftOut.length} delivered meanwhile, left out: ${r.leftOut.join(', ')}` : ''
    out(`backed up ${r.messages} message${r.messages === 1 ? '' : 's'} (${r.spoolFiles} spool file${r.spoolFiles === 1 ? '' : 's'}) from ${config.dataDir} to ${r.dir}${leftOut}`)
  } catch (err) {
    fail(err)
  }
}

export async function queueRestore(env: CommandEnv, dir: string, opts: QueueVerbOptions & { dataDir?: string }): Promise<void> {
  // Into the config's data directory, or --data-dir: not ./data of wherever it runs.
  const config = (await env.loadConfig(opts.config, { required: opts.dataDir === undefined })) as RelayConfig
  if (postgresRefused(config)) return
  try {
    const { restoreQueue } = await loadBackup()
    const r = await restoreQueue(path.resolve(dir), path.resolve(opts.dataDir ?? config.dataDir))
    if (opts.json) return json(r)
    out(`restored ${r.messages} message${r.messages === 1 ? '' : 's'} (${r.spoolFiles} spool file${r.spoolFiles === 1 ? '' : 's'}) into ${r.dataDir}; start the relay on it to deliver them`)
  } catch (err) {
    fail(err)
  }
}
