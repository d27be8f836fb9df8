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

/**
 * A block wider than any one organisation's network (shorter than /8, or /7 for IPv6, the size of
 * fc00::/7: 0.0.0.0/0, ::/0, 2000::/3): trusting it lets much of the internet relay, an open relay.
 */
function coversTheInternet(block: string): boolean {
  const [address = '', bits] = block.split('/')
  const v6 = address.includes(':')
  const prefix = bits === undefined ? (v6 ? 128 : 32) : Number(bits)
  // ::ffff:0:0/96 is every IPv4 address, as IPv4-mapped IPv6.
  if (v6 && /^::ffff:/i.test(address)) return prefix - 96 < 8
  return prefix < (v6 ? 7 : 8)
}

const options = z
  .object({
    trustedNetworks: z.array(cidr).default(['127.0.0.0/8', '::1/128']),
    /** Authenticated sessions may relay (AUTH itself is done by an auth plugin). */
    authenticated: z.boolean().default(true),
    /** Domains unauthenticated clients in `trustedNetworks` may send as. Default: any. */
    senderDomains: z.array(domain).min(1).optional(),
    /** Says that a network wider than /8 (/7 for IPv6), 0.0.0.0/0 say, is meant: only a firewall then keeps strangers out. */
    openRelay: z.boolean().default(false),
  })
  .strict()
  .superRefine((o, ctx) => {
    if (o.openRelay) return
    o.trustedNetworks.forEach((block, i) => {
      if (!coversTheInternet(block)) return
      ctx.addIssue({
        code: 'custom',
        path: ['trustedNetworks', i],
        message: `${block} trusts much of the internet: anyone there could relay mail through this relay (an open relay). List your own networks; if only a firewall keeps strangers out and this is meant, add openRelay: true`,
      })
    })
  })

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
