import pino, { type DestinationStream, type Logger } from 'pino'
import { toMaillogLine } from './log-line.js'
import { CENSOR, REDACT_PATHS, redactLogCall, redactSecrets } from './log-redact.js'

/** Config `log`: the level, and 'json' (pino JSON lines, the default) or 'line' (Postfix-like maillog lines). */
export interface LogOptions {
  level: string
  format?: 'json' | 'line'
}

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
      // Secret-named keys at any of the first three levels (core/log-redact.ts), and fixed paths.
      hooks: { logMethod: redactLogCall },
      redact: { paths: REDACT_PATHS, censor: CENSOR },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    stream,
  )
  // pino gives a child's bindings to no hook: every logger made from this one makes its children here.
  // (Children inherit from their parent, so this one wrapper serves every generation.)
  const child = logger.child
  logger.child = function (this: Logger, bindings, options) {
    return child.call(this, redactSecrets(bindings) as typeof bindings, options)
  } as Logger['child']
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
