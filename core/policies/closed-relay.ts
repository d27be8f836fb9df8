// Closed by default: a recipient no plugin accepted gets in only for a local domain (config
// `localDomains`). Runs after the user plugins; one that accepts skips it.
import type { Plugin } from '../hooks/types.js'
import { CORE_REPLIES, refusal } from '../hooks/verdict.js'

export const closedRelay = (): Plugin => ({
  name: 'core:closed-relay',
  hooks: {
    rcpt({ recipient, isLocal }) {
      if (!isLocal) return refusal(CORE_REPLIES.relayingDenied(recipient.address))
    },
  },
})
