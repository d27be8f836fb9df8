import fs from 'node:fs'
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
  // maxLength: while stdout takes nothing (a full disk under a redirected log), lines beyond 8 MB
  // waiting are dropped rather than held in memory; the rest goes out once it takes writes again.
  const destination = pino.destination({ dest: 1, sync: false, minLength: 4096, maxLength: 8 * 1024 * 1024 })
  // pino writes what is left at exit with flushSync, which retries a failed write (ENOSPC) for ever:
  // the relay would never exit. This one tries each write once.
  destination.flushSync = () => flushOnce(destination)
  const sink = new LogSink(destination)
  // JSON goes to the destination as pino wrote it; only 'line' pays for the rewrite.
  const stream: DestinationStream = format === 'line' ? { write: (line: string) => sink.write(toMaillogLine(line)) } : sink
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
  destination.on('error', (err: NodeJS.ErrnoException) => {
    if (GONE.has(err.code ?? '')) {
      // stdout gone (a closed pipe): logging stops, the relay goes on and still stops cleanly.
      destinations.delete(destination)
      sink.gone = true
      destination.destroy()
    } else {
      // A write that failed (ENOSPC, EDQUOT, EIO, EFBIG): the relay goes on; the writes are tried
      // again as lines come, and the first one that succeeds says what was missed.
      sink.failing ??= { since: Date.now(), code: err.code ?? String(err) }
    }
  })
  destination.on('drop', () => sink.dropped++)
  destination.on('write', () => {
    const failed = sink.failing
    if (!failed) return
    sink.failing = undefined
    const dropped = sink.dropped
    sink.dropped = 0
    // Not from inside the destination's own write callback.
    setImmediate(() => logger.warn({ code: failed.code, since: new Date(failed.since).toISOString(), dropped }, `log writes failed (${failed.code}) and now work again: ${dropped} lines were dropped`))
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

type SonicBoom = ReturnType<typeof pino.destination>

/** The parts of sonic-boom 4 (pino's destination) that flushOnce reads. */
interface SonicBoomState {
  fd: number
  destroyed: boolean
  _writing: boolean
  _writingBuf: string | Buffer
  _bufs: (string | Buffer)[]
  _len: number
}

/**
 * What sonic-boom's flushSync does (the lines waiting, written synchronously), with each failure
 * final: the rest is given up. A write in flight (`_writing`) is left to finish, as flushSync does.
 * Fails loudly if sonic-boom no longer keeps its lines where this reads them.
 */
function flushOnce(d: SonicBoom): void {
  const s = d as unknown as SonicBoomState
  if (!Array.isArray(s._bufs) || typeof s._writing !== 'boolean' || (typeof s._writingBuf !== 'string' && !Buffer.isBuffer(s._writingBuf))) {
    throw new Error('core/log.ts: sonic-boom changed (no _bufs/_writing/_writingBuf): review flushOnce')
  }
  if (s.destroyed || s.fd < 0) return
  const pending = s._writing ? [...s._bufs] : [s._writingBuf, ...s._bufs]
  if (!s._writing) s._writingBuf = ''
  s._bufs.length = 0
  s._len = s._writing ? s._writingBuf.length : 0
  for (const chunk of pending) {
    let buf = Buffer.from(chunk)
    for (let tries = 0; buf.length; ) {
      try {
        buf = buf.subarray(fs.writeSync(s.fd, buf))
      } catch (err) {
        // A pipe that is full for now (EAGAIN) is waited for a little; anything else ends it.
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || ++tries > 50) return
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10)
      }
    }
  }
}

/** Errors after which stdout takes nothing ever again. */
const GONE = new Set(['EPIPE', 'EBADF', 'ECONNRESET', 'ERR_STREAM_DESTROYED'])

/**
 * What pino writes to: the destination, until it is gone. A log line must never throw into the
 * mail path (a destroyed SonicBoom throws on write: a 250 given, the delivery not yet recorded).
 */
class LogSink implements DestinationStream {
  gone = false
  failing: { since: number; code: string } | undefined
  dropped = 0
  constructor(private readonly destination: ReturnType<typeof pino.destination>) {}
  write(line: string): void {
    if (this.gone) return
    try {
      this.destination.write(line)
    } catch {
      this.gone = true
    }
  }
  flush(cb?: (err?: Error) => void): void {
    if (this.gone) return cb?.()
    try {
      this.destination.flush(cb)
    } catch (err) {
      cb?.(err as Error)
    }
  }
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
