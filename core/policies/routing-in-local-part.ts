// `user%other@local`, `other!user@local`, `"user@other"@local`: mail stores may route these on,
// so a local domain refuses them unless config `smtp.allowRoutingInLocalPart`.
import type { Plugin } from '../hooks/types.js'
import { CORE_REPLIES, refusal } from '../hooks/verdict.js'
import { hasRoutingInLocalPart, parseAddress } from '../mail/address.js'
import type { PolicyEnv } from './env.js'

export const routingInLocalPart = ({ config }: PolicyEnv): Plugin => ({
  name: 'core:routing-in-local-part',
  hooks: {
    rcpt({ recipient, isLocal }) {
      if (!isLocal || config().smtp.allowRoutingInLocalPart) return
      const parsed = parseAddress(recipient.address)
      if (parsed && hasRoutingInLocalPart(parsed.local)) return refusal(CORE_REPLIES.routingInLocalPart(recipient.address))
    },
  },
})
