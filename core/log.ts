import pino, { type Logger } from 'pino'

/** Paths that may carry secrets: never written, whatever the level. */
export const REDACT = [
  'password', 'pass', 'secret', 'token',
  '*.password', '*.pass', '*.secret', '*.token',
  '*.*.password', '*.*.pass',
  'auth.credentials', 'options.auth',
]

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { pid: process.pid },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  })
}
