// An authenticated user sends only as what its backend lists for it (the auth hook's `senders`):
// the envelope sender at MAIL FROM and, at DATA, the header fields that say who sent the message:
// From:, Sender:, and their Resent- forms (RFC 5322 §3.6.6), which name the sender of a resend.
import type { MessageHeaders } from '../mail/headers.js'
import { addressKey, domainKey, parseAddress } from '../mail/address.js'
import { headerAddresses } from '../mail/header-addresses.js'
import type { Plugin } from '../hooks/types.js'
import { CORE_REPLIES, refusal } from '../hooks/verdict.js'
import type { PolicyEnv } from './env.js'

/**
 * Whether `address` is one the user may send as: an entry `'*'`, the address itself, or its
 * domain (`example.com` or `@example.com`). Case-insensitive, and a domain is the same in its
 * Unicode and its A-label spelling (`bücher.example`, `xn--bcher-kva.example`): MAIL FROM has
 * already made it ASCII, a header or a senders list may hold either.
 */
export function senderAllowed(address: string, senders: readonly string[]): boolean {
  // Only a plain local@domain can be owned (`a@evil.test@example.com` is nobody's).
  const parsed = parseAddress(address)
  if (!parsed) return false
  const key = addressKey(address)
  return senders.some((entry) => {
    if (entry === '*') return true
    // An entry that does not parse matches nothing.
    if (entry.includes('@') && !entry.startsWith('@')) return addressKey(entry) === key
    return domainKey(entry.startsWith('@') ? entry.slice(1) : entry) === parsed.domain
  })
}

/** Addresses the sender header fields (From:, Sender:, Resent-From:, Resent-Sender:) can be read as that the user may not send as. */
export function foreignHeaderSenders(headers: MessageHeaders, senders: readonly string[]): string[] {
  const out: string[] = []
  for (const name of ['From', 'Sender', 'Resent-From', 'Resent-Sender']) {
    for (const value of headers.getAll(name)) {
      for (const address of headerAddresses(value)) if (!senderAllowed(address, senders)) out.push(address)
    }
  }
  return out
}

export const senderOwnership = ({ log }: PolicyEnv): Plugin => ({
  name: 'core:sender-ownership',
  hooks: {
    mail({ session, sender }) {
      if (!session.user || sender.address === '' || senderAllowed(sender.address, session.senders ?? [])) return
      // The refusal's own log line (msg 'refused') names the user and the sender.
      return refusal(CORE_REPLIES.senderNotOwned(sender.address, session.user))
    },
    data({ session, headers }) {
      if (!session.user) return
      const foreign = foreignHeaderSenders(headers, session.senders ?? [])
      if (!foreign.length) return
      log.warn({ session: session.id, user: session.user, header: foreign }, 'message refused: a sender header field (From, Sender, Resent-From, Resent-Sender) not owned by the authenticated user')
      return refusal(CORE_REPLIES.headerSenderNotOwned(foreign[0]!, session.user))
    },
  },
})
