import net from 'node:net'

/** A matcher for a list of IP addresses and CIDR blocks; IPv4-mapped IPv6 matches its IPv4 block. */
export function networkMatcher(blocks: string[]): (ip: string) => boolean {
  // Checked per session and per recipient: an empty list costs nothing.
  if (blocks.length === 0) return () => false
  const list = new net.BlockList()
  for (const block of blocks) {
    const [ip, bits] = block.split('/') as [string, string | undefined]
    const family = net.isIP(ip) === 6 ? 'ipv6' : 'ipv4'
    list.addSubnet(ip, bits === undefined ? (family === 'ipv4' ? 32 : 128) : Number(bits), family)
  }
  return (ip) => {
    const plain = ip.startsWith('::ffff:') && net.isIPv4(ip.slice(7)) ? ip.slice(7) : ip
    const family = net.isIP(plain)
    return family !== 0 && list.check(plain, family === 4 ? 'ipv4' : 'ipv6')
  }
}
