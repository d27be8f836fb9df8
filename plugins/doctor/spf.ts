// SPF (RFC 7208): one record, valid syntax, at most 10 DNS-querying terms (counted through every
// include and redirect), at most 2 void lookups, a closing `-all`/`~all`, and every address the
// relay sends from authorised. Authorisation is evaluated by mailauth (what receivers run) against
// the relay's own resolver.
import net from 'node:net'
import { mailauthInternals } from '../../core/index.js'
import { addressesOf, describeDnsError, dnsFix, isNotFound, mailauthResolver, txtRecords } from './dns.js'
import { spfSuggestion } from './send-plan.js'
import { error, ok, warning, type DoctorCheck, type DoctorEnv } from './types.js'

const { spf } = mailauthInternals

const LOOKUP_LIMIT = 10
const VOID_LIMIT = 2
/** Past these, the walk stops following includes (the verdict is long settled). */
const WALK_MAX_LOOKUPS = 40
const WALK_MAX_DEPTH = 10

const MECHANISMS = ['all', 'include', 'a', 'mx', 'ptr', 'ip4', 'ip6', 'exists'] as const
type MechanismName = (typeof MECHANISMS)[number]
type Qualifier = '+' | '-' | '~' | '?'

export type SpfTerm =
  | { kind: 'mechanism'; raw: string; qualifier: Qualifier; name: MechanismName; /** domain-spec or ip[/len], without the CIDR of a/mx */ target?: string }
  | { kind: 'modifier'; raw: string; name: string; value: string }

export interface ParsedSpf {
  terms: SpfTerm[]
  errors: string[]
  warnings: string[]
}

const isSpf = (txt: string) => /^v=spf1(\s|$)/i.test(txt)
const hasMacro = (spec: string) => spec.includes('%')

/** Why a domain-spec is invalid, or undefined. Specs with macros are checked for macro syntax only. */
function domainSpecProblem(spec: string): string | undefined {
  if (!spec) return 'an empty domain'
  if (!/^[\x21-\x7e]+$/.test(spec)) return `'${spec}' has characters a domain cannot have`
  if (hasMacro(spec)) {
    const rest = spec.replace(/%%|%_|%-/g, '').replace(/%\{[slodiphcrtv]\d*r?[.\-+,/_=]*\}/gi, 'x')
    return rest.includes('%') ? `'${spec}' has an invalid macro` : undefined
  }
  const name = spec.replace(/\.$/, '')
  if (name.length > 253 || !/^([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/i.test(name)) return `'${spec}' is not a domain name`
  return undefined
}

/** Parses an SPF record (starting `v=spf1`); errors make receivers return permerror, warnings do not. */
export function parseSpf(record: string): ParsedSpf {
  const terms: SpfTerm[] = []
  const errors: string[] = []
  const warnings: string[] = []
  const seenModifiers = new Set<string>()
  for (const raw of record.trim().split(/\s+/).slice(1)) {
    const modifier = /^([a-z][a-z0-9_.-]*)=(.*)$/i.exec(raw)
    if (modifier) {
      const name = modifier[1]!.toLowerCase()
      const value = modifier[2]!
      if ((MECHANISMS as readonly string[]).includes(name)) {
        errors.push(`'${raw}' is not valid: mechanisms take ':' (${name}:${value}), not '='`)
        continue
      }
      if (name === 'redirect' || name === 'exp') {
        if (seenModifiers.has(name)) errors.push(`'${name}=' appears twice`)
        const problem = domainSpecProblem(value)
        if (problem) errors.push(`'${raw}': ${problem}`)
      } else {
        warnings.push(`unknown modifier '${raw}' (receivers ignore it: a typo?)`)
      }
      seenModifiers.add(name)
      terms.push({ kind: 'modifier', raw, name, value })
      continue
    }
    const m = /^([+\-~?]?)([a-z][a-z0-9]*)([:/].*)?$/i.exec(raw)
    const name = m?.[2]?.toLowerCase()
    if (!m || !(MECHANISMS as readonly string[]).includes(name!)) {
      errors.push(`unknown mechanism '${raw}' (known: ${MECHANISMS.join(', ')}, and the modifiers redirect= and exp=)`)
      continue
    }
    const qualifier = (m[1] || '+') as Qualifier
    const rest = m[3] ?? ''
    const mech = name as MechanismName
    const arg = rest.startsWith(':') ? rest.slice(1) : undefined
    let target: string | undefined
    let problem: string | undefined
    switch (mech) {
      case 'all':
        if (rest) problem = "'all' takes no argument"
        break
      case 'include':
      case 'exists':
        if (arg === undefined || rest.startsWith('/')) problem = `'${mech}' needs a domain (${mech}:example.com)`
        else problem = domainSpecProblem((target = arg))
        break
      case 'a':
      case 'mx': {
        // a[:domain][/cidr4][//cidr6]
        const parts = /^(?::([^/]*))?(?:\/(\d+))?(?:\/\/(\d+))?$/.exec(rest)
        if (!parts) problem = `'${raw}' is not valid (${mech}, ${mech}:domain, ${mech}/24, ${mech}:domain/24//64)`
        else {
          if (parts[1] !== undefined) problem = domainSpecProblem((target = parts[1]))
          if (parts[2] !== undefined && (Number(parts[2]) > 32 || /^0\d/.test(parts[2]))) problem = `'${raw}': IPv4 prefix length /${parts[2]} is not 0-32`
          if (parts[3] !== undefined && (Number(parts[3]) > 128 || /^0\d/.test(parts[3]))) problem = `'${raw}': IPv6 prefix length //${parts[3]} is not 0-128`
        }
        break
      }
      case 'ptr':
        if (rest && arg === undefined) problem = `'${raw}' is not valid (ptr or ptr:domain)`
        else if (arg !== undefined) problem = domainSpecProblem((target = arg))
        if (!problem) warnings.push(`'${raw}': the ptr mechanism is deprecated (RFC 7208 5.5): slow, and some receivers skip it`)
        break
      case 'ip4':
      case 'ip6': {
        const parts = arg === undefined ? null : /^([^/]+)(?:\/(\d+))?$/.exec(arg)
        const family = mech === 'ip4' ? 4 : 6
        if (!parts || net.isIP(parts[1]!) !== family) problem = `'${raw}' is not a valid ${mech} address (${mech === 'ip4' ? 'ip4:192.0.2.1 or ip4:192.0.2.0/24' : 'ip6:2001:db8::1 or ip6:2001:db8::/32'})`
        else if (parts[2] !== undefined && (Number(parts[2]) > (family === 4 ? 32 : 128) || /^0\d/.test(parts[2]))) problem = `'${raw}': prefix length /${parts[2]} is too long for ${mech}`
        target = arg
        break
      }
    }
    if (problem) errors.push(problem.startsWith(`'${raw}'`) ? problem : `'${raw}': ${problem}`)
    else terms.push({ kind: 'mechanism', raw, qualifier, name: mech, target })
  }
  const allAt = terms.findIndex((t) => t.kind === 'mechanism' && t.name === 'all')
  if (allAt >= 0 && terms.slice(allAt + 1).some((t) => t.kind === 'mechanism')) {
    warnings.push(`terms after '${terms[allAt]!.raw}' are never evaluated`)
  }
  if (allAt >= 0 && terms.some((t) => t.kind === 'modifier' && t.name === 'redirect')) {
    warnings.push(`'redirect=' is ignored because the record has '${terms[allAt]!.raw}'`)
  }
  return { terms, errors, warnings }
}

interface WalkState {
  env: DoctorEnv
  lookups: number
  voids: number
  problems: DoctorCheck[]
  truncated: boolean
}

/** The SPF record of an include/redirect target, or a problem line. */
async function nestedRecord(state: WalkState, raw: string, target: string): Promise<ParsedSpf | undefined> {
  let records: string[]
  try {
    records = (await txtRecords(state.env.resolver, target)).filter(isSpf)
  } catch (err) {
    state.problems.push(error('SPF include', `cannot look up the SPF record of ${target} (${raw}): ${describeDnsError(err)}`, dnsFix(state.env.resolver, target)))
    return undefined
  }
  if (records.length === 0) {
    state.voids++
    state.problems.push(error('SPF include', `${raw}: ${target} has no SPF record: receivers return permerror, so SPF fails for all mail from ${state.env.domain}`, `remove ${raw} or correct the name`))
    return undefined
  }
  if (records.length > 1) {
    state.problems.push(error('SPF include', `${raw}: ${target} has ${records.length} SPF records: receivers return permerror`, `ask the owner of ${target} to merge them into one (or remove ${raw})`))
    return undefined
  }
  const parsed = parseSpf(records[0]!)
  if (parsed.errors.length) state.problems.push(error('SPF syntax', `in ${target} (${raw}): ${parsed.errors.join('; ')}`, `correct the SPF record of ${target}, or remove ${raw}`))
  return parsed
}

/**
 * Counts the DNS-querying terms a receiver evaluates in the worst case (the client matches nothing),
 * following include and redirect, and the void lookups among them. Returns this record's cost.
 */
async function walk(state: WalkState, parsed: ParsedSpf, domain: string, chain: string[]): Promise<number> {
  const before = state.lookups
  const { resolver } = state.env
  const allAt = parsed.terms.findIndex((t) => t.kind === 'mechanism' && t.name === 'all')
  const evaluated = allAt >= 0 ? parsed.terms.slice(0, allAt + 1) : parsed.terms
  const redirect = allAt < 0 ? parsed.terms.find((t) => t.kind === 'modifier' && t.name === 'redirect') : undefined
  const queried = [...evaluated.filter((t) => t.kind === 'mechanism' && ['include', 'a', 'mx', 'ptr', 'exists'].includes(t.name)), ...(redirect ? [redirect] : [])]
  for (const term of queried) {
    state.lookups++
    const follow = term.kind === 'modifier' ? term.value : term.name === 'include' ? term.target! : undefined
    const target = term.kind === 'modifier' ? term.value : (term.target ?? domain)
    if (hasMacro(target)) continue // depends on the message: cannot be followed here
    if (follow !== undefined) {
      const name = follow.toLowerCase().replace(/\.$/, '')
      if (chain.includes(name)) {
        state.problems.push(error('SPF include', `${term.raw} makes a loop: ${[...chain, name].join(' → ')}`, `remove ${term.raw} from the SPF record of ${chain[chain.length - 1]}`))
        continue
      }
      if (state.lookups > WALK_MAX_LOOKUPS || chain.length >= WALK_MAX_DEPTH) {
        state.truncated = true
        continue
      }
      const nested = await nestedRecord(state, term.raw, name)
      if (nested) await walk(state, nested, name, [...chain, name])
      continue
    }
    try {
      if (term.kind === 'mechanism' && (term.name === 'a' || term.name === 'exists')) {
        const addresses = term.name === 'a' ? await addressesOf(resolver, target) : await resolver.resolve4(target).catch((e) => (isNotFound(e) ? [] : Promise.reject(e)))
        if (addresses.length === 0) state.voids++
      } else if (term.kind === 'mechanism' && term.name === 'mx') {
        const mx = await resolver.resolveMx(target).catch((e) => (isNotFound(e) ? [] : Promise.reject(e)))
        if (mx.length === 0) state.voids++
        if (mx.length > 10) state.problems.push(error('SPF mx', `'${term.raw}' in ${domain}: ${target} has ${mx.length} MX hosts, more than the 10 an mx mechanism may have (permerror)`, `use ip4:/ip6: ranges instead of '${term.raw}'`))
      }
    } catch (err) {
      state.problems.push(error('SPF DNS', `'${term.raw}' in ${domain}: lookup of ${target} failed: ${describeDnsError(err)}`, dnsFix(state.env.resolver, target)))
    }
  }
  return state.lookups - before
}

/** The record with `ip4:x` (or ip6) inserted before its `all` or `redirect=` (or at the end). */
function withAddress(record: string, ip: string): string {
  const term = `${net.isIPv6(ip) ? 'ip6' : 'ip4'}:${ip}`
  const tokens = record.trim().split(/\s+/)
  const at = tokens.findIndex((t, i) => i > 0 && (/^[+\-~?]?all$/i.test(t) || /^redirect=/i.test(t)))
  if (at < 0) return [...tokens, term].join(' ')
  return [...tokens.slice(0, at), term, ...tokens.slice(at)].join(' ')
}

/** One record with the terms of several (a suggestion for a domain that publishes two). */
function mergeSpf(records: string[]): string {
  const strength: Record<string, number> = { '-': 3, '~': 2, '?': 1, '+': 0 }
  const qualifier = (term: string) => (/^[+\-~?]/.test(term) ? term[0]! : '+')
  const terms: string[] = []
  let all: string | undefined
  for (const record of records) {
    for (const term of record.trim().split(/\s+/).slice(1)) {
      if (/^[+\-~?]?all$/i.test(term)) {
        if (all === undefined || strength[qualifier(term)]! > strength[qualifier(all)]!) all = term
      } else if (!terms.some((t) => t.toLowerCase() === term.toLowerCase())) terms.push(term)
    }
  }
  return ['v=spf1', ...terms, all ?? '~all'].join(' ')
}

export async function checkSpf(env: DoctorEnv): Promise<DoctorCheck[]> {
  const { domain, resolver, outboundAddresses } = env
  // With smarthost routes: their providers' includes, and the relay's addresses only if some mail leaves from them.
  const suggestion = spfSuggestion(domain, outboundAddresses, env.send)
  let records: string[]
  try {
    records = (await txtRecords(resolver, domain)).filter(isSpf)
  } catch (err) {
    return [error('SPF', `cannot look up the TXT records of ${domain}: ${describeDnsError(err)}`, dnsFix(resolver, domain))]
  }
  if (records.length === 0) {
    return [error('SPF', `no SPF record at ${domain}: receivers cannot tell which hosts may send its mail, and many junk or refuse it`, `publish a TXT record at ${domain}: "${suggestion}"`)]
  }
  if (records.length > 1) {
    return [
      error(
        'SPF',
        `${records.length} SPF records at ${domain} (${records.map((r) => `"${r}"`).join(', ')}): a domain may have only one, receivers return permerror and SPF fails for all its mail`,
        `replace them with one TXT record: "${mergeSpf(records)}"`,
      ),
    ]
  }

  const record = records[0]!
  const parsed = parseSpf(record)
  const checks: DoctorCheck[] = [ok('SPF', record)]
  if (parsed.errors.length) {
    checks.push(error('SPF syntax', `${parsed.errors.join('; ')}: receivers return permerror, so SPF fails for all mail from ${domain}`, 'correct or remove the terms named, in the SPF record'))
  }
  if (parsed.warnings.length) checks.push(warning('SPF syntax', parsed.warnings.join('; '), 'tidy up the SPF record as described'))

  // The lookup limit, counted through includes and redirects.
  const state: WalkState = { env, lookups: 0, voids: 0, problems: [], truncated: false }
  const costs: { term: string; cost: number }[] = []
  {
    // What a receiver evaluates for a client that matches nothing: every mechanism up to all, else the redirect.
    const allAt = parsed.terms.findIndex((t) => t.kind === 'mechanism' && t.name === 'all')
    const evaluated = parsed.terms.filter((t, i) => (t.kind === 'mechanism' ? allAt < 0 || i <= allAt : t.name === 'redirect' && allAt < 0))
    for (const term of evaluated) {
      const cost = await walk(state, { terms: [term], errors: [], warnings: [] }, domain, [domain])
      if (cost > 0) costs.push({ term: term.raw, cost })
    }
  }
  checks.push(...state.problems)
  const breakdown = costs.map((c) => `${c.term} ${c.cost}`).join(', ')
  const counted = `${state.truncated ? 'more than ' : ''}${state.lookups}`
  if (state.lookups > LOOKUP_LIMIT) {
    const heavy = costs.filter((c) => c.cost > 1).sort((a, b) => b.cost - a.cost)
    checks.push(
      error(
        'SPF lookups',
        `${counted} DNS lookups, more than the limit of ${LOOKUP_LIMIT} (${breakdown}): receivers return permerror, so SPF fails`,
        `cut lookups: ${heavy.length ? `replace ${heavy.map((c) => `${c.term} (${c.cost})`).join(', ')} by the ip4:/ip6: ranges it authorises, or ` : ''}drop includes of services you no longer send through`,
      ),
    )
  } else {
    checks.push(ok('SPF lookups', `${state.lookups} DNS lookup${state.lookups === 1 ? '' : 's'} of at most ${LOOKUP_LIMIT}${breakdown ? ` (${breakdown})` : ''}`))
  }
  if (state.voids > VOID_LIMIT) {
    checks.push(
      warning(
        'SPF void lookups',
        `${state.voids} lookups find no record, more than ${VOID_LIMIT}: receivers may return permerror`,
        'remove mechanisms naming hosts or domains that no longer exist',
      ),
    )
  }

  // The result for everyone else: the record's all, or the one reached through redirect.
  const allTerm = parsed.terms.find((t): t is Extract<SpfTerm, { kind: 'mechanism' }> => t.kind === 'mechanism' && t.name === 'all')
  const redirect = parsed.terms.find((t) => t.kind === 'modifier' && t.name === 'redirect')
  if (allTerm?.qualifier === '+') {
    checks.push(error('SPF policy', `'${allTerm.raw}' authorises every host on the Internet to send as ${domain}`, `end the record with -all (or ~all): "${record.replace(/\s[+]?all\b/i, ' -all')}"`))
  } else if (allTerm?.qualifier === '?') {
    checks.push(warning('SPF policy', `'${allTerm.raw}': mail from unlisted hosts gets a neutral result, so SPF protects nothing`, `end the record with -all (or ~all): "${record.replace(/\s\?all\b/i, ' -all')}"`))
  } else if (!allTerm && !redirect) {
    checks.push(warning('SPF policy', 'no all at the end: mail from unlisted hosts gets a neutral result, so SPF protects nothing', `end the record with -all (or ~all): "${record} -all"`))
  } else if (!allTerm && redirect) {
    checks.push(ok('SPF policy', `${redirect.raw}: the policy of ${(redirect as { value: string }).value} applies`))
  } else if (allTerm) {
    checks.push(ok('SPF policy', allTerm.qualifier === '-' ? `-all: mail from unlisted hosts fails SPF` : `~all: mail from unlisted hosts soft-fails SPF`))
  }

  // Does the record authorise each address this relay sends from? Evaluated as receivers do.
  const lookup = mailauthResolver(resolver)
  const sender = `postmaster@${domain}`
  // Not when all of the domain's mail goes through smarthosts: receivers never see these addresses.
  for (const ip of env.send?.direct === false ? [] : outboundAddresses) {
    const name = `SPF ${ip}`
    try {
      const result = await spf({ sender, ip, helo: env.hostname, mta: env.hostname, resolver: lookup })
      const verdict = result.status.result
      if (verdict === 'pass') {
        checks.push(ok(name, `pass: the SPF record of ${domain} authorises ${ip}`))
      } else if (verdict === 'permerror' || verdict === 'temperror') {
        // The comment reads `<mta>: permanent error in processing during lookup of <sender>: <why>`.
        const comment = String(result.status.comment ?? '')
        const why = comment.includes(`${sender}: `) ? comment.slice(comment.indexOf(`${sender}: `) + sender.length + 2) : ''
        checks.push(error(name, `${verdict}${why ? ` (${why})` : ''}: mail from ${ip} fails SPF`, verdict === 'permerror' ? 'correct the SPF errors reported above' : `make sure the DNS of ${domain} and of its includes answers`))
      } else {
        checks.push(
          error(
            name,
            `${verdict}: the SPF record of ${domain} does not authorise ${ip}, an address this relay sends from`,
            `add ${net.isIPv6(ip) ? 'ip6' : 'ip4'}:${ip} to the SPF record: "${withAddress(record, ip)}"`,
          ),
        )
      }
    } catch (err) {
      checks.push(error(name, `cannot evaluate SPF for ${ip}: ${(err as Error).message}`))
    }
  }
  return checks
}
