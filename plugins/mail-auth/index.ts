// mail-auth: SPF, DKIM, DMARC and ARC checks of mail arriving on `mx` listeners (mailauth does the
// checking), one Authentication-Results field with the results (RFC 8601), DMARC policy applied,
// and optionally an ARC seal (RFC 8617) on the message before it is queued for onward delivery.
// Authenticated sessions, submission listeners and `skipNetworks` are not checked. See README.md.
//
//   plugins: [['mail-auth', { spf: { fail: 'mark' }, dmarc: { reject: 'reject' }, arcSeal: { domain, selector, privateKeyFile } }]]
import { definePlugin, networkMatcher, reject, tempfail, type DoctorCheck, type SessionInfo } from '../../core/index.js'
import { options, type MailAuthOptions } from './options.js'
import { mailauthResolver } from './dns.js'
import { checkSpf, MAX_AUTHOR_DOMAINS, type BadFrom, type DmarcCheck, type MessageChecks, type SPFResult } from './checks.js'
import { formatAuthResults, stripForged } from './auth-results.js'
import { loadSealKey, type SealKey } from './arc-seal.js'
import { limitSignatures, MAX_SIGNED_FIELDS, withHeader } from './dkim-limit.js'
import { CheckPool, CheckTimeoutError, PoolBusyError } from './pool.js'

/** The header a failed DMARC `quarantine` policy adds; mail stores file such mail as spam. */
export const QUARANTINE_HEADER = 'X-Relay-Quarantine'

interface SessionState {
  /** The current transaction's SPF result (from MAIL). */
  spf?: { sender: string; result: SPFResult }
  /** What the `queue` hook seals with, set by `data` for the message in flight. */
  seal?: { cv: 'none' | 'pass' | 'fail'; authResults: string; shouldSeal: boolean }
  touched: number
}

/**
 * This generation's state (`ctx.state`): per SMTP session, keyed by session.id (hooks get a fresh
 * session object each call), dropped at `sessionClosed`; stale entries (a missed close) are swept
 * when the map grows. The worker threads (DNS through the relay's resolver) start at setup.
 */
interface State {
  sessions: Map<string, SessionState>
  key?: SealKey
  skip: (ip: string) => boolean
  pool: CheckPool
  /** Torn down (hot reload): hook calls still running get no new threads. */
  closed?: boolean
}
const MAX_SESSIONS = 10_000
const STALE_MS = 2 * 3_600_000

function poolOf(st: State | undefined): CheckPool {
  if (!st || st.closed) throw new Error('mail-auth was shut down (reloaded): the message is deferred')
  return st.pool
}

function sessionState({ sessions }: State, id: string): SessionState {
  let st = sessions.get(id)
  if (!st) {
    if (sessions.size >= MAX_SESSIONS) {
      const cutoff = Date.now() - STALE_MS
      for (const [k, v] of sessions) if (v.touched < cutoff) sessions.delete(k)
    }
    st = { touched: Date.now() }
    sessions.set(id, st)
  }
  st.touched = Date.now()
  return st
}

/** The ARC key, its file (if any) taken from the config file's directory. */
function sealKey(arcSeal: NonNullable<MailAuthOptions['arcSeal']>, resolvePath: (file: string) => string): SealKey {
  return loadSealKey(arcSeal.privateKeyFile === undefined ? arcSeal : { ...arcSeal, privateKeyFile: resolvePath(arcSeal.privateKeyFile) })
}

/** Mail coming in from outside: an `mx` listener, no AUTH, not a skipped network. */
const checked = (st: State, session: SessionInfo): boolean => session.listener.role === 'mx' && !session.user && !st.skip(session.remoteAddress)

const weaker = { reject: 'quarantine', quarantine: 'none', none: 'none' } as const
const STRENGTH = { none: 0, quarantine: 1, reject: 2 } as const

/**
 * Whether an identifier (a DKIM d=, the SPF domain) might align with an Author Domain in relaxed
 * mode: the same domain, or one a subdomain of the other. (Siblings under one organisational
 * domain are left out: telling them apart from unrelated domains takes the DNS tree walk.)
 */
function mayAlign(id: string, author: string): boolean {
  const a = author.toLowerCase()
  return id === a || id.endsWith(`.${a}`) || a.endsWith(`.${id}`)
}

/** Who published the policy that refuses: the author domain, or its organizational domain for its subdomains (sp=). */
function publisher(d: DmarcCheck | undefined): string {
  const from = d?.from ?? ''
  const at = d?.policyDomain?.replace(/\.$/, '').toLowerCase()
  return at && at !== from.replace(/\.$/, '').toLowerCase() ? `${at} publishes for its subdomain ${from} the` : `${from} publishes`
}

/** What is wrong with the message's From: (the 550 reply's words). */
function badFromText(bad: BadFrom, fields: number): string {
  switch (bad) {
    case 'multiple-from-fields':
      return `the message has ${fields} From: fields (RFC 5322 allows one)`
    case 'no-author-domain':
      return fields ? 'the From: field names no address with a domain' : 'the message has no From: field'
    case 'invalid-author-domain':
      return 'an address in the From: field has a domain that cannot be checked as a mail reader shows it'
    case 'too-many-author-domains':
      return `the From: field names more than ${MAX_AUTHOR_DOMAINS} domains`
  }
}

// Undefined in 'check' mode (check-config, plugin commands): the key is still loaded (so a bad one
// is reported), but no hook runs there, so no worker thread is started.
export default definePlugin<MailAuthOptions, State | undefined>({
  name: 'mail-auth',
  options,
  async setup({ options, resolver, log, resolvePath, mode }) {
    // Loads (and so checks) the ARC key now: a bad key stops the start, not every message.
    let key: SealKey | undefined
    try {
      key = options.arcSeal ? sealKey(options.arcSeal, resolvePath) : undefined
    } catch (err) {
      // PEM text was checked with the options; a relative file only now (`setup: arcSeal.privateKeyFile: …`).
      throw new Error(`arcSeal.privateKeyFile: ${(err as Error).message}`)
    }
    if (mode === 'check') return undefined
    const pool = new CheckPool({ ...options.workers, timeoutMs: options.workers.timeout, resolver: mailauthResolver(resolver), log })
    try {
      await pool.ready(10_000)
    } catch (err) {
      await pool.close()
      throw err
    }
    return { sessions: new Map(), key, skip: networkMatcher(options.skipNetworks), pool }
  },
  async teardown({ state }) {
    if (!state) return
    state.closed = true
    state.sessions.clear()
    await state.pool.close()
  },
  hooks: {
    async mail({ session, sender, options, state, log, resolver, hostname }) {
      if (!state || !checked(state, session)) return undefined
      const st = sessionState(state, session.id)
      st.seal = undefined
      const mta = options.authservId ?? hostname
      const result = await checkSpf({
        ip: session.remoteAddress,
        helo: session.helo,
        sender: sender.address,
        mta,
        resolver: mailauthResolver(resolver),
        strict: options.strict,
        timeLimit: options.spf.timeLimit,
      })
      st.spf = { sender: sender.address, result }
      const outcome = result.status.result
      const identity = sender.address ? `<${sender.address}>` : `HELO ${result.helo ?? session.helo ?? ''}`
      log.debug({ session: session.id, client: session.remoteAddress, sender: sender.address, spf: outcome, domain: result.domain }, 'SPF checked')
      if (outcome === 'fail' && options.spf.fail === 'reject') {
        log.info({ session: session.id, client: session.remoteAddress, sender: sender.address, domain: result.domain }, 'sender refused: SPF fail')
        // RFC 7208 §8.4: 550, and 5.7.1 where enhanced status codes are used.
        return reject({ code: 550, status: '5.7.1', message: `SPF fail: ${result.domain} does not designate ${session.remoteAddress} as a permitted sender for ${identity}` })
      }
      if (outcome === 'temperror' && options.tempError === 'tempfail') {
        log.warn({ session: session.id, sender: sender.address, domain: result.domain, comment: result.status.comment }, 'sender deferred: SPF temperror')
        // RFC 7372 X.7.24 "SPF validation error" (basic code 451 for a temporary one).
        return tempfail({ code: 451, status: '4.7.24', message: `SPF temporary error (DNS) checking ${identity}, try again later` })
      }
      return undefined
    },

    async data({ session, envelope, headers, readMessage, options, state, log, resolver, hostname, signal }) {
      const authservId = options.authservId ?? hostname
      const st = state && checked(state, session) ? sessionState(state, session.id) : undefined
      if (st) st.seal = undefined

      let checks: MessageChecks | undefined
      let spf: SPFResult | undefined
      if (st) {
        const dns = mailauthResolver(resolver)
        spf =
          st.spf && st.spf.sender === envelope.sender.address
            ? st.spf.result
            : await checkSpf({ ip: session.remoteAddress, helo: session.helo, sender: envelope.sender.address, mta: authservId, resolver: dns, strict: options.strict, timeLimit: options.spf.timeLimit })
        // The message as the client sent it (but for DKIM signatures over maxSignatures), streamed
        // to a worker thread (never held whole in memory) and read to the end there, before this
        // hook changes any header field.
        const limit = limitSignatures(headers, options.maxSignatures)
        const current = headers.toBuffer()
        const header = limit.header ?? current
        const skip = current.length
        const input = { ip: session.remoteAddress, sender: envelope.sender.address, spf: { domain: spf.domain, info: spf.info, status: { result: spf.status.result } }, mta: authservId, strict: options.strict, minBitLength: options.minBitLength, partialBody: options.partialBody, fromValues: headers.getAll('From') }
        try {
          checks = await poolOf(state).run({ kind: 'check', input }, () => withHeader(readMessage(), skip, header), signal)
        } catch (err) {
          if (err instanceof CheckTimeoutError) {
            log.warn({ session: session.id, client: session.remoteAddress, sender: envelope.sender.address }, `message deferred: ${err.message}`)
            return tempfail({ code: 451, status: '4.3.0', message: 'Message authentication checks took too long, try again later' })
          }
          if (err instanceof PoolBusyError) {
            log.warn({ session: session.id, client: session.remoteAddress, reason: err.message }, 'message deferred: too many message checks waiting')
            return tempfail({ code: 451, status: '4.3.2', message: 'Too busy to check message authentication, try again later' })
          }
          throw err
        }
        if (limit.entries.length) {
          // The skipped signatures' entries go right after the verified ones; with none verified,
          // in place of mailauth's "dkim=none" (the message is signed, only not verified).
          checks.entries = checks.entries.filter((e) => !e.startsWith('dkim=none'))
          const firstOther = checks.entries.findIndex((e) => !e.startsWith('dkim='))
          checks.entries.splice(firstOther < 0 ? checks.entries.length : firstOther, 0, ...limit.entries)
          log.info({ session: session.id, client: session.remoteAddress, notVerified: limit.entries.length }, `DKIM: ${limit.entries.length} signatures not verified (over maxSignatures ${options.maxSignatures}, or h= over ${MAX_SIGNED_FIELDS} fields)`)
        }
      }

      // RFC 8601 §5: Authentication-Results claiming this relay's authserv-id did not come from
      // it. They go from every message (also unchecked ones); other authserv-ids stay, and so
      // does ARC-Authentication-Results (part of ARC sets, which must stay intact). Only this
      // relay says whether a message is quarantined.
      const forged = stripForged(headers, [authservId, ...options.stripAuthservIds])
      if (forged.length) log.info({ session: session.id, client: session.remoteAddress, removed: forged.length }, 'removed Authentication-Results claiming our authserv-id')
      headers.remove(QUARANTINE_HEADER)
      if (!st || !checks || !spf) return undefined

      const sender = envelope.sender.address
      const summary = {
        session: session.id,
        client: session.remoteAddress,
        sender,
        spf: spf.status.result,
        dkim: checks.dkim.map((r) => `${r.signingDomain ?? '-'}:${r.result}`),
        arc: checks.arc.result,
        dmarc: checks.badFrom ?? (checks.dmarc.length ? checks.dmarc.map((d) => d.result).join(',') : checks.dmarcSkipReason ?? 'none'),
        from: checks.dmarc.length ? checks.dmarc.map((d) => d.from).join(',') : undefined,
        ...(checks.fromFields !== 1 ? { fromFields: checks.fromFields } : {}),
      }

      // A From: that DMARC cannot speak for (several From: fields, none, a mailbox without a usable
      // domain, too many domains) is handled like a failure of a p=reject domain: with
      // dmarc.reject 'reject' it is refused, with 'quarantine-header' quarantined, with 'none'
      // only recorded. Nothing a DNS answer says changes that, so it comes before the checks.
      if (checks.badFrom && options.dmarc.reject === 'reject') {
        log.info({ ...summary, reason: checks.badFrom }, 'message refused: its From: cannot be authenticated (DMARC)')
        return reject({ code: 550, status: '5.7.1', message: `Message rejected: ${badFromText(checks.badFrom, checks.fromFields)}; its author cannot be authenticated (DMARC)` })
      }

      // DMARC policy (RFC 7489 §6.6.4, RFC 9989): p= (after t=y) for each Author Domain that
      // fails; with several (RFC 7489 §6.6.1) the strictest action applies.
      let action: 'reject' | 'quarantine' | undefined = checks.badFrom && options.dmarc.reject === 'quarantine-header' ? 'quarantine' : undefined
      let policy: 'none' | 'quarantine' | 'reject' | undefined
      let deciding: DmarcCheck | undefined
      for (const dmarc of checks.dmarc) {
        if (dmarc.result !== 'fail') continue
        let p = (dmarc.policy as typeof policy) ?? 'none'
        if (options.dmarc.honourPct && !dmarc.hasT && dmarc.pct !== undefined && dmarc.pct < 100 && p !== 'none') {
          if (Math.random() * 100 >= dmarc.pct) {
            p = weaker[p]
            // The entry says the policy was lowered (its policy.dmarc keeps what the domain publishes).
            const at = checks.entries.indexOf(dmarc.info)
            if (at >= 0) checks.entries[at] = `${dmarc.info} (outside the pct=${dmarc.pct} sample: applied as ${p})`
          }
        }
        const a = p === 'reject' ? (options.dmarc.reject === 'reject' ? 'reject' : options.dmarc.reject === 'quarantine-header' ? 'quarantine' : undefined) : p === 'quarantine' ? (options.dmarc.quarantine === 'header' ? 'quarantine' : undefined) : undefined
        if (STRENGTH[p] > STRENGTH[policy ?? 'none'] || !deciding) {
          policy = p
          deciding = dmarc
        }
        if (a && STRENGTH[a] > STRENGTH[action ?? 'none']) action = a
      }
      const tempFailing = options.tempError === 'tempfail'
      const temperror = checks.dmarc.find((d) => d.result === 'temperror')
      if (tempFailing && temperror) {
        log.warn({ ...summary, error: temperror.error }, 'message deferred: DMARC temperror')
        return tempfail({ code: 451, status: '4.7.1', message: `DMARC temporary error (DNS) for ${temperror.from ?? 'the From: domain'}, try again later` })
      }
      // A failure that a DNS error may have caused is not acted on (RFC 7489 §6.6.2): tried later
      // (451), or with tempError 'accept' quarantined at most, never refused. Only an identifier
      // that could have aligned counts: a sender's signature of an unrelated domain whose key does
      // not resolve must not save a spoof from its 550.
      const spfTemp = spf.status.result === 'temperror' && spf.domain ? [spf.domain.toLowerCase()] : []
      const doubtful = action && checks.dmarc.some((d) => d.result === 'fail' && d.from && [...checks.dkimTempErrorDomains, ...spfTemp].some((id) => mayAlign(id, d.from!)))
      if (doubtful && tempFailing) {
        log.warn(summary, 'message deferred: DMARC fails, but a DKIM key or SPF lookup had a temporary DNS error')
        return tempfail({ code: 451, status: '4.7.1', message: 'Temporary DNS error checking the message authentication, try again later' })
      }
      if (doubtful && action === 'reject') {
        log.warn(summary, 'DMARC fails, but a DKIM key or SPF lookup had a temporary DNS error: quarantined, not refused (tempError accept)')
        action = 'quarantine'
      }
      if (action === 'reject') {
        log.info({ ...summary, policy }, 'message refused: DMARC policy reject')
        return reject({
          code: 550,
          status: '5.7.1',
          message: `Message rejected: ${publisher(deciding)} DMARC policy reject and this message failed DMARC (neither SPF nor DKIM aligned)`,
        })
      }

      const authResults = formatAuthResults(authservId, checks.entries)
      headers.prepend('Authentication-Results', authResults)
      if (action === 'quarantine') headers.prepend(QUARANTINE_HEADER, 'dmarc')
      log.info({ ...summary, policy, action: action ?? 'accept' }, 'message authentication checked')

      const cv = checks.arc.result === 'pass' ? 'pass' : checks.arc.result === 'fail' ? 'fail' : 'none'
      st.seal = { cv, authResults, shouldSeal: cv !== 'fail' || checks.arc.shouldSeal }
      return undefined
    },

    async queue({ session, headers, readMessage, convertTo7bit, options, state, log, signal }) {
      if (!options.arcSeal || !state || !checked(state, session)) return undefined
      const st = state.sessions.get(session.id)
      const pending = st?.seal
      if (st) st.seal = undefined
      const key = state.key
      if (!pending || !key) return undefined
      if (!pending.shouldSeal) {
        log.info({ session: session.id }, 'not ARC-sealed: the incoming chain already ends in cv=fail')
        return undefined
      }
      try {
        // Seal the form that travels: converted later (for a next hop without 8BITMIME) the seal and
        // any DKIM signature after it would break; not a message signed already (that would break it).
        const signed = headers.has('DKIM-Signature') || headers.has('ARC-Seal') || headers.has('ARC-Message-Signature')
        if (options.arcSeal.sevenBit && !signed && (await convertTo7bit())) log.debug({ session: session.id }, '8-bit MIME parts converted to 7-bit before sealing')
        const seal = { cv: pending.cv, authResults: pending.authResults, strict: options.strict }
        const sealed = await poolOf(state).run({ kind: 'seal', key, seal }, () => readMessage(), signal)
        if (!sealed.fields.length) {
          log.warn({ session: session.id, errors: sealed.errors }, 'not ARC-sealed: mailauth could not create the ARC set')
          return undefined
        }
        for (const field of [...sealed.fields].reverse()) headers.prepend(field.name, field.value)
        log.debug({ session: session.id, instance: sealed.instance, cv: pending.cv }, 'ARC-sealed')
      } catch (err) {
        // An unsealed message is still a good message: deliver it and say why.
        log.error({ err, session: session.id }, 'ARC sealing failed; the message goes on unsealed')
      }
      return undefined
    },

    sessionClosed({ session }, { state }) {
      state?.sessions.delete(session.id)
    },
  },

  async doctor({ options, resolver, resolvePath }) {
    if (!options.arcSeal) return []
    const name = `${options.arcSeal.selector}._domainkey.${options.arcSeal.domain}`
    const check = (status: DoctorCheck['status'], message: string, fix?: string): DoctorCheck[] => [{ name: `ARC seal key ${name}`, status, message, ...(fix ? { fix } : {}) }]
    let key: SealKey
    try {
      key = sealKey(options.arcSeal, resolvePath)
    } catch (err) {
      return check('error', (err as Error).message, 'point arcSeal.privateKey / privateKeyFile at a PEM RSA (2048 bits) or ed25519 key')
    }
    const record = `v=DKIM1; k=${key.keyType}; p=${key.publicKeyB64}`
    let txt: string[]
    try {
      txt = (await resolver.resolveTxt(name)).map((parts) => parts.join(''))
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code !== 'ENOTFOUND' && code !== 'ENODATA') return check('warning', `could not look up ${name}: ${code ?? (err as Error).message}`)
      txt = []
    }
    const published = txt.map((t) => /(?:^|;)\s*p=([^;]*)/.exec(t)?.[1]?.replace(/\s+/g, '')).filter((p): p is string => p !== undefined)
    if (!published.length) return check('error', `no key record at ${name}: receivers cannot verify this relay's ARC seals`, `publish TXT ${name} "${record}"`)
    if (!published.includes(key.publicKeyB64)) return check('error', `the key at ${name} is not the public half of arcSeal's private key`, `publish TXT ${name} "${record}"`)
    return check('ok', `${name} publishes the ARC sealing key`)
  },
})
