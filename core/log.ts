import pino, { type DestinationStream, type Logger } from 'pino'
import { toMaillogLine } from './log-line.js'

/** Config `log`: the level, and 'json' (pino JSON lines, the default) or 'line' (Postfix-like maillog lines). */
export interface LogOptions {
  level: string
  format?: 'json' | 'line'
}

/** Paths that may carry secrets: never written, whatever the level. */
export const REDACT = [
  'password', 'pass', 'secret', 'token',
  '*.password', '*.pass', '*.secret', '*.token',
  '*.*.password', '*.*.pass', '*.*.token',
  'auth.credentials', 'options.auth',
]

/**
 * JSON lines on stdout (or, with format 'line', each line rewritten as a maillog line: core/log-line.ts).
 * Writes are buffered (one write per few KB, not one per line: each write is a system call, and
 * there are a few lines per message); `flushLogs` runs at exit. A bare level string means JSON.
 */
export function createLogger(options: string | LogOptions): Logger {
  const { level, format = 'json' } = typeof options === 'string' ? { level: options } : options
  const destination = pino.destination({ dest: 1, sync: false, minLength: 4096 })
  // JSON goes to the destination as pino wrote it; only 'line' pays for the rewrite.
  const stream: DestinationStream = format === 'line' ? { write: (line: string) => void destination.write(toMaillogLine(line)) } : destination
  const logger = pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    stream,
  )
  destinations.add(destination)
  // stdout gone (a closed pipe): logging stops, the relay goes on and still stops cleanly.
  destination.on('error', () => {
    destinations.delete(destination)
    destination.destroy()
  })
  // Quiet periods still show their lines within a tenth of a second.
  if (!flushTimer) {
    flushTimer = setInterval(() => {
      for (const d of destinations) d.flush()
    }, 100)
    flushTimer.unref()
  }
  return logger
}

let flushTimer: NodeJS.Timeout | undefined

const destinations = new Set<ReturnType<typeof pino.destination>>()

/**
 * Writes out buffered log lines before exit. Asynchronous and bounded: a stdout that takes nothing
 * more (a full or closed pipe) must not keep the process from exiting.
 */
export function flushLogs(timeoutMs = 1000): Promise<void> {
  const pending = [...destinations].map(
    (d) =>
      new Promise<void>((resolve) => {
        try {
          d.flush(() => resolve())
        } catch {
          resolve()
        }
      }),
  )
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs)
    timer.unref()
    void Promise.all(pending).then(() => {
      clearTimeout(timer)
      resolve()
    })
  })
}
