// dkim-sign: DKIM-signs outgoing mail (RSA and/or Ed25519, relaxed/relaxed) at the `queue` hook,
// after every other plugin has changed the headers. Must be the last plugin with a queue hook.
// The relay's own messages (DSNs) it signs at the `generated` hook, by their From: domain.
// Options: options.ts; signing: sign.ts; keys and rotation: keys.ts; `relay doctor`: doctor.ts;
// `relay dkim keygen`: cli.ts. Documentation: README.md.
import addressparser from 'nodemailer/lib/addressparser'
import { definePlugin, parseAddress, tempfail, type HookContexts, type MessageHeaders, type PluginContext, type SessionInfo } from '../../core/index.js'
import { register } from './cli.js'
import { doctor } from './doctor.js'
import { isDomainName, loadKeys, normalizeDomain, signingKeys, type State } from './keys.js'
import { options, type Options } from './options.js'
import { signMessage } from './sign.js'

type Parsed = ReturnType<typeof addressparser>
const addressesOf = (list: Parsed): string[] => list.flatMap((a) => ('group' in a && a.group ? addressesOf(a.group) : a.address ? [a.address] : []))

/** The domain of an address (lower case, A-labels), or undefined when it has none or an IP literal. */
function domainOf(address: string | undefined): string | undefined {
  const at = address ? address.lastIndexOf('@') : -1
  if (!address || at < 0) return undefined
  const domain = normalizeDomain(address.slice(at + 1))
  return isDomainName(domain) ? domain : undefined
}

/**
 * Why the message's From: is not one a signature may vouch for (RFC 6376 §8.15: a signer should
 * not sign what is not valid RFC 5322 in ways that matter for display), or undefined when it is
 * fine: exactly one From: field (RFC 5322 §3.6), naming at least one address, and when it names
 * several, each of them in the signing domain (or a subdomain of it). A second From: or a second
 * author of another domain is what a reader may be shown instead of the signer's own address.
 */
export function unsignableFrom(headers: MessageHeaders, signingDomain: string): string | undefined {
  const fields = headers.getAll('From')
  if (!fields.length) return 'the message has no From: field'
  if (fields.length > 1) return `the message has ${fields.length} From: fields`
  const addresses = addressesOf(addressparser(fields[0]!))
  if (!addresses.length) return 'the From: field names no address'
  if (addresses.length === 1) return undefined
  const ours = (d: string | undefined) => d !== undefined && (d === signingDomain || d.endsWith(`.${signingDomain}`))
  const other = addresses.find((a) => !ours(domainOf(a)))
  return other === undefined ? undefined : `the From: field names several authors, not all of ${signingDomain} (${other.slice(0, 100)})`
}

/** The domain of the first address in From:, or undefined. */
function fromDomain(headers: MessageHeaders): string | undefined {
  const value = headers.get('From')
  return value === undefined ? undefined : domainOf(addressesOf(addressparser(value))[0])
}

/** The domain of the authenticated user (a login that is an address), or undefined. */
function userDomain(session: SessionInfo): string | undefined {
  return session.user && parseAddress(session.user) ? domainOf(session.user) : undefined
}

/** What signing uses of the `queue` and `generated` hooks' contexts. */
type SignContext = Pick<HookContexts['generated'], 'headers' | 'readMessage' | 'convertTo7bit' | 'queueId'> & Pick<PluginContext<Options, State>, 'options' | 'state' | 'log'>

/** Signs the message with the active keys of `domain` (none: it passes unsigned). */
async function sign({ headers, readMessage, convertTo7bit, queueId, options, state, log }: SignContext, domain: string) {
  const keys = signingKeys(state.keys, domain, new Date())
  if (!keys.length) {
    log.debug({ queueId, domain }, 'not signed: no DKIM key for this domain')
    return undefined
  }
  // Sign the form that travels: a next hop without 8BITMIME would get a converted message. Not
  // when the message carries signatures already (the sender's, an ARC seal): converting its
  // body would break them for every next hop, not only for one without 8BITMIME.
  const alreadySigned = headers.has('DKIM-Signature') || headers.has('ARC-Seal') || headers.has('ARC-Message-Signature')
  if (options.sevenBit && !alreadySigned && (await convertTo7bit())) log.debug({ queueId }, '8-bit MIME parts converted to 7-bit before signing')
  const result = await signMessage(readMessage(), keys, { headers: options.headers, oversign: options.oversign })
  // Prepended in reverse, so they stand in the order of the keys (RSA first) at the top.
  for (const value of [...result.values].reverse()) headers.prepend('DKIM-Signature', value)
  if (result.errors.length) {
    if (result.errors.every((e) => e.code === 'ENOFROM')) {
      log.debug({ queueId, domain }, 'not signed: the message has no From: field')
      return undefined
    }
    log.error({ queueId, domain, errors: result.errors }, 'DKIM signing failed')
    // Unsigned mail from a domain with a DMARC policy would be refused downstream: try again later.
    if (!result.values.length) return tempfail({ code: 451, status: '4.3.0', message: 'DKIM signing failed, try again later' })
  }
  const signed = keys.filter((k) => !result.errors.some((e) => e.selector === k.selector && e.domain === k.domain)).map((k) => k.selector)
  log.debug({ queueId, domain, selectors: signed }, 'DKIM signed')
  return undefined
}

/**
 * The domain whose keys sign the relay's own mail from `domain`: itself, else its nearest parent
 * with a key (MAILER-DAEMON@mx.example.com signed d=example.com aligns under DMARC's relaxed rule,
 * the default, as a relay's hostname usually sits below the domain it has keys for).
 */
function ownSigningDomain(keys: State['keys'], domain: string): string {
  const now = new Date()
  const labels = domain.split('.')
  for (let i = 0; i < labels.length - 1; i++) {
    const candidate = labels.slice(i).join('.')
    if (signingKeys(keys, candidate, now).length) return candidate
  }
  return domain
}

export default definePlugin<Options, State>({
  name: 'dkim-sign',
  options,
  /** Reads the key files (relative paths from the config file's directory): `ctx.state.keys`. */
  setup({ options, log, resolvePath }) {
    const keys = loadKeys(options.keys, resolvePath)
    const now = new Date()
    log.info(
      {
        keys: keys.map((k) => ({ domain: k.domain, selector: k.selector, type: k.type, activeFrom: k.activeFrom?.toISOString(), signing: signingKeys(keys, k.domain, now).includes(k) })),
        signBy: options.signBy,
      },
      'DKIM keys loaded',
    )
    return { keys }
  },
  hooks: {
    async queue({ session, envelope, headers, readMessage, convertTo7bit, queueId, options, state, log, isLocalDomain }) {
      if (!options.signInbound && !session.user && envelope.recipients.every((r) => isLocalDomain(parseAddress(r.address)?.domain ?? ''))) {
        log.debug({ queueId, client: session.remoteAddress }, 'not signed: inbound mail (unauthenticated, local recipients only)')
        return undefined
      }
      const domain = options.signBy === 'user' ? userDomain(session) : fromDomain(headers)
      // The From: is checked first (signBy 'from' finds no domain in a missing or empty From:).
      const badFrom = unsignableFrom(headers, domain ?? '')
      if (badFrom && (domain || options.signBy === 'from')) {
        log.warn({ queueId, client: session.remoteAddress, user: session.user, domain, reason: badFrom }, `not signed: ${badFrom}`)
        return undefined
      }
      if (!domain) {
        log.debug({ queueId, signBy: options.signBy, user: session.user }, options.signBy === 'user' ? 'not signed: no authenticated user with an address' : 'not signed: no From: address')
        return undefined
      }
      return sign({ headers, readMessage, convertTo7bit, queueId, options, state, log }, domain)
    },

    /**
     * The relay's own messages (DSNs from MAILER-DAEMON@<hostname>): signed by their From: domain
     * whatever `signBy` says (there is no user), so that their From: aligns for DMARC.
     */
    async generated({ headers, readMessage, convertTo7bit, queueId, options, state, log }) {
      const domain = fromDomain(headers)
      const badFrom = unsignableFrom(headers, domain ?? '')
      if (badFrom || !domain) {
        log.warn({ queueId, domain, reason: badFrom }, `the relay's own message not signed: ${badFrom ?? 'no From: address'}`)
        return undefined
      }
      return sign({ headers, readMessage, convertTo7bit, queueId, options, state, log }, ownSigningDomain(state.keys, domain))
    },
  },
  doctor,
  commands: register,
})
