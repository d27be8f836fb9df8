// The core's own policies, as plugins (names start with 'core:'; their refusals carry no `plugin`
// in the `rejected` event). Hook order at each stage: `first`, the config's plugins, `last`; then
// `accepted` for a recipient that got through (not skipped by a plugin's accept).
import type { Plugin } from '../hooks/types.js'
import type { PolicyEnv } from './env.js'
import { closedRelay } from './closed-relay.js'
import { routingInLocalPart } from './routing-in-local-part.js'
import { senderOwnership } from './sender-ownership.js'
import { suppression } from './suppression.js'

export type { PolicyEnv } from './env.js'
export { CORE_PREFIX, isCorePolicy } from './env.js'

export interface CorePolicies {
  /** Before the config's plugins: refusals no plugin may overrule. */
  first: Plugin[]
  /** After them, only when none decided: the closed-relay default deny. */
  last: Plugin[]
  /**
   * Recipients that passed every rcpt decision, accepted by a plugin or not. Not a bus stage: the
   * SMTP adapter runs these itself (a suppressed address is refused even when a plugin accepted it,
   * and a stranger asking to relay learns "Relaying denied", not the suppression list).
   */
  accepted: Plugin[]
}

export function corePolicies(env: PolicyEnv): CorePolicies {
  return {
    first: [senderOwnership(env), routingInLocalPart(env)],
    last: [closedRelay()],
    accepted: [suppression(env)],
  }
}
