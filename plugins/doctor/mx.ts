// MX: where mail to the domain (replies, bounces, DMARC reports) goes. Receivers also check that a
// sender domain can receive mail at all (Postfix's reject_unknown_sender_domain, for one).
import net from 'node:net'
import type { MxRecord } from 'node:dns'
import { addressesOf, describeDnsError, dnsFix, isNotFound } from './dns.js'
import { error, ok, warning, type DoctorCheck, type DoctorEnv } from './types.js'

export async function checkMx({ domain, resolver }: DoctorEnv): Promise<DoctorCheck[]> {
  const example = `${domain}. MX 10 mail.${domain}.`
  let records: MxRecord[]
  try {
    records = await resolver.resolveMx(domain)
  } catch (err) {
    if (!isNotFound(err)) return [error('MX', `cannot look up the MX records of ${domain}: ${describeDnsError(err)}`, dnsFix(resolver, domain))]
    records = []
  }

  if (records.length === 0) {
    let addresses: string[] = []
    try {
      addresses = await addressesOf(resolver, domain)
    } catch (err) {
      return [error('MX', `no MX record, and the A/AAAA lookup of ${domain} failed: ${describeDnsError(err)}`, `publish an MX record: ${example}`)]
    }
    if (addresses.length > 0) {
      return [
        warning(
          'MX',
          `no MX record: mail to ${domain} (replies, bounces) goes to its address record (${addresses.join(', ')})`,
          `publish an MX record naming the host that receives mail for ${domain}: ${example}`,
        ),
      ]
    }
    return [
      error(
        'MX',
        `no MX record and no A/AAAA record: ${domain} cannot receive mail, so replies and bounces are lost, and receivers that check the sender domain refuse its mail`,
        `publish an MX record: ${example}`,
      ),
    ]
  }

  const isNull = (r: MxRecord) => r.exchange === '' || r.exchange === '.'
  if (records.some(isNull)) {
    if (records.length > 1) {
      return [error('MX', 'a null MX ("MX 0 .") is published together with other MX records, which RFC 7505 forbids', 'keep either the null MX (the domain receives no mail) or the real MX records')]
    }
    return [
      warning(
        'MX',
        `null MX (RFC 7505): ${domain} declares that it receives no mail, so replies and bounces cannot reach it and receivers may refuse mail from it`,
        `if ${domain} should receive replies and bounces, replace the null MX with real MX records: ${example}`,
      ),
    ]
  }

  records.sort((a, b) => a.priority - b.priority)
  // One result per MX host, in priority order: a name → addresses summary, or an error line.
  const results = await Promise.all(
    records.map(async (r): Promise<string | DoctorCheck> => {
      const host = r.exchange.replace(/\.$/, '')
      if (net.isIP(host)) {
        return error(`MX ${host}`, `the MX record names an IP address (${host}), not a host name; senders ignore it`, `point the MX record at a host name whose A record is ${host}`)
      }
      try {
        const addresses = await addressesOf(resolver, host)
        if (addresses.length > 0) return `${host} (${r.priority}) → ${addresses.join(', ')}`
        return error(`MX ${host}`, `MX host ${host} has no A/AAAA record, so mail to ${domain} cannot be delivered to it`, `give ${host} an A (or AAAA) record, or remove it from the MX records`)
      } catch (err) {
        return error(`MX ${host}`, `cannot look up the addresses of MX host ${host}: ${describeDnsError(err)}`, dnsFix(resolver, host))
      }
    }),
  )
  const good = results.filter((r): r is string => typeof r === 'string')
  const bad = results.filter((r): r is DoctorCheck => typeof r !== 'string')
  return [...(good.length ? [ok('MX', good.join(', '))] : []), ...bad]
}
