// `<dataDir>/relay.pid` (the running relay's process id: `relay reload` signals it, CLI verbs on
// the queue tell whether a relay runs there) and the liveness check for it.
import fs from 'node:fs'
import path from 'node:path'
import Database from 'better-sqlite3'
import { privateFile } from './queue/private-files.js'

export const PID_FILE = 'relay.pid'
const LOCK_FILE = 'relay.lock'

/**
 * Claims the data directory for this process until `release()` or the process ends: an exclusive
 * SQLite lock on `<dataDir>/relay.lock` (an fcntl lock, which the OS drops when the process dies,
 * kill -9 included, so it is never stale). A second relay on the same directory stops here, before
 * it touches the queue (its crash recovery would make the running relay's mail in flight due again,
 * to be delivered twice) or the pid file.
 */
export function lockDataDir(dataDir: string): { release(): void } {
  privateFile(path.join(dataDir, LOCK_FILE))
  // A CLI verb's look at the lock (lockHeld) holds it for a moment: wait that out, not another relay.
  const db = new Database(path.join(dataDir, LOCK_FILE), { timeout: 500 })
  try {
    db.pragma('locking_mode = EXCLUSIVE')
    db.exec('BEGIN EXCLUSIVE')
  } catch (err) {
    db.close()
    if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw err
    const pid = livePid(dataDir)
    throw Object.assign(new Error(`another relay is running on the data directory ${dataDir}${pid ? ` (pid ${pid})` : ''}`), { code: 'EDATADIRINUSE' })
  }
  return {
    release: () => {
      if (db.open) db.close()
    },
  }
}

/**
 * Beside relay.pid: the signals this relay handles beyond SIGHUP and SIGTERM. SIGUSR2 (scan the
 * queue now) kills a relay from before it, so a newer CLI sends it only where this file says so.
 */
const SIGNALS_FILE = 'relay.signals'

export function writePidFile(dataDir: string): void {
  fs.writeFileSync(path.join(dataDir, PID_FILE), `${process.pid}\n`)
  try {
    fs.writeFileSync(path.join(dataDir, SIGNALS_FILE), `${process.pid} USR2\n`)
  } catch {
    // then CLI verbs leave the relay to its next queue scan
  }
}

/** Whether the relay `pid` said it handles SIGUSR2 (core/cli/start.ts). */
export function handlesScanSignal(dataDir: string, pid: number): boolean {
  try {
    const [owner, ...signals] = fs.readFileSync(path.join(dataDir, SIGNALS_FILE), 'utf8').trim().split(/\s+/)
    return Number(owner) === pid && signals.includes('USR2')
  } catch {
    return false
  }
}

/** Removes the file if it still names this process (another relay may have started since). */
export function removePidFile(dataDir: string): void {
  for (const name of [PID_FILE, SIGNALS_FILE]) {
    const file = path.join(dataDir, name)
    try {
      if (Number(fs.readFileSync(file, 'utf8').trim().split(/\s/)[0]) === process.pid) fs.rmSync(file, { force: true })
    } catch {
      // already gone
    }
  }
}

/**
 * The pid in the file when that process is alive and a relay holds the data directory's lock;
 * undefined when there is no file or it is stale. A pid file left by a relay that was killed (or by
 * one before a reboot) may name a process that has nothing to do with Relay by now: `relay reload`
 * must not send it SIGHUP.
 */
export function livePid(dataDir: string): number | undefined {
  let pid: number
  try {
    pid = Number(fs.readFileSync(path.join(dataDir, PID_FILE), 'utf8').trim())
  } catch {
    return undefined
  }
  return Number.isInteger(pid) && pid > 0 && isAlive(pid) && lockHeld(dataDir) !== false ? pid : undefined
}

/** No relay runs on the data directory, for sure: no live pid, and its lock is free (or never taken). */
export function noRelayRuns(dataDir: string): boolean {
  return livePid(dataDir) === undefined && lockHeld(dataDir) === false
}

/**
 * Whether some process holds `<dataDir>/relay.lock` (lockDataDir): a read finds it busy. Undefined
 * when that cannot be told (a lock file this user may not read): the pid alone decides then.
 */
function lockHeld(dataDir: string): boolean | undefined {
  const file = path.join(dataDir, LOCK_FILE)
  if (!fs.existsSync(file)) return false
  let db: Database.Database
  try {
    db = new Database(file, { readonly: true, fileMustExist: true, timeout: 0 })
  } catch {
    return undefined
  }
  try {
    db.prepare('SELECT count(*) FROM sqlite_master').get()
    return false
  } catch (err) {
    return (err as { code?: string }).code === 'SQLITE_BUSY' ? true : undefined
  } finally {
    db.close()
  }
}

/** Signal 0 checks that the process exists (EPERM: it exists but belongs to another user). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
