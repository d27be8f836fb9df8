// `<dataDir>/relay.pid` (the running relay's process id: `relay reload` signals it, CLI verbs on
// the queue tell whether a relay runs there) and the liveness check for it.
import fs from 'node:fs'
import path from 'node:path'

export const PID_FILE = 'relay.pid'

export function writePidFile(dataDir: string): void {
  fs.writeFileSync(path.join(dataDir, PID_FILE), `${process.pid}\n`)
}

/** Removes the file if it still names this process (another relay may have started since). */
export function removePidFile(dataDir: string): void {
  const file = path.join(dataDir, PID_FILE)
  try {
    if (Number(fs.readFileSync(file, 'utf8').trim()) === process.pid) fs.rmSync(file, { force: true })
  } catch {
    // already gone
  }
}

/** The pid in the file when that process is alive; undefined when there is no file or it is stale. */
export function livePid(dataDir: string): number | undefined {
  let pid: number
  try {
    pid = Number(fs.readFileSync(path.join(dataDir, PID_FILE), 'utf8').trim())
  } catch {
    return undefined
  }
  return Number.isInteger(pid) && pid > 0 && isAlive(pid) ? pid : undefined
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
