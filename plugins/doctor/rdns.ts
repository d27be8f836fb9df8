// Reverse DNS of each address the relay sends from: a PTR record whose name resolves back to the
// address (forward-confirmed), ideally the name the relay gives in EHLO. Many receivers refuse or
// junk mail from addresses without it.
import { addressesOf, describeDnsError, dnsFix, isNotFound, reverseName, sameAddress } from './dns.js'
import { error, ok, warning, type DoctorCheck, type DoctorEnv } from './types.js'

async function checkAddress({ resolver, hostname }: DoctorEnv, ip: string): Promise<DoctorCheck> {
  const name = `rDNS ${ip}`
  const arpa = reverseName(ip)
  const host = hostname.toLowerCase().replace(/\.$/, '')
  const askProvider = `ask whoever hosts ${ip} (your provider) to set its reverse DNS (PTR) to ${host}, and give ${host} an ${ip.includes(':') ? 'AAAA' : 'A'} record ${ip}`
  let names: string[]
  try {
    names = (await resolver.resolvePtr(arpa)).map((n) => n.toLowerCase().replace(/\.$/, ''))
  } catch (err) {
    if (!isNotFound(err)) return error(name, `cannot look up the PTR record of ${ip} (${arpa}): ${describeDnsError(err)}`, dnsFix(resolver, arpa))
    names = []
  }
  if (names.length === 0) {
    return error(name, `no PTR record for ${ip}: many receivers refuse or junk mail from addresses without reverse DNS`, askProvider)
  }

  // Forward-confirm: one of the PTR names must resolve back to the address.
  const forward = await Promise.all(
    names.map(async (n) => {
      try {
        return { name: n, addresses: await addressesOf(resolver, n) }
      } catch (err) {
        return { name: n, addresses: [] as string[], failure: describeDnsError(err) }
      }
    }),
  )
  const confirmed = forward.find((f) => f.addresses.some((a) => sameAddress(a, ip)))
  if (!confirmed) {
    const seen = forward
      .map((f) => (f.failure ? `${f.name} (lookup failed: ${f.failure})` : f.addresses.length ? `${f.name} resolves to ${f.addresses.join(', ')}` : `${f.name} has no A/AAAA record`))
      .join('; ')
    return error(
      name,
      `${ip} → ${names.join(', ')}, but ${seen}: the reverse DNS is not forward-confirmed, which receivers treat as no reverse DNS`,
      `give ${names[0]} an ${ip.includes(':') ? 'AAAA' : 'A'} record ${ip}, or ${askProvider}`,
    )
  }
  if (confirmed.name !== host) {
    return warning(
      name,
      `${ip} → ${confirmed.name} → ${ip} (forward-confirmed), but the relay introduces itself (EHLO) as ${host}; receivers trust a greeting that matches the reverse DNS`,
      `set hostname: '${confirmed.name}' in the config, or set the PTR of ${ip} to ${host} (with an A record ${host} → ${ip})`,
    )
  }
  return ok(name, `${ip} → ${confirmed.name} → ${ip} (forward-confirmed, matches the EHLO name)`)
}

export async function checkReverseDns(env: DoctorEnv): Promise<DoctorCheck[]> {
  return Promise.all(env.outboundAddresses.map((ip) => checkAddress(env, ip)))
}
