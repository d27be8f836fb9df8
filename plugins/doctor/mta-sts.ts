// MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): the `_mta-sts.<domain>` record, the policy served at
// https://mta-sts.<domain>/.well-known/mta-sts.txt (it must list every MX host), and the
// `_smtp._tls.<domain>` reporting record. These protect mail *to* the domain from TLS downgrade.
import { fetchMtaStsPolicy as fetchPolicyFile, mailauthInternals } from '../../core/index.js'
import { addressesOf, describeDnsError, dnsFix, isNotFound, txtRecords } from './dns.js'
import { error, ok, warning, type DoctorCheck, type DoctorEnv } from './types.js'

const { parsePolicy, validateMx } = mailauthInternals

async function checkPolicy(env: DoctorEnv, policyId: string): Promise<DoctorCheck> {
  const { domain, resolver, mtaSts } = env
  const host = `mta-sts.${domain}`
  const url = `https://${host}/.well-known/mta-sts.txt`
  const name = 'MTA-STS policy'
  const unreachable = (why: string) =>
    warning(name, `cannot fetch ${url}: ${why}; senders that find _mta-sts.${domain} (id=${policyId}) but no policy treat ${domain} as having none`, `serve the policy at ${url} with a certificate valid for ${host}`)

  let connectHost: string
  let connectPort = 443
  if (mtaSts.connect) {
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(mtaSts.connect)
    if (!m) return error(name, `--mta-sts-connect ${mtaSts.connect}: expected host:port`)
    connectHost = m[1]!
    connectPort = Number(m[2])
  } else {
    let addresses: string[]
    try {
      addresses = await addressesOf(resolver, host)
    } catch (err) {
      return unreachable(`the address lookup of ${host} failed: ${describeDnsError(err)}`)
    }
    if (addresses.length === 0) return unreachable(`${host} has no A/AAAA record`)
    connectHost = addresses[0]!
  }

  let body: string
  try {
    body = await fetchPolicyFile({ host: connectHost, port: connectPort, servername: host, timeoutMs: mtaSts.timeoutMs })
  } catch (err) {
    return unreachable((err as Error).message)
  }
  let policy: ReturnType<typeof parsePolicy>
  try {
    policy = parsePolicy(body)
  } catch (err) {
    return error(name, `the policy at ${url} is invalid: ${(err as Error).message}`, 'serve "version: STSv1", "mode: enforce" (or testing), "mx: <each MX host>" and "max_age: 604800", one per line')
  }
  const summary = `mode ${policy.mode}, max_age ${policy.maxAge}, mx ${(policy.mx ?? []).join(' ') || '(none)'}`
  if (policy.mode === 'none') return warning(name, `${summary}: the policy is switched off`, 'set mode: testing, then mode: enforce')

  // Every MX host must match the policy, or senders that enforce it cannot deliver.
  let mxHosts: string[] = []
  try {
    mxHosts = (await resolver.resolveMx(domain)).map((r) => r.exchange.replace(/\.$/, '')).filter(Boolean)
  } catch (err) {
    if (!isNotFound(err)) return error(name, `${summary}; cannot look up the MX records to compare: ${describeDnsError(err)}`)
  }
  const unmatched = mxHosts.filter((mx) => !validateMx(mx, policy).valid)
  if (unmatched.length) {
    return error(
      name,
      `${summary}: MX host${unmatched.length > 1 ? 's' : ''} ${unmatched.join(', ')} ${unmatched.length > 1 ? 'are' : 'is'} not in the policy, so ${policy.mode === 'enforce' ? 'senders that enforce MTA-STS will not deliver to them' : 'TLS reports will show failures'}`,
      `add "mx: ${unmatched[0]}" to the policy (and change the id= in _mta-sts.${domain})`,
    )
  }
  if (policy.mode === 'testing') return warning(name, `${summary}: testing only, senders report failures but still deliver without TLS`, 'switch to mode: enforce once the TLS reports are clean (and change the id=)')
  return ok(name, summary)
}

export async function checkMtaSts(env: DoctorEnv): Promise<DoctorCheck[]> {
  const { domain, resolver } = env
  const at = `_mta-sts.${domain}`
  const checks: DoctorCheck[] = []

  let records: string[] | undefined
  try {
    records = (await txtRecords(resolver, at)).filter((t) => /^v\s*=\s*STSv1\s*(;|$)/i.test(t))
  } catch (err) {
    checks.push(error('MTA-STS', `cannot look up the TXT records of ${at}: ${describeDnsError(err)}`, dnsFix(resolver, domain)))
  }
  if (records && records.length === 0) {
    checks.push(
      warning(
        'MTA-STS',
        `no MTA-STS record at ${at}: senders cannot require TLS for mail to ${domain}, so it can be downgraded to plain text`,
        `serve a policy at https://mta-sts.${domain}/.well-known/mta-sts.txt and publish a TXT record at ${at}: "v=STSv1; id=${new Date().toISOString().slice(0, 10).replace(/-/g, '')}01"`,
      ),
    )
  } else if (records && records.length > 1) {
    checks.push(error('MTA-STS', `${records.length} MTA-STS records at ${at}: senders treat ${domain} as having no policy`, 'keep one record and delete the others'))
  } else if (records) {
    const record = records[0]!
    const id = /(?:^|;)\s*id\s*=\s*([^;\s]*)\s*(;|$)/i.exec(record)?.[1]
    if (!id || !/^[A-Za-z0-9]{1,32}$/.test(id)) {
      checks.push(error('MTA-STS', `the record at ${at} ("${record}") needs an id= of 1 to 32 letters and digits`, `publish "v=STSv1; id=${new Date().toISOString().slice(0, 10).replace(/-/g, '')}01"`))
    } else {
      checks.push(ok('MTA-STS', record))
      if (env.mtaSts.fetch) checks.push(await checkPolicy(env, id))
    }
  }

  // TLS-RPT: where senders report TLS failures (without it, a broken certificate goes unnoticed).
  const rptAt = `_smtp._tls.${domain}`
  try {
    const rpt = (await txtRecords(resolver, rptAt)).filter((t) => /^v\s*=\s*TLSRPTv1\s*(;|$)/i.test(t))
    const fix = `publish a TXT record at ${rptAt}: "v=TLSRPTv1; rua=mailto:tls-reports@${domain}"`
    if (rpt.length === 0) {
      checks.push(warning('TLS-RPT', `no TLS-RPT record at ${rptAt}: senders cannot report failed TLS connections to ${domain}`, fix))
    } else if (rpt.length > 1) {
      checks.push(warning('TLS-RPT', `${rpt.length} TLS-RPT records at ${rptAt}: senders ignore them all`, 'keep one record and delete the others'))
    } else {
      const rua = /(?:^|;)\s*rua\s*=\s*([^;]*)/i.exec(rpt[0]!)?.[1]?.trim()
      const uris = rua ? rua.split(',').map((u) => u.trim()) : []
      if (!uris.length || uris.some((u) => !/^mailto:[^@\s]+@[^@\s]+$|^https:\/\/\S+$/i.test(u))) {
        checks.push(warning('TLS-RPT', `the record at ${rptAt} ("${rpt[0]}") needs rua= with mailto: or https: addresses`, fix))
      } else {
        checks.push(ok('TLS-RPT', rpt[0]!))
      }
    }
  } catch (err) {
    checks.push(error('TLS-RPT', `cannot look up the TXT records of ${rptAt}: ${describeDnsError(err)}`, dnsFix(resolver, domain)))
  }
  return checks
}
