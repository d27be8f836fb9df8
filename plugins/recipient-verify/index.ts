// recipient-verify: mail for a local domain that cannot be delivered is refused at RCPT, in the
// session, instead of being accepted and bounced later (a bounce to a forged sender is backscatter).
//   static      a list of valid recipients (inline and/or a file read again when it changes):
//               an address it does not name gets 550 5.1.1 "User unknown" (Postfix's wording)
//   call-ahead  the next hop (the domain's mail store, given as a route) is asked with a RCPT probe,
//               results cached, like Postfix's reject_unverified_recipient; a next hop that is down,
//               too slow or answers 4xx gives 450 4.1.1 (the client tries again), never acceptance
// An address the static list names is valid without a probe. This plugin never accepts: a valid
// recipient passes on to the other plugins and the core's relay rules. Non-local domains pass.
import { clientKey, definePlugin, reject, tempfail, type SetupContext, type WatchedFile } from '../../core/index.js'
import { ProbeCache } from './cache.js'
import { probePlaces, type ProbePlaces } from './places.js'
import { options, type CallAhead, type Options, type ProbeRoute } from './options.js'
import { probe, type ProbeResult } from './probe.js'
import { asciiDomain, parseRecipientFile, StaticList, type Lookup } from './static-list.js'

interface State {
  list: StaticList
  callAhead?: { opts: CallAhead & { heloName: string }; cache: ProbeCache<ProbeResult>; places: ProbePlaces }
}

function routeFor(routes: ProbeRoute[], domain: string): ProbeRoute | undefined {
  return routes.find((r) => {
    const patterns = r.match.domain
    if (!patterns) return true
    return patterns.some((p) => {
      const want = p.startsWith('*.') ? `*.${asciiDomain(p.slice(2))}` : asciiDomain(p)
      return want.startsWith('*.') ? domain.length > want.length - 1 && domain.endsWith(want.slice(1)) : domain === want
    })
  })
}

/**
 * This generation's state (`ctx.state`). The file (relative to the config file's directory) must be
 * readable at setup; after that a change is read again, a bad one keeping the last good list.
 */
function setupState({ options, hostname, log, resolvePath, watchFile, processes }: SetupContext<Options>): State {
  const file = options.file === undefined ? undefined : resolvePath(options.file)
  let fromFile: WatchedFile<Lookup> | undefined
  try {
    fromFile = file === undefined ? undefined : watchFile(file, (text) => parseRecipientFile(text, file, log))
  } catch (err) {
    throw new Error(`file: cannot read the recipient file: ${(err as Error).message}`)
  }
  const list = new StaticList(options.recipients, fromFile)
  const ca = options.callAhead
  if (!ca) return { list }
  // A relative unix socket is taken from the config file's directory too.
  const routes = ca.routes.map((r) => (r.kind === 'lmtp' && r.socket ? { ...r, socket: resolvePath(r.socket) } : r))
  return { list, callAhead: { opts: { ...ca, routes, heloName: ca.helo ?? hostname }, cache: new ProbeCache(ca.cacheSize), places: probePlaces(processes, ca.maxConcurrent, ca.perClient, ca.timeout) } }
}

/** Session note: how many new probes this session has caused. */
const PROBES_NOTE = 'recipient-verify:probes'

const unknownUser = (address: string) => reject({ code: 550, status: '5.1.1', message: `<${address}>: Recipient address rejected: User unknown` })

export default definePlugin({
  name: 'recipient-verify',
  options,
  setup: setupState,
  hooks: {
    async rcpt({ recipient, domain, isLocal, options, state, log, resolver, session, notes }) {
      if (!isLocal) return undefined
      const d = domain.toLowerCase()
      if (options.domains && !options.domains.includes(d)) return undefined
      const address = recipient.address
      // RFC 5321 §4.5.1: postmaster must always be accepted.
      if (address.toLowerCase().startsWith('postmaster@')) return undefined
      if (state.list.has(address)) return undefined

      const route = state.callAhead && routeFor(state.callAhead.opts.routes, d)
      if (!route) return state.list.configured ? unknownUser(address) : undefined

      const { opts, cache, places } = state.callAhead!
      const key = address.toLowerCase()
      let place: string | undefined
      if (!cache.known(key)) {
        // A session's new probes are counted: past callAhead.perSession the rest wait for a later session.
        const asked = (notes.session.get(PROBES_NOTE) as number | undefined) ?? 0
        if (opts.perSession > 0 && asked >= opts.perSession) {
          log.warn({ to: address, limit: opts.perSession }, 'recipient not verified: callAhead.perSession probes made in this session; answering 450')
          return tempfail({ code: 450, status: '4.7.1', message: `<${address}>: Recipient address rejected: too many addresses to verify in one session; send the rest later` })
        }
        // A new probe needs a place (callAhead.maxConcurrent for the whole relay, perClient for one client: places.ts).
        const taken = await places.take(clientKey(session.remoteAddress))
        if (taken === 'relay' || taken === 'client') {
          const limit = taken === 'relay' ? 'maxConcurrent' : 'perClient'
          log.warn({ to: address, limit: opts[limit] }, `recipient not verified: callAhead.${limit} probes running; answering 450`)
          return tempfail({ code: 450, status: taken === 'relay' ? '4.1.1' : '4.7.1', message: `<${address}>: Recipient address rejected: unverified address: too many verifications running; try again later` })
        }
        place = taken
        notes.session.set(PROBES_NOTE, asked + 1)
      }
      const { value: r, cached } = await cache
        .lookup(
          key,
          () => probe(route, address, opts, resolver),
          (v) => (v.outcome === 'accepted' ? opts.positiveTtl : v.outcome === 'refused' ? opts.negativeTtl : 0),
        )
        .finally(() => place && places.give(place))
      log.debug({ to: address, outcome: r.outcome, cached, host: r.host, reply: r.reply }, 'recipient verified')
      if (r.outcome === 'accepted') return undefined
      if (r.outcome === 'refused') {
        return reject({ code: 550, status: '5.1.1', message: `<${address}>: Recipient address rejected: undeliverable address: ${r.host ? `host ${r.host} said: ` : ''}${r.reply}` })
      }
      if (r.dnsFailure) {
        // RFC 3463 X.4.3: directory (DNS) server failure. The relay's own routing is at fault, so
        // the client tries again later, as for any other failure to ask the next hop.
        log.warn({ to: address, host: r.host, reason: r.reply }, 'recipient verification failed: next hop not found in DNS; answering 450')
        return tempfail({ code: 450, status: '4.4.3', message: `<${address}>: Recipient address rejected: unverified address: ${r.reply}; try again later` })
      }
      log.warn({ to: address, host: r.host, reason: r.reply }, 'recipient verification failed; answering 450')
      return tempfail({ code: 450, status: '4.1.1', message: `<${address}>: Recipient address rejected: unverified address: verification failed (${r.reply}); try again later` })
    },
  },
})
