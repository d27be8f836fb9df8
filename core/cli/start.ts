import { loadConfig } from '../config/load.js'
import { Relay } from '../relay.js'

/** `relay start`: runs until SIGTERM/SIGINT, then stops accepting and drains (up to shutdownTimeout). */
export async function start(opts: { config?: string }): Promise<void> {
  const config = await loadConfig(opts.config)
  const relay = new Relay(config)
  let stopping = false
  const stop = (signal: string) => {
    if (stopping) {
      relay.log.warn(`${signal} again: exiting now`)
      process.exit(1)
    }
    stopping = true
    relay.log.info({ signal }, 'shutting down')
    relay.stop().then(
      () => process.exit(0),
      (err) => {
        relay.log.error({ err }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  // A bug in one session must not take the others down; it is logged loudly instead.
  process.on('uncaughtException', (err) => relay.log.fatal({ err }, 'uncaught exception'))
  process.on('unhandledRejection', (err) => relay.log.error({ err }, 'unhandled promise rejection'))
  await relay.start()
}
