// `relay doctor <domain>` checks: each configured selector's TXT record against the key on disk.
import type { DoctorCheck, DoctorContext } from '../../core/index.js'
import { dnsRecordValue, keyState, normalizeDomain, recordName, signingKeys, spkiFromRecord, type DkimKey, type State } from './keys.js'
import type { Options } from './options.js'

/** Tags of a DKIM key record (`v=DKIM1; k=rsa; p=...`), names lower-cased. */
function tags(record: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const part of record.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0) continue
    out.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).replace(/\s+/g, ''))
  }
  return out
}

const isDkimRecord = (record: string): boolean => /^\s*v\s*=\s*DKIM1\s*(;|$)/i.test(record) || tags(record).has('p')

const publish = (key: DkimKey): string => {
  const value = dnsRecordValue(key)
  const split = value.length > 255 ? ' (over 255 characters: zone files write it as several quoted strings, which DNS joins)' : ''
  return `publish a TXT record ${recordName(key)} with the value: ${value}${split}`
}

const when = (d: Date | undefined): string => (d ? d.toISOString() : 'always')

function describe(key: DkimKey, all: readonly DkimKey[], now: Date): string {
  const kind = key.type === 'rsa' ? `RSA ${key.bits} bits` : 'Ed25519'
  const state = keyState(key, all, now)
  if (state === 'signing') return `${kind}, signing now`
  if (state === 'future') return `${kind}, signs from ${when(key.activeFrom)}`
  const successor = signingKeys(all, key.domain, now).find((k) => k.type === key.type)
  return `${kind}, retired (${successor ? `${successor.selector} signs instead` : 'no longer signs'})`
}

async function checkKey(key: DkimKey, all: readonly DkimKey[], ctx: DoctorContext<Options>, now: Date): Promise<DoctorCheck> {
  const name = recordName(key)
  const check = `DKIM ${name}`
  const state = keyState(key, all, now)
  let records: string[]
  try {
    records = (await ctx.resolver.resolveTxt(name)).map((parts) => parts.join(''))
  } catch (err) {
    const code = (err as { code?: string }).code
    if (code !== 'ENOTFOUND' && code !== 'ENODATA') {
      return { name: check, status: 'error', message: `the TXT lookup failed (${code ?? (err as Error).message}), so receivers cannot verify this key either`, fix: `check the zone's name servers and the relay's dns.servers; the record to serve: ${dnsRecordValue(key)}` }
    }
    records = []
  }
  const dkim = records.filter(isDkimRecord)
  if (!dkim.length) {
    if (state === 'future') {
      return { name: check, status: 'warning', message: `not published yet; this key (${key.file}) starts signing on ${when(key.activeFrom)}: publish it days before, so that caches have it`, fix: publish(key) }
    }
    if (state === 'retired') {
      return { name: check, status: 'warning', message: `not published: this key (${key.file}) no longer signs, but mail it signed recently cannot be verified without it`, fix: `${publish(key)}; or, once its mail is a few days old, remove the key from the dkim-sign keys` }
    }
    return { name: check, status: 'error', message: `no DKIM record: receivers cannot verify the signatures made with ${key.file}`, fix: publish(key) }
  }
  if (dkim.length > 1) {
    return { name: check, status: 'error', message: `${dkim.length} DKIM records at one name: receivers take any one of them`, fix: `keep only one TXT record at ${name}, with the value: ${dnsRecordValue(key)}` }
  }
  const t = tags(dkim[0]!)
  const p = t.get('p') ?? ''
  if (!p) {
    if (state === 'retired') return { name: check, status: 'ok', message: `revoked (empty p=); ${describe(key, all, now)}` }
    return { name: check, status: 'error', message: `the record is revoked (empty p=) but ${key.file} ${state === 'future' ? 'is going to sign' : 'signs'} with this selector`, fix: publish(key) }
  }
  const k = (t.get('k') ?? 'rsa').toLowerCase()
  if (k !== key.type) {
    return { name: check, status: 'error', message: `the record says k=${k}, the key ${key.file} is ${key.type}`, fix: publish(key) }
  }
  if (spkiFromRecord(p) !== key.spki) {
    return { name: check, status: 'error', message: `the published key does not match the private key ${key.file}: receivers will fail its signatures`, fix: publish(key) }
  }
  return { name: check, status: 'ok', message: `published and matches ${key.file} (${describe(key, all, now)})` }
}

export async function doctor(ctx: DoctorContext<Options>): Promise<DoctorCheck[]> {
  const domain = normalizeDomain(ctx.domain)
  // The doctor gets the plugins set up in 'check' mode, so setup has read the keys.
  const all = (ctx.state as State).keys
  const keys = all.filter((k) => k.domain === domain)
  if (!keys.length) {
    // The relay's own mail from its host name (bounces from MAILER-DAEMON@) is signed by the nearest parent's key.
    const labels = domain.split('.')
    const parent = domain === normalizeDomain(ctx.hostname) ? labels.slice(1).map((_, i) => labels.slice(i + 1).join('.')).find((d) => d.includes('.') && all.some((k) => k.domain === d)) : undefined
    if (parent) return [{ name: `DKIM ${domain}`, status: 'ok', message: `no key for ${domain} itself: the relay's own mail from it (bounces from MAILER-DAEMON@${domain}) is signed d=${parent}, which aligns with it under DMARC's relaxed rule` }]
    return [{ name: `DKIM ${domain}`, status: 'warning', message: `dkim-sign has no key for ${domain}: its mail leaves unsigned`, fix: `relay dkim keygen ${domain}, publish the record it prints, and add the key to the dkim-sign keys` }]
  }
  const now = new Date()
  return Promise.all(keys.map((key) => checkKey(key, all, ctx, now)))
}
