// `<dataDir>/reload-result.json`: what the last hot reload did, written by the relay after every
// reload whatever asked for it (SIGHUP, an operations plugin, ...). `relay reload` sends SIGHUP and
// waits for a newer one than it saw before: pid and seq tell a fresh answer from a stale file.
import fs from 'node:fs'
import path from 'node:path'
import type { ReloadResult } from './hooks/operator.js'

export const RELOAD_RESULT_FILE = 'reload-result.json'

export type ReloadRecord = ReloadResult & {
  /** The relay that reloaded. */
  pid: number
  /** Counts this process's reloads from 1. */
  seq: number
  /** When it finished (epoch ms). */
  time: number
}

/** Written whole (temp file, rename): a reader never sees half of it. */
export function writeReloadResult(dataDir: string, seq: number, result: ReloadResult): void {
  const file = path.join(dataDir, RELOAD_RESULT_FILE)
  const record: ReloadRecord = { ...result, pid: process.pid, seq, time: Date.now() }
  const tmp = `${file}.${process.pid}.tmp`
  // Only the relay's user: a refused reload's error names the config's keys and files.
  fs.writeFileSync(tmp, JSON.stringify(record) + '\n', { mode: 0o600 })
  fs.renameSync(tmp, file)
}

/** The last reload's record, or undefined when there is none (or it cannot be read). */
export function readReloadResult(dataDir: string): ReloadRecord | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dataDir, RELOAD_RESULT_FILE), 'utf8')) as ReloadRecord
    return Number.isInteger(r.pid) && Number.isInteger(r.seq) && typeof r.ok === 'boolean' ? r : undefined
  } catch {
    return undefined
  }
}
