// relay-acl: who may relay to any domain. Clients in `trustedNetworks` and authenticated sessions
// get their recipients accepted at `rcpt`; everyone else only reaches the relay's local domains.
// Put it after plugins that should see every recipient: the first plugin to accept decides.
//
// `senderDomains` also binds what a trusted network may send as, when its client has not
// authenticated: the envelope sender's domain (at MAIL) and every address in the From:, Sender:,
// Resent-From: and Resent-Sender: header fields (at DATA), read every way a mail reader might, must be one of these domains (exactly; a subdomain is another domain),
// else 553 5.7.1. The null sender `<>` passes MAIL (bounces from internal hosts); its headers are
// still checked. A From: with only a display name and no address claims no domain and passes.
// Untrusted clients (mail coming in for local domains) and authenticated sessions (the core
// checks those against the auth plugin's `senders`) are not affected. At `mail` and `data` this
// plugin only refuses or passes on, never accepts, so a plugin listed before it that accepts there
// skips the check.
import { accept, cidr, definePlugin, domainKey, headerAddresses, networkMatcher, parseAddress, reject, z, type SessionInfo } from '../../core/index.js'

// Kept as envelope addresses are compared: lower case, an internationalized domain in A-labels
// (`bücher.example` and `xn--bcher-kva.example` are one domain, as in `localDomains`).
const domain = z
  .string()
  .transform((d) => domainKey(d) ?? '')
  .refine((d) => d !== '' && !d.startsWith('['), { message: 'expected a domain name like example.com' })

const options = z
  .object({
    trustedNetworks: z.array(cidr).default(['127.0.0.0/8', '::1/128']),
    /** Authenticated sessions may relay (AUTH itself is done by an auth plugin). */
    authenticated: z.boolean().default(true),
    /** Domains unauthenticated clients in `trustedNetworks` may send as. Default: any. */
    senderDomains: z.array(domain).min(1).optional(),
  })
  .strict()

type Options = z.output<typeof options>

/** Built once per generation (at setup), read by the hooks as `ctx.state`. */
interface State {
  trusted: (ip: string) => boolean
}

/** The sender domains that bind this session, or undefined when it may send as anyone. */
const boundTo = (options: Options, state: State, session: SessionInfo): string[] | undefined =>
  options.senderDomains && !session.user && state.trusted(session.remoteAddress) ? options.senderDomains : undefined

const inDomains = (address: string, domains: string[]): boolean => {
  const parsed = parseAddress(address)
  return parsed !== undefined && domains.includes(parsed.domain)
}

export default definePlugin({
  name: 'relay-acl',
  options,
  setup: ({ options }): State => ({ trusted: networkMatcher(options.trustedNetworks) }),
  hooks: {
    mail({ session, sender, options, state, log }) {
      const domains = boundTo(options, state, session)
      if (!domains || sender.address === '' || inDomains(sender.address, domains)) return undefined
      log.warn({ client: session.remoteAddress, sender: sender.address }, 'sender refused: not in senderDomains')
      return reject({ code: 553, status: '5.7.1', message: `Sender address <${sender.address}> is not in a domain this network may send as` })
    },
    rcpt({ session, options, state, log }) {
      if (options.authenticated && session.user) return accept('2.1.5', 'Ok (authenticated)')
      if (state.trusted(session.remoteAddress)) return accept('2.1.5', 'Ok')
      log.debug({ client: session.remoteAddress }, 'client may not relay')
      return undefined
    },
    data({ session, headers, options, state, log }) {
      const domains = boundTo(options, state, session)
      if (!domains) return undefined
      // The Resent- fields name the sender of a resend (RFC 5322 §3.6.6), as the core's sender ownership reads them.
      for (const name of ['From', 'Sender', 'Resent-From', 'Resent-Sender']) {
        for (const value of headers.getAll(name)) {
          const foreign = headerAddresses(value).find((address) => !inDomains(address, domains))
          if (foreign === undefined) continue
          log.warn({ client: session.remoteAddress, header: name, address: foreign }, 'message refused: header sender not in senderDomains')
          return reject({ code: 553, status: '5.7.1', message: `${name}: <${foreign}> is not in a domain this network may send as` })
        }
      }
      return undefined
    },
  },
})
