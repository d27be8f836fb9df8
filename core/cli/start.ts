import { loadConfig } from '../config/load.js'
import { Relay } from '../relay.js'
import { flushLogs } from '../log.js'

function exit(code: number): void {
  void flushLogs().then(() => process.exit(code))
}

/** `relay start`: runs until SIGTERM/SIGINT, then stops accepting and drains (up to shutdownTimeout). */
export async function start(opts: { config?: string }): Promise<void> {
  const config = await loadConfig(opts.config)
  const relay = new Relay(config)
  let stoppingSince = 0
  const stop = (signal: string) => {
    if (stoppingSince) {
      // The same signal often arrives twice at once (timeout(1), process groups): only a
      // repeat some time later means "exit now"; the queue keeps whatever is unfinished.
      if (Date.now() - stoppingSince < 2000) return
      relay.log.warn(`${signal} again: exiting now`)
      exit(1)
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
  // A bug in one session must not take the others down; it is logged loudly instead.
  process.on('uncaughtException', (err) => {
    relay.log.fatal({ err }, 'uncaught exception')
    void flushLogs()
  })
  process.on('unhandledRejection', (err) => relay.log.error({ err }, 'unhandled promise rejection'))
  await relay.start()
}
