// relay-acl: who may relay to any domain. Clients in `trustedNetworks` and authenticated sessions
// get their recipients accepted at `rcpt`; everyone else only reaches the relay's local domains.
// Put it after plugins that should see every recipient: the first plugin to accept decides.
import net from 'node:net'
import { accept, definePlugin, z } from '../../core/index.js'

const cidr = z.string().refine(
  (s) => {
    const [ip, bits, extra] = s.split('/')
    const family = net.isIP(ip ?? '')
    if (!family || extra !== undefined) return false
    if (bits === undefined) return true
    const n = Number(bits)
    return /^\d+$/.test(bits) && n >= 0 && n <= (family === 4 ? 32 : 128)
  },
  { message: "expected an IP address or CIDR block, like '10.0.0.0/8' or '2001:db8::/32'" },
)

const options = z
  .object({
    trustedNetworks: z.array(cidr).default(['127.0.0.0/8', '::1/128']),
    /** Authenticated sessions may relay (AUTH itself is done by an auth plugin). */
    authenticated: z.boolean().default(true),
  })
  .strict()

/** A matcher for a list of CIDR blocks; IPv4-mapped IPv6 addresses match their IPv4 block. */
export function networkMatcher(blocks: string[]): (ip: string) => boolean {
  const list = new net.BlockList()
  for (const block of blocks) {
    const [ip, bits] = block.split('/') as [string, string | undefined]
    const family = net.isIP(ip) === 6 ? 'ipv6' : 'ipv4'
    list.addSubnet(ip, bits === undefined ? (family === 'ipv4' ? 32 : 128) : Number(bits), family)
  }
  return (ip) => {
    const plain = ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7)) ? ip.slice(7) : ip
    const family = net.isIP(plain)
    return family !== 0 && list.check(plain, family === 4 ? 'ipv4' : 'ipv6')
  }
}

export default definePlugin({
  name: 'relay-acl',
  options,
  hooks: {
    rcpt({ session, options, log }) {
      if (options.authenticated && session.user) return accept('2.1.5', 'Ok (authenticated)')
      // Matcher built once per options object (options are fixed for the plugin's life).
      const trusted = matchers.get(options) ?? matchers.set(options, networkMatcher(options.trustedNetworks)).get(options)!
      if (trusted(session.remoteAddress)) return accept('2.1.5', 'Ok')
      log.debug({ client: session.remoteAddress }, 'client may not relay')
      return undefined
    },
  },
})

const matchers = new WeakMap<object, (ip: string) => boolean>()
