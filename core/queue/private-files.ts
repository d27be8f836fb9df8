// The data directory holds mail and secrets: what the relay creates there is for its own user and
// group only, whatever the umask: directories 0750 (sendmail users search them as the group, see
// docs/sendmail.md), files 0600. Files of an older install that others may read lose those bits
// when the relay opens them.
import fs from 'node:fs'
import path from 'node:path'

/**
 * `mkdir -p`: creates `dir` and its missing parents with `mode`. Not `mkdirSync(dir, { recursive })`:
 * where mkdir answers ENOENT although the parent exists (/proc, /sys), Node's recursive mkdir retries
 * forever at full CPU and the process no longer stops on SIGTERM. Here that is an error naming the path.
 */
export function makeDirs(dir: string, mode = 0o777): void {
  const missing: string[] = []
  for (let at = path.resolve(dir); !fs.existsSync(at); at = path.dirname(at)) {
    missing.unshift(at)
    if (path.dirname(at) === at) break
  }
  for (const d of missing) {
    try {
      fs.mkdirSync(d, { mode })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
  }
}

/** Creates `dir` (and missing parents) 0750; an existing one keeps its mode (it may be the operator's). */
export function privateDir(dir: string): void {
  makeDirs(dir, 0o750)
}

/**
 * Creates `file` empty with mode 0600 unless it exists, and takes others' access away from an
 * existing one. For SQLite files: SQLite gives a database's -wal and -shm files its mode.
 */
export function privateFile(file: string): void {
  fs.closeSync(fs.openSync(file, 'a', 0o600))
  const { mode } = fs.statSync(file)
  if (mode & 0o007) {
    try {
      fs.chmodSync(file, mode & 0o770)
    } catch {
      // not the relay's file: its owner decides
    }
  }
}
