import { ConfigError, loadConfig } from '../config/load.js'
import { searchPlaces } from '../config/find.js'
import { checkConfigPaths } from '../config/check-paths.js'
import { configWarnings } from '../config/warnings.js'
import { Relay } from '../relay.js'
import { flushLogs } from '../log.js'
import cluster from 'node:cluster'
import { workerCount } from '../workers/share.js'
import { privilegedPortHint } from '../net/listen-error.js'
import { errorText } from '../error-text.js'

let exitCode: number | undefined
/** Exits once the logs are out; the first code asked for wins (a forced exit's 1 over a drain's 0). */
function exit(code: number): void {
  if (exitCode !== undefined) return
  exitCode = code
  void flushLogs().then(() => process.exit(code))
}

/**
 * `relay start`: runs until SIGTERM/SIGINT, then stops accepting and drains (up to shutdownTimeout).
 * Without a config file it runs on the defaults (the README's quick start), saying where it looked.
 * A config problem (invalid, unreadable TLS files, a data directory it cannot write, a plugin that
 * fails its setup) is a ConfigError: exit 2 with the message. Any other failure to start (a port in
 * use, the relay's or a plugin's; another relay on the data directory) is one line, exit 1, and a
 * log line. Never a stack trace, on the terminal or in the log, but at log level debug.
 */
export async function start(opts: { config?: string }): Promise<void> {
  const config = await loadConfig(opts.config)
  // Config `workers` > 1: this process is one of the primary's SMTP workers (core/workers).
  if (cluster.isWorker) return (await import('../workers/smtp-worker.js')).runSmtpWorker(config, workerCount(config))
  // The files it names, before anything is opened: all their problems at once, named by key.
  const pathIssues = checkConfigPaths(config)
  if (pathIssues.length) throw new ConfigError(config.configFile, pathIssues)
  const relay = new Relay(config)
  if (!config.configFile) relay.log.warn({ searched: searchPlaces() }, 'no config file found: running on the defaults')
  for (const w of configWarnings(config)) relay.log.warn({ key: w.path }, `${w.path}: ${w.message}`)
  // A plugin that ends the process while the relay starts (process.exit in its setup) would leave
  // nothing said and exit 0, as if the relay had run and stopped.
  const endedWhileStarting = (code: number) => {
    process.stderr.write(`relay: cannot start: the process was ended while starting (exit ${code}): a plugin called process.exit()?\n`)
    if (!code) process.exitCode = 1
  }
  let stoppingSince = 0
  const stop = (signal: string) => {
    process.off('exit', endedWhileStarting)
    if (stoppingSince) {
      // The same signal often arrives twice at once (timeout(1), process groups): only a
      // repeat some time later means "exit now"; the queue keeps whatever is unfinished.
      if (Date.now() - stoppingSince < 2000) return
      relay.log.warn(`${signal} again: exiting now`)
      return exit(1)
    }
    stoppingSince = Date.now()
    relay.log.info({ signal }, 'shutting down')
    relay.stop().then(
      () => exit(0),
      (err) => {
        relay.log.error({ err }, 'shutdown failed')
        exit(1)
      },
    )
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  // Hot reload: config, plugins and their options, certificates, user files (core/reload.ts).
  process.on('SIGHUP', () => {
    relay.log.info('SIGHUP: reloading the config')
    void relay.reload()
  })
  // A queue verb that worked on the queue itself (no admin listener) asks for a scan: what it
  // released, flushed or bounced goes now, not at the next idle scan.
  process.on('SIGUSR2', () => {
    relay.log.info('SIGUSR2: scanning the queue')
    relay.wake()
  })
  // A bug in one session must not take the others down; it is logged loudly instead.
  process.on('uncaughtException', (err) => {
    // A throw in here would end the process (exit 7): the one thing this handler is for not doing.
    try {
      relay.log.fatal({ err }, 'uncaught exception')
      void flushLogs()
    } catch {
      // logging is gone: the relay goes on
    }
  })
  process.on('unhandledRejection', (err) => relay.log.error({ err }, 'unhandled promise rejection'))
  process.on('exit', endedWhileStarting)
  try {
    await relay.start()
    process.off('exit', endedWhileStarting)
  } catch (err) {
    process.off('exit', endedWhileStarting)
    // One line on stderr (main.ts prints a config problem's, exit 2); the stack only at level debug:
    // at start it is journal noise that buries the line that names the key or plugin.
    const cause = (err as { cause?: NodeJS.ErrnoException }).cause
    // A plugin's setup that failed in a system call (its port in use) cannot start, like a listener.
    const system = cause?.syscall !== undefined
    relay.log.debug({ err }, 'cannot start: details')
    const code = (cause ?? (err as NodeJS.ErrnoException)).code
    // A plugin's own listener below 1024 (a core listener's message has the hint already).
    const text = err instanceof ConfigError ? err.issues.map((i) => `${i.path}: ${i.message}`).join('; ') + privilegedPortHint(cause) : errorText(err)
    // A config problem is the operator's at the terminal, as a core key's; anything else is logged too.
    if (!(err instanceof ConfigError) || system) relay.log.fatal({ error: text, code }, 'cannot start')
    await flushLogs()
    if (err instanceof ConfigError && !system) throw err
    process.stderr.write(`relay: cannot start: ${text}${code && !text.includes(code) ? ` (${code})` : ''}\n`)
    process.exit(1)
  }
}
