// Hard-bounced addresses (and those added with `relay suppression add`) are refused at RCPT: a
// lookup in the queue database, for recipients that got past every other rcpt decision. Never for
// the relay's postmaster (RFC 5321 §4.5.1: always taken), whatever entry an older relay or the
// queue database holds for it.
import type { Plugin } from '../hooks/types.js'
import { CORE_REPLIES, refusal } from '../hooks/verdict.js'
import { isRelayPostmaster } from '../smtp/postmaster.js'
import type { PolicyEnv } from './env.js'

export const suppression = ({ config, queue, emit }: PolicyEnv): Plugin => ({
  name: 'core:suppression',
  hooks: {
    async rcpt({ session, recipient }) {
      if (!config().delivery.suppression.enabled || isRelayPostmaster(recipient.address, config())) return
      const suppressed = await queue.isSuppressed(recipient.address).catch((err: Error) => {
        // Logged by the bus as this policy's failure: say it was the queue database (a cluster's PostgreSQL) that failed.
        throw Object.assign(new Error(`the suppression lookup in the queue database failed: ${err.message}`, { cause: err }), { kind: (err as { kind?: unknown }).kind })
      })
      if (!suppressed) return
      emit('suppressed', { session, recipient: recipient.address, reason: suppressed.reason, source: suppressed.source })
      return refusal(CORE_REPLIES.suppressed(recipient.address, suppressed.reason))
    },
  },
})
