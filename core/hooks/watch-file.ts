// A file a plugin reads (users, keys, lists): parsed at setup, read again when it changes, the last
// copy that parsed kept when a change does not. One helper so plugins stop writing their own.
import fs from 'node:fs'
import type { Logger } from 'pino'
import type { WatchedFile } from './types.js'
import { errorText } from '../error-text.js'

/** Changes arrive as bursts of events (an editor's write, a rename over the file): wait this long. */
const SETTLE_MS = 100

export function watchFile<T>(file: string, parse: (text: string) => T, log: Logger, onChange?: (value: T) => void): WatchedFile<T> {
  let current: T
  try {
    current = parsed(parse, fs.readFileSync(file, 'utf8'), file)
  } catch (err) {
    // The file is named once: a missing file's error names it already, a parser's rarely does.
    const text = errorText(err)
    throw text.includes(file) ? err : Object.assign(new Error(`watchFile ${file}: ${text}`), { cause: err })
  }
  let timer: NodeJS.Timeout | undefined
  let watcher: fs.FSWatcher | undefined
  let closed = false

  const reread = () => {
    if (closed) return
    let text: string
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch (err) {
      // Mid-rename: the file is back in a moment; the watch on the old inode is gone, so watch again.
      log.warn({ file, err: errorText(err) }, 'watched file unreadable; keeping the last good copy')
      rewatch()
      return
    }
    // Watched again whatever happens below: an editor that wrote a bad copy by renaming a new file
    // over the old one left the watch on a gone inode, and the fix would never be seen.
    rewatch()
    try {
      current = parsed(parse, text, file)
    } catch (err) {
      log.error({ file, err: errorText(err) }, 'watched file does not parse; keeping the last good copy')
      return
    }
    log.info({ file }, 'watched file reloaded')
    const failed = (err: unknown) => log.error({ file, err: errorText(err) }, `watched file reloaded, but the plugin's onChange failed: ${errorText(err)}`)
    try {
      const done = onChange?.(current) as unknown
      if (done instanceof Promise) done.catch(failed)
    } catch (err) {
      failed(err)
    }
  }

  // Editors and `mv` replace the file (a new inode): the watch is renewed after every change.
  const rewatch = () => {
    watcher?.close()
    watcher = undefined
    if (closed) return
    try {
      watcher = fs.watch(file, () => {
        clearTimeout(timer)
        timer = setTimeout(reread, SETTLE_MS)
        timer.unref()
      })
      watcher.unref()
      watcher.on('error', () => undefined)
    } catch {
      // Gone for now, or not watchable (some network filesystems): a reload still re-reads it.
      timer = setTimeout(reread, 1000)
      timer.unref()
    }
  }
  rewatch()

  return {
    get current() {
      return current
    },
    close() {
      closed = true
      clearTimeout(timer)
      watcher?.close()
    },
  }
}

/**
 * What `parse` made of the text. It must answer at once: `current` is read by hooks synchronously,
 * and a Promise there (an async parse) was a failure nobody awaited, an unhandled rejection.
 */
function parsed<T>(parse: (text: string) => T, text: string, file: string): T {
  const value = parse(text)
  if (typeof (value as { then?: unknown } | null)?.then === 'function') {
    ;(value as unknown as PromiseLike<unknown>).then(undefined, () => undefined)
    throw new Error(`watchFile(${JSON.stringify(file)}): parse returned a Promise; it must return the parsed value (parse synchronously)`)
  }
  return value
}
