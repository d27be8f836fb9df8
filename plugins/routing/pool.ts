// Choosing the local address (and EHLO name) to send from, out of a route's pool.

export interface PoolAddress {
  address: string
  helo?: string
  weight: number
}

export type Picker = () => PoolAddress

/** 'round-robin': each address in turn. 'weighted': smooth weighted round robin (nginx's), so weights 2:1 give a, b, a, a, b, a, ... */
export function picker(strategy: 'round-robin' | 'weighted', addresses: PoolAddress[]): Picker {
  if (strategy === 'round-robin') {
    let next = 0
    return () => addresses[next++ % addresses.length]!
  }
  const current = addresses.map(() => 0)
  const total = addresses.reduce((sum, a) => sum + a.weight, 0)
  return () => {
    let best = 0
    addresses.forEach((a, i) => {
      current[i]! += a.weight
      if (current[i]! > current[best]!) best = i
    })
    current[best]! -= total
    return addresses[best]!
  }
}
