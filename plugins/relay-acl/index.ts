// relay-acl: who may relay to any domain. Clients in `trustedNetworks` and authenticated sessions
// get their recipients accepted at `rcpt`; everyone else only reaches the relay's local domains.
// Put it after plugins that should see every recipient: the first plugin to accept decides.
//
// `senderDomains` also binds what a trusted network may send as, when its client has not
// authenticated: the envelope sender's domain (at MAIL) and every address in the From: and Sender:
// header fields (at DATA) must be one of these domains (exactly; a subdomain is another domain),
// else 553 5.7.1. The null sender `<>` passes MAIL (bounces from internal hosts); its headers are
// still checked. A From: with only a display name and no address claims no domain and passes.
// Untrusted clients (mail coming in for local domains) and authenticated sessions (the core
// checks those against the auth plugin's `senders`) are not affected. At `mail` and `data` this
// plugin only refuses or passes on, never accepts, so a plugin listed before it that accepts there
// skips the check.
import addressparser from 'nodemailer/lib/addressparser'
import { accept, cidr, definePlugin, networkMatcher, parseAddress, reject, z, type SessionInfo } from '../../core/index.js'

const domain = z
  .string()
  .transform((d) => d.toLowerCase())
  .refine((d) => parseAddress(`x@${d}`)?.domain === d && !d.startsWith('['), { message: 'expected a domain name like example.com' })

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

// Matcher built once per options object (options are fixed for the plugin's life).
const matchers = new WeakMap<object, (ip: string) => boolean>()
const trusted = (options: Options, session: SessionInfo): boolean => {
  let match = matchers.get(options)
  if (!match) matchers.set(options, (match = networkMatcher(options.trustedNetworks)))
  return match(session.remoteAddress)
}

/** The sender domains that bind this session, or undefined when it may send as anyone. */
const boundTo = (options: Options, session: SessionInfo): string[] | undefined =>
  options.senderDomains && !session.user && trusted(options, session) ? options.senderDomains : undefined

const inDomains = (address: string, domains: string[]): boolean => {
  const parsed = parseAddress(address)
  return parsed !== undefined && domains.includes(parsed.domain)
}

type Parsed = ReturnType<typeof addressparser>
const addressesOf = (list: Parsed): string[] => list.flatMap((a) => ('group' in a && a.group ? addressesOf(a.group) : a.address ? [a.address] : []))

export default definePlugin({
  name: 'relay-acl',
  options,
  hooks: {
    mail({ session, sender, options, log }) {
      const domains = boundTo(options, session)
      if (!domains || sender.address === '' || inDomains(sender.address, domains)) return undefined
      log.warn({ client: session.remoteAddress, sender: sender.address }, 'sender refused: not in senderDomains')
      return reject({ code: 553, status: '5.7.1', message: `Sender address <${sender.address}> is not in a domain this network may send as` })
    },
    rcpt({ session, options, log }) {
      if (options.authenticated && session.user) return accept('2.1.5', 'Ok (authenticated)')
      if (trusted(options, session)) return accept('2.1.5', 'Ok')
      log.debug({ client: session.remoteAddress }, 'client may not relay')
      return undefined
    },
    data({ session, headers, options, log }) {
      const domains = boundTo(options, session)
      if (!domains) return undefined
      for (const name of ['From', 'Sender']) {
        for (const value of headers.getAll(name)) {
          const foreign = addressesOf(addressparser(value)).find((address) => !inDomains(address, domains))
          if (foreign === undefined) continue
          log.warn({ client: session.remoteAddress, header: name, address: foreign }, 'message refused: header sender not in senderDomains')
          return reject({ code: 553, status: '5.7.1', message: `${name}: <${foreign}> is not in a domain this network may send as` })
        }
      }
      return undefined
    },
  },
})
