// DMARC (RFC 7489): one `_dmarc.<domain>` record starting v=DMARC1 with a valid p=, a policy that
// does something (quarantine/reject), aggregate reports (rua=) and pct=100. Without a record of
// its own, a subdomain inherits its organisational domain's (found the way receivers find it).
import { mailauthInternals } from '../../core/index.js'
import { describeDnsError, dnsFix, mailauthResolver, txtRecords } from './dns.js'
import { error, ok, warning, type DoctorCheck, type DoctorEnv } from './types.js'

const { getDmarcRecord } = mailauthInternals

const POLICIES = ['none', 'quarantine', 'reject']
const KNOWN_TAGS = new Set(['v', 'p', 'sp', 'np', 'adkim', 'aspf', 'fo', 'rua', 'ruf', 'rf', 'ri', 'pct', 't', 'psd'])
const REPORT_URI = /^mailto:[^@\s]+@[^@\s]+$|^https?:\/\/\S+$/i

/** Tags of a DMARC record, names lower-cased; `errors` make it invalid, `warnings` do not. */
export function parseDmarc(record: string): { tags: Map<string, string>; errors: string[]; warnings: string[] } {
  const tags = new Map<string, string>()
  const errors: string[] = []
  const warnings: string[] = []
  const parts = record.split(';').map((p) => p.trim()).filter(Boolean)
  parts.forEach((part, i) => {
    const eq = part.indexOf('=')
    if (eq <= 0) {
      errors.push(`'${part}' is not a tag=value pair`)
      return
    }
    const name = part.slice(0, eq).trim().toLowerCase()
    const value = part.slice(eq + 1).trim()
    if (i === 0 && (name !== 'v' || value !== 'DMARC1')) errors.push('the record must start with v=DMARC1')
    if (tags.has(name)) errors.push(`${name}= appears twice`)
    else if (!KNOWN_TAGS.has(name)) warnings.push(`unknown tag '${part}' (receivers ignore it: a typo?)`)
    tags.set(name, value)
  })
  const p = tags.get('p')
  if (p === undefined) errors.push('p= (the policy) is missing')
  else if (!POLICIES.includes(p.toLowerCase())) errors.push(`p=${p} is not a policy (none, quarantine or reject)`)
  for (const tag of ['sp', 'np']) {
    const v = tags.get(tag)
    if (v !== undefined && !POLICIES.includes(v.toLowerCase())) errors.push(`${tag}=${v} is not a policy (none, quarantine or reject)`)
  }
  for (const tag of ['adkim', 'aspf']) {
    const v = tags.get(tag)
    if (v !== undefined && !['r', 's'].includes(v.toLowerCase())) errors.push(`${tag}=${v} must be r (relaxed) or s (strict)`)
  }
  const pct = tags.get('pct')
  if (pct !== undefined && (!/^\d{1,3}$/.test(pct) || Number(pct) > 100)) errors.push(`pct=${pct} must be a whole number from 0 to 100`)
  for (const tag of ['rua', 'ruf']) {
    const v = tags.get(tag)
    if (v === undefined) continue
    const bad = v.split(',').map((u) => u.trim().replace(/![0-9]+[kmgt]?$/i, '')).filter((u) => !REPORT_URI.test(u))
    if (bad.length) warnings.push(`${tag}= has ${bad.map((u) => `'${u}'`).join(', ')}, not a report address (write mailto:reports@example.com)`)
  }
  return { tags, errors, warnings }
}

export async function checkDmarc(env: DoctorEnv): Promise<DoctorCheck[]> {
  const { domain, resolver } = env
  const at = `_dmarc.${domain}`
  const starter = `v=DMARC1; p=none; rua=mailto:dmarc-reports@${domain}`
  let txt: string[]
  try {
    txt = await txtRecords(resolver, at)
  } catch (err) {
    return [error('DMARC', `cannot look up the TXT records of ${at}: ${describeDnsError(err)}`, dnsFix(resolver, domain))]
  }
  let records = txt.filter((t) => /^v\s*=\s*DMARC1\s*(;|$)/i.test(t))
  const misplaced = txt.filter((t) => !records.includes(t) && /\bv\s*=\s*DMARC1\b/i.test(t))
  if (records.length === 0 && misplaced.length > 0) {
    return [error('DMARC', `the record at ${at} does not start with v=DMARC1, so receivers ignore it: "${misplaced[0]}"`, `put v=DMARC1 first: "v=DMARC1; ${misplaced[0]!.replace(/\s*\bv\s*=\s*DMARC1\s*;?\s*/i, ' ').trim().replace(/;$/, '')}"`)]
  }
  if (records.length > 1) {
    return [error('DMARC', `${records.length} DMARC records at ${at}: receivers ignore them all`, 'keep one DMARC record and delete the others')]
  }

  let where = at
  let inheritedFrom: string | undefined
  if (records.length === 0) {
    // A subdomain without its own record falls under its organisational domain's.
    let inherited: Awaited<ReturnType<typeof getDmarcRecord>> = false
    try {
      inherited = await getDmarcRecord(domain, mailauthResolver(resolver))
    } catch {
      inherited = false
    }
    if (!inherited || !inherited.isOrgRecord) {
      return [
        error(
          'DMARC',
          `no DMARC record at ${at}: receivers apply no policy to mail forged in ${domain}'s name, and large mailbox providers require one from bulk senders`,
          `publish a TXT record at ${at}: "${starter}", and move to p=quarantine, then p=reject, once the reports show your mail passes`,
        ),
      ]
    }
    records = [inherited.rr]
    inheritedFrom = inherited.recordDomain
    where = `_dmarc.${inherited.recordDomain}`
  }

  const record = records[0]!
  const { tags, errors, warnings } = parseDmarc(record)
  const checks: DoctorCheck[] = []
  if (errors.length) {
    checks.push(error('DMARC', `invalid record at ${where} ("${record}"): ${errors.join('; ')}`, `correct it, for example: "${starter}"`))
    return checks
  }
  checks.push(ok('DMARC', inheritedFrom ? `no record of its own; ${domain} falls under ${where}: ${record}` : record))
  if (warnings.length) checks.push(warning('DMARC syntax', warnings.join('; '), `correct the record at ${where}`))

  // The policy for this domain: a subdomain under an inherited record gets sp= (default p=).
  const policyTag = inheritedFrom && tags.has('sp') ? 'sp' : 'p'
  const policy = tags.get(policyTag)!.toLowerCase()
  if (policy === 'none') {
    checks.push(
      warning(
        'DMARC policy',
        `${policyTag}=none: receivers only report mail that fails DMARC, they do not block mail forged in ${domain}'s name`,
        `once the aggregate reports show all your mail passes, change ${policyTag}=none to ${policyTag}=quarantine, then ${policyTag}=reject`,
      ),
    )
  } else {
    checks.push(ok('DMARC policy', policy === 'reject' ? `${policyTag}=reject: receivers refuse mail that fails DMARC` : `${policyTag}=quarantine: receivers treat mail that fails DMARC as spam`))
  }

  const rua = tags.get('rua')
  if (!rua) {
    checks.push(warning('DMARC reports', 'no rua=: you get no aggregate reports, so you cannot see who sends in your name or whether your own mail passes', `add rua=mailto:dmarc-reports@${domain} to the record at ${where}`))
  } else {
    checks.push(ok('DMARC reports', `aggregate reports go to ${rua}`))
  }

  const pct = tags.get('pct')
  if (pct !== undefined && Number(pct) < 100 && policy !== 'none') {
    checks.push(warning('DMARC pct', `pct=${pct}: the policy applies to only ${Number(pct)}% of the mail that fails DMARC`, `raise pct to 100 (or remove pct=) once the reports look clean`))
  }
  return checks
}
