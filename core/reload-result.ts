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
  /** When it began reading the config (epoch ms): a reload asked for before that sees the file as it was then. */
  started: number
  /** The file it read: the one the relay was started with. */
  configFile?: string
}

/** How many earlier results the file keeps: reloads asked for together finish close together. */
const KEPT = 16

/**
 * Written whole (temp file, rename): a reader never sees half of it. The last result is the file's
 * top level; the ones before it stay under `earlier`, so a `relay reload` whose answer was
 * followed at once by another reload's still finds its own.
 */
export function writeReloadResult(dataDir: string, seq: number, result: ReloadResult, run: { started: number; configFile?: string }): void {
  const file = path.join(dataDir, RELOAD_RESULT_FILE)
  const record: ReloadRecord = { ...result, pid: process.pid, seq, time: Date.now(), ...run }
  const earlier = readReloadResults(dataDir).filter((r) => r.pid === process.pid).slice(-KEPT)
  const tmp = `${file}.${process.pid}.tmp`
  // Only the relay's user: a refused reload's error names the config's keys and files.
  fs.writeFileSync(tmp, JSON.stringify({ ...record, earlier }) + '\n', { mode: 0o600 })
  fs.renameSync(tmp, file)
}

const valid = (r: ReloadRecord | undefined): r is ReloadRecord => !!r && Number.isInteger(r.pid) && Number.isInteger(r.seq) && typeof r.ok === 'boolean'

/** The results in the file, oldest first (none when there is no file, or it cannot be read). */
export function readReloadResults(dataDir: string): ReloadRecord[] {
  try {
    const { earlier, ...last } = JSON.parse(fs.readFileSync(path.join(dataDir, RELOAD_RESULT_FILE), 'utf8')) as ReloadRecord & { earlier?: ReloadRecord[] }
    return [...(Array.isArray(earlier) ? earlier : []), last].filter(valid)
  } catch {
    return []
  }
}

/** The last reload's record, or undefined when there is none (or it cannot be read). */
export function readReloadResult(dataDir: string): ReloadRecord | undefined {
  return readReloadResults(dataDir).at(-1)
}
