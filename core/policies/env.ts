import type { Logger } from 'pino'
import type { RelayConfig } from '../config/schema.js'
import type { EventContexts, EventName } from '../hooks/types.js'
import type { Queue } from '../queue/types.js'

/** What the core's own policies need from the running relay. */
export interface PolicyEnv {
  /** The config generation in force: hot reload hands over a new object, so never keep one. */
  config: () => RelayConfig
  queue: Pick<Queue, 'isSuppressed'>
  log: Logger
  /** Tells observers and plugins of an event (`suppressed`); never throws. */
  emit: <K extends EventName>(event: K, data: EventContexts[K]) => void
}

/** Core policies are plugins whose names start with this: their refusals carry no `plugin`. */
export const CORE_PREFIX = 'core:'
export const isCorePolicy = (pluginName: string | undefined): boolean => pluginName?.startsWith(CORE_PREFIX) ?? false
