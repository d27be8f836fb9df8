// Checks for a domain whose mail goes through smarthost routes (send-plan.ts): each route, then
// for each provider what it needs in DNS: SendGrid (include:sendgrid.net, CNAMEs s1/s2._domainkey
// to *.sendgrid.net), Amazon SES (include:amazonses.com on the MAIL FROM domain, Easy DKIM CNAMEs
// <token>._domainkey → <token>.dkim.amazonses.com), Mailgun (include:mailgun.org or eu.mailgun.org,
// a DKIM TXT key at its selector or a CNAME to Mailgun). An unknown provider: what to ask it for.
import { describeDnsError, dnsFix, isNotFound, txtRecords } from './dns.js'
import { providerName, providersOf, spfIncludeOf, spfSuggestion, withTerm, type Provider, type SendPlan } from './send-plan.js'
import { error, ok, warning, type DoctorCheck, type DoctorEnv } from './types.js'

/** Past this many SPF records read, the search for an include stops (the SPF check reports the limit). */
const SPF_WALK_MAX = 12

const isSpf = (txt: string) => /^v=spf1(\s|$)/i.test(txt)
const bare = (name: string) => name.toLowerCase().replace(/\.$/, '')

type SpfFound = { kind: 'none' } | { kind: 'many'; count: number } | { kind: 'record'; record: string; via?: string }

/** Whether the SPF record of `domain` reaches `include:<want>`, directly or through includes/redirect. */
async function spfReaches(env: DoctorEnv, domain: string, want: string): Promise<{ found: SpfFound; reached: boolean }> {
  const records = (await txtRecords(env.resolver, domain)).filter(isSpf)
  if (records.length === 0) return { found: { kind: 'none' }, reached: false }
  if (records.length > 1) return { found: { kind: 'many', count: records.length }, reached: false }
  const seen = new Set([domain])
  const queue: { record: string; via?: string }[] = [{ record: records[0]! }]
  for (let read = 0; queue.length && read < SPF_WALK_MAX; read++) {
    const { record, via } = queue.shift()!
    for (const term of record.trim().split(/\s+/).slice(1)) {
      const m = /^(?:[+?~]?include:|redirect=)(.+)$/i.exec(term)
      if (!m || m[1]!.includes('%')) continue
      const target = bare(m[1]!)
      if (target === want) return { found: { kind: 'record', record: records[0]!, via }, reached: true }
      if (seen.has(target)) continue
      seen.add(target)
      const nested = await txtRecords(env.resolver, target).catch(() => [])
      const spf = nested.filter(isSpf)
      if (spf.length === 1) queue.push({ record: spf[0]!, via: via ?? term })
    }
  }
  return { found: { kind: 'record', record: records[0]! }, reached: false }
}

/** `SPF <provider>`: the SPF record of `spfDomain` must include the provider's SPF domain. */
async function checkSpfInclude(env: DoctorEnv, p: Provider, spfDomain: string, suggestion: string): Promise<DoctorCheck> {
  const name = `SPF ${providerName(p)}`
  const include = spfIncludeOf(p)
  let r: Awaited<ReturnType<typeof spfReaches>>
  try {
    r = await spfReaches(env, spfDomain, include)
  } catch (err) {
    return error(name, `cannot look up the TXT records of ${spfDomain}: ${describeDnsError(err)}`, dnsFix(env.resolver, spfDomain))
  }
  if (r.reached) return ok(name, `the SPF record of ${spfDomain} authorises ${providerName(p)} (include:${include}${r.found.kind === 'record' && r.found.via ? `, through ${r.found.via}` : ''})`)
  if (r.found.kind === 'none') {
    return error(name, `no SPF record at ${spfDomain}, so mail sent through ${providerName(p)} fails SPF`, `publish a TXT record at ${spfDomain}: "${suggestion}"`)
  }
  if (r.found.kind === 'many') {
    return error(name, `${r.found.count} SPF records at ${spfDomain}: receivers return permerror, so mail sent through ${providerName(p)} fails SPF`, `replace them with one TXT record that has include:${include}`)
  }
  return error(
    name,
    `the SPF record of ${spfDomain} does not authorise ${providerName(p)} (no include:${include}), so mail sent through it fails SPF: "${r.found.record}"`,
    `change the TXT record at ${spfDomain} to: "${withTerm(r.found.record, `include:${include}`)}"`,
  )
}

async function cnameOf(env: DoctorEnv, name: string): Promise<string | undefined> {
  try {
    const [target] = await env.resolver.resolveCname(name)
    return target === undefined ? undefined : bare(target)
  } catch (err) {
    if (isNotFound(err)) return undefined
    throw err
  }
}

const hasKey = (txt: string[]) => txt.some((t) => /(^|;)\s*p=[A-Za-z0-9+/]/.test(t))

interface DkimSpec {
  provider: string
  /** Whether a CNAME target is the provider's. */
  accepts: (target: string) => boolean
  /** The CNAME target to publish (a placeholder where the provider gives it). */
  target: string
  /** Where the provider shows the exact record. */
  where: string
  /** A TXT key instead of a CNAME is what this provider gives (Mailgun), not a doubt. */
  txtIsNormal?: boolean
}

/** One `DKIM <selector>._domainkey.<domain>` line: the CNAME to the provider (or its TXT key). */
async function checkDkimRecord(env: DoctorEnv, selector: string, spec: DkimSpec): Promise<DoctorCheck & { found: boolean }> {
  const name = `${selector}._domainkey.${env.domain}`
  const line = `DKIM ${name}`
  const publish = `publish ${name} CNAME ${spec.target} (the exact record: ${spec.where})`
  try {
    const target = await cnameOf(env, name)
    if (target !== undefined) {
      if (!spec.accepts(target)) return { ...error(line, `a CNAME to ${target}, not to ${spec.provider}: mail ${spec.provider} signs as ${env.domain} fails DKIM`, publish), found: true }
      const keys = await txtRecords(env.resolver, name)
      if (!hasKey(keys)) return { ...error(line, `a CNAME to ${target}, which has no DKIM key: ${spec.provider} does not know this target (a typo?)`, publish), found: true }
      return { ...ok(line, `CNAME to ${target}: ${spec.provider}'s key is published`), found: true }
    }
    const keys = await txtRecords(env.resolver, name)
    if (hasKey(keys)) {
      if (spec.txtIsNormal) return { ...ok(line, `DKIM key published (TXT) for ${spec.provider}`), found: true }
      return { ...warning(line, `a DKIM key published as TXT, not as the CNAME to ${spec.provider}: right only if it is the key ${spec.provider} shows, and it will not follow ${spec.provider}'s key rotation`, publish.replace(/^publish/, 'publish instead')), found: true }
    }
    return { ...error(line, `no DKIM record: ${spec.provider} signs mail from ${env.domain} with this selector, and receivers cannot verify the signature`, publish), found: false }
  } catch (err) {
    return { ...error(line, `cannot look up ${name}: ${describeDnsError(err)}`, dnsFix(env.resolver, env.domain)), found: false }
  }
}

const strip = ({ found: _found, ...check }: DoctorCheck & { found: boolean }): DoctorCheck => check

async function sendgrid(env: DoctorEnv, plan: SendPlan, p: Provider, suggestion: string): Promise<DoctorCheck[]> {
  const spec: DkimSpec = {
    provider: 'SendGrid',
    accepts: (t) => t.endsWith('.sendgrid.net'),
    target: '<selector>.domainkey.u<account id>.wl<NNN>.sendgrid.net',
    where: 'SendGrid → Settings → Sender Authentication',
  }
  const selectors = plan.settings.dkimSelectors ?? ['s1', 's2']
  const dkim = await Promise.all(selectors.map((s) => checkDkimRecord(env, s, { ...spec, target: spec.target.replace('<selector>', s) })))
  return [await checkSpfInclude(env, p, env.domain, suggestion), ...dkim.map(strip)]
}

async function ses(env: DoctorEnv, plan: SendPlan, p: Extract<Provider, { id: 'ses' }>): Promise<DoctorCheck[]> {
  const { domain } = env
  const checks: DoctorCheck[] = []
  const mailFrom = plan.settings.mailFrom?.toLowerCase().replace(/\.$/, '')
  const feedback = `feedback-smtp.${p.region}.amazonses.com`
  if (!mailFrom) {
    checks.push(
      warning(
        'SPF Amazon SES',
        `no custom MAIL FROM domain given for ${domain}: without one SES sends with a MAIL FROM under amazonses.com, which passes SPF but does not align with ${domain}, so DMARC rests on DKIM alone`,
        `set a custom MAIL FROM domain in SES (e.g. bounce.${domain}), publish at it MX 10 ${feedback} and TXT "v=spf1 include:amazonses.com -all", and tell the doctor: ['doctor', { domains: { '${domain}': { mailFrom: 'bounce.${domain}' } } }]`,
      ),
    )
  } else {
    checks.push(await checkSpfInclude(env, p, mailFrom, 'v=spf1 include:amazonses.com -all'))
    try {
      const mx = await env.resolver.resolveMx(mailFrom).catch((e) => (isNotFound(e) ? [] : Promise.reject(e)))
      if (mx.some((m) => bare(m.exchange) === feedback)) checks.push(ok('MX Amazon SES', `${mailFrom} has MX ${feedback}: SES takes the bounces to its MAIL FROM`))
      else {
        const has = mx.length ? `its MX is ${mx.map((m) => m.exchange).join(', ')}` : 'it has no MX record'
        checks.push(error('MX Amazon SES', `${has}, not ${feedback}: SES falls back to its own MAIL FROM (amazonses.com) while the custom one does not verify, so SPF no longer aligns with ${domain}`, `publish at ${mailFrom}: MX 10 ${feedback}`))
      }
    } catch (err) {
      checks.push(error('MX Amazon SES', `cannot look up the MX of ${mailFrom}: ${describeDnsError(err)}`, dnsFix(env.resolver, mailFrom)))
    }
  }
  const tokens = plan.settings.dkimSelectors
  if (!tokens) {
    checks.push(
      warning(
        'DKIM Amazon SES',
        `Easy DKIM cannot be verified without its tokens: SES signs with three keys published as CNAMEs <token>._domainkey.${domain} → <token>.dkim.amazonses.com, and the tokens are known only to your SES account`,
        `copy the three tokens from the SES console (Identities → ${domain} → DKIM) into the doctor's options: ['doctor', { domains: { '${domain}': { dkimSelectors: ['<token1>', '<token2>', '<token3>'] } } }]`,
      ),
    )
  } else {
    for (const token of tokens) {
      const want = `${token.toLowerCase()}.dkim.amazonses.com`
      const spec: DkimSpec = { provider: 'Amazon SES', accepts: (t) => t === want, target: want, where: `SES console → Identities → ${domain} → DKIM` }
      checks.push(strip(await checkDkimRecord(env, token, spec)))
    }
  }
  return checks
}

async function mailgun(env: DoctorEnv, plan: SendPlan, p: Extract<Provider, { id: 'mailgun' }>, suggestion: string): Promise<DoctorCheck[]> {
  const spec: DkimSpec = {
    provider: 'Mailgun',
    accepts: (t) => t.endsWith('.mailgun.org') || t.endsWith('.mailgun.com'),
    target: '<the target Mailgun shows>',
    where: `Mailgun → Sending → Domain settings → DNS records for ${env.domain}`,
    txtIsNormal: true,
  }
  const spf = await checkSpfInclude(env, p, env.domain, suggestion)
  const configured = plan.settings.dkimSelectors
  const selectors = configured ?? ['smtp', 'pic', 'k1']
  const dkim = await Promise.all(selectors.map((s) => checkDkimRecord(env, s, spec)))
  if (configured) return [spf, ...dkim.map(strip)]
  // The usual selectors are guesses: report those found, or one error naming all that were tried.
  const found = dkim.filter((c) => c.found)
  if (found.length) return [spf, ...found.map(strip)]
  const failed = dkim.find((c) => c.status === 'error' && c.message.startsWith('cannot look up'))
  if (failed) return [spf, strip(failed)]
  return [
    spf,
    error(
      'DKIM Mailgun',
      `no Mailgun DKIM key at ${selectors.map((s) => `${s}._domainkey`).join(', ')}.${env.domain}: receivers cannot verify the signature Mailgun adds`,
      `publish the DKIM record Mailgun shows for ${env.domain} (Sending → Domain settings → DNS records), e.g. TXT at pic._domainkey.${env.domain}: "k=rsa; p=<the key Mailgun shows>"; with another selector, tell the doctor: ['doctor', { domains: { '${env.domain}': { dkimSelectors: ['<selector>'] } } }]`,
    ),
  ]
}

export async function checkSmarthosts(env: DoctorEnv): Promise<DoctorCheck[]> {
  const plan = env.send
  if (!plan) return []
  const { domain } = env
  const suggestion = spfSuggestion(domain, env.outboundAddresses, plan)
  const checks: DoctorCheck[] = plan.smarthosts.map((u) => {
    const what = `${u.coverage === 'all' ? 'all mail' : 'some mail'} from ${domain} goes through ${u.hosts.join(', ')}`
    if (u.provider.id !== 'unknown') return ok(`route ${u.label}`, `${what} (${providerName(u.provider)})`)
    return warning(
      `route ${u.label}`,
      `${what}, a provider the doctor does not know: the SPF record of ${domain} must authorise it, and it must sign with a DKIM key published for ${domain}`,
      `add the include: that ${u.provider.host}'s provider documents to the SPF record of ${domain} (e.g. "${suggestion}"), and publish the DKIM record it gives you`,
    )
  })
  const groups = await Promise.all(
    providersOf(plan).map((p): Promise<DoctorCheck[]> => {
      switch (p.id) {
        case 'sendgrid':
          return sendgrid(env, plan, p, suggestion)
        case 'ses':
          return ses(env, plan, p)
        case 'mailgun':
          return mailgun(env, plan, p, suggestion)
        case 'unknown':
          return Promise.resolve([])
      }
    }),
  )
  return [...checks, ...groups.flat()]
}
