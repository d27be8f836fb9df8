// Which way a sending domain's mail leaves: through smarthost routes of the routing plugin (and
// which provider each is), and whether some of it still leaves from the relay's own addresses.
// The doctor reads the routing plugin's validated options from its loaded context (a plain data
// shape, checked here with zod) instead of importing the plugin.
import net from 'node:net'
import { z } from '../../core/index.js'
import type { DomainSettings, Options as DoctorPluginOptions } from './options.js'
import type { LoadedPlugin, Provider, SendPlan, SmarthostUse } from './types.js'

export type { Provider, SendPlan, SmarthostUse }

const patterns = z.union([z.string(), z.array(z.string())]).transform((p) => (Array.isArray(p) ? p : [p]))
const routingOptions = z.object({
  routes: z.array(
    z.looseObject({
      name: z.string().optional(),
      kind: z.string().default('mx'),
      host: patterns.optional(),
      match: z.looseObject({ domain: patterns.optional(), sender: patterns.optional() }).optional(),
    }),
  ),
})

export function providerName(p: Provider): string {
  switch (p.id) {
    case 'sendgrid':
      return 'SendGrid'
    case 'ses':
      return 'Amazon SES'
    case 'mailgun':
      return p.eu ? 'Mailgun (EU)' : 'Mailgun'
    case 'unknown':
      return p.host
  }
}

/** 'host', 'host:port', '[v6]:port' → host, lower case. */
function bareHost(h: string): string {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(h) ?? (net.isIPv6(h) ? null : /^([^:]+):\d+$/.exec(h))
  return (m ? m[1]! : h).toLowerCase().replace(/\.$/, '')
}

/** The provider behind a smarthost name (SendGrid, SES by region, Mailgun US/EU), else unknown. */
export function providerOf(hostArg: string): Provider {
  const host = bareHost(hostArg)
  if (host === 'sendgrid.net' || host.endsWith('.sendgrid.net')) return { id: 'sendgrid' }
  const ses = /^email-smtp(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$/.exec(host)
  if (ses) return { id: 'ses', region: ses[1]! }
  if (host === 'smtp.eu.mailgun.org') return { id: 'mailgun', eu: true }
  if (host === 'smtp.mailgun.org') return { id: 'mailgun', eu: false }
  return { id: 'unknown', host }
}

export const providerKey = (p: Provider) => `${p.id}:${p.id === 'ses' ? p.region : p.id === 'mailgun' ? p.eu : p.id === 'unknown' ? p.host : ''}`

type Coverage = 'all' | 'some' | 'none'

/** How much of the domain's mail one envelope-sender pattern fits (as the routing plugin matches it). */
function senderCoverage(pattern: string, domain: string): Coverage {
  if (pattern === '<>') return 'none'
  const re = /^\/(.+)\/([a-z]*)$/s.exec(pattern)
  if (re) {
    // A regex on the whole address: it may fit some of the domain's senders; which ones, only mail tells.
    try {
      return new RegExp(re[1]!, re[2]).test(`postmaster@${domain}`) ? 'some' : 'none'
    } catch {
      return 'none'
    }
  }
  const p = pattern.toLowerCase().replace(/\.$/, '')
  if (p.includes('@')) return p.slice(p.lastIndexOf('@') + 1) === domain ? 'some' : 'none'
  if (p.startsWith('*.')) return domain.endsWith(p.slice(1)) && domain.length > p.length - 1 ? 'all' : 'none'
  return p === domain ? 'all' : 'none'
}

function routeCoverage(match: { domain?: string[]; sender?: string[] } | undefined, domain: string): Coverage {
  let sender: Coverage = 'all'
  if (match?.sender) {
    const each = match.sender.map((p) => senderCoverage(p, domain))
    sender = each.includes('all') ? 'all' : each.includes('some') ? 'some' : 'none'
  }
  if (sender === 'none') return 'none'
  // A recipient-domain criterion: only the mail to those domains.
  return match?.domain ? 'some' : sender
}

/**
 * The send plan of `domain`: the routing plugins' routes in order (as their deliver hooks try
 * them), up to the first that takes all of its mail; none such: the rest goes to the MX hosts.
 * Undefined when there is no smarthost route for the domain (the doctor's checks stay as they were).
 */
export function sendPlan(domain: string, plugins: LoadedPlugin[]): SendPlan | undefined {
  const uses: SmarthostUse[] = []
  let direct = false
  let settled = false
  for (const { plugin, ctx } of plugins) {
    if (plugin.name !== 'routing' || settled) continue
    const parsed = routingOptions.safeParse(ctx.options)
    if (!parsed.success) continue
    for (const [i, r] of parsed.data.routes.entries()) {
      const coverage = routeCoverage(r.match, domain)
      if (coverage === 'none') continue
      if (r.kind === 'smarthost' && r.host?.length) {
        // One use per provider among the route's hosts (failover hosts of one provider are one).
        const byProvider = new Map<string, SmarthostUse>()
        for (const h of r.host) {
          const provider = providerOf(h)
          const use = byProvider.get(providerKey(provider)) ?? { label: r.name ?? `routes[${i}]`, hosts: [], provider, coverage }
          use.hosts.push(bareHost(h))
          byProvider.set(providerKey(provider), use)
        }
        uses.push(...byProvider.values())
      } else if (r.kind === 'mx') direct = true
      if (coverage === 'all') {
        settled = true
        break
      }
    }
  }
  if (!settled) direct = true
  if (uses.length === 0) return undefined
  const own = plugins.find((p) => p.plugin.name === 'doctor')?.ctx.options as DoctorPluginOptions | undefined
  const settings = Object.entries(own?.domains ?? {}).find(([d]) => d.toLowerCase().replace(/\.$/, '') === domain)?.[1] ?? {}
  return { smarthosts: uses, direct, settings }
}

/** The distinct providers of a plan, in route order. */
export function providersOf(plan: SendPlan): Provider[] {
  const seen = new Map<string, Provider>()
  for (const u of plan.smarthosts) if (!seen.has(providerKey(u.provider))) seen.set(providerKey(u.provider), u.provider)
  return [...seen.values()]
}

/** The include: each provider needs in the SPF record of `spfDomain` (SES: on its MAIL FROM domain). */
export function spfIncludeOf(p: Provider): string {
  switch (p.id) {
    case 'sendgrid':
      return 'sendgrid.net'
    case 'ses':
      return 'amazonses.com'
    case 'mailgun':
      return p.eu ? 'eu.mailgun.org' : 'mailgun.org'
    case 'unknown':
      return `<the SPF domain of ${p.host}'s provider>`
  }
}

/**
 * The SPF record to suggest for the domain: the relay's own addresses when some mail leaves from
 * them (else `mx` as before), and the include of each provider whose mail uses the domain as MAIL
 * FROM (SES with a custom MAIL FROM elsewhere needs none here).
 */
export function spfSuggestion(domain: string, outboundAddresses: string[], plan: SendPlan | undefined): string {
  const own = plan && !plan.direct ? [] : outboundAddresses.length ? outboundAddresses.map((ip) => `${net.isIPv6(ip) ? 'ip6' : 'ip4'}:${ip}`) : ['mx']
  const includes = (plan ? providersOf(plan) : [])
    .filter((p) => p.id !== 'ses' || !plan!.settings.mailFrom || plan!.settings.mailFrom.toLowerCase() === domain)
    .map((p) => `include:${spfIncludeOf(p)}`)
  return ['v=spf1', ...own, ...new Set(includes), '-all'].join(' ')
}

/** The record with `term` inserted before its `all` or `redirect=` (or at the end). */
export function withTerm(record: string, term: string): string {
  const tokens = record.trim().split(/\s+/)
  const at = tokens.findIndex((t, i) => i > 0 && (/^[+\-~?]?all$/i.test(t) || /^redirect=/i.test(t)))
  if (at < 0) return [...tokens, term].join(' ')
  return [...tokens.slice(0, at), term, ...tokens.slice(at)].join(' ')
}
