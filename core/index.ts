// The public API of Relay. Plugins and configs import from here only.
import { z } from 'zod'
import type { Plugin } from './hooks/types.js'

export { defineConfig } from './config/schema.js'
export type { RelayConfig, RelayConfigInput } from './config/schema.js'
export { accept, reject, tempfail, route, replyFor, STAGE_REPLIES } from './hooks/verdict.js'
export type { Reply } from './hooks/verdict.js'
export type * from './hooks/types.js'
export { MessageHeaders } from './mail/headers.js'
export { parseAddress } from './mail/address.js'
export { duration, durationAtLeast, size, cidr, httpUrl } from './config/fields.js'
export { networkMatcher } from './net/networks.js'
export { z }

/** Declares a plugin: a name, optional zod schema for its options, optional setup, and hooks. */
export function definePlugin<O = Record<string, never>>(plugin: Plugin<O>): Plugin<O> {
  return plugin
}
