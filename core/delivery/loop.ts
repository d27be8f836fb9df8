// Mail loops (RFC 5321 §6.3): is the next hop this relay itself? Two signs, as Postfix looks for
// them: the host's address and port are one of our own listeners (checked before connecting), or
// the server greets or answers EHLO with our own hostname (checked before MAIL FROM).
import net from 'node:net'
import os from 'node:os'
import SMTPConnection from 'nodemailer/lib/smtp-connection'
import type { RelayConfig } from '../config/schema.js'

/** A listener as bound: the host it was given and its port (the real one, also for port 0). */
export interface OwnListener {
  host: string
  port: number
}

const bound = new WeakMap<RelayConfig, OwnListener[]>()

/** The listeners of this relay once they are bound (core/relay.ts); until then the configured ones. */
export function recordOwnListeners(config: RelayConfig, listeners: OwnListener[]): void {
  bound.set(config, listeners.map((l) => ({ host: l.host, port: l.port })))
}

function ownListeners(config: RelayConfig): OwnListener[] {
  return bound.get(config) ?? config.listen.filter((l) => l.port !== 0)
}

const familyOf = (ip: string): 'ipv4' | 'ipv6' => (net.isIPv4(ip) ? 'ipv4' : 'ipv6')

let local: { list: net.BlockList; until: number } | undefined
/** Addresses that reach this machine: loopback, the unspecified address, every interface's address. */
function localAddresses(): net.BlockList {
  if (local && local.until > Date.now()) return local.list
  const list = new net.BlockList()
  list.addSubnet('127.0.0.0', 8, 'ipv4')
  list.addAddress('0.0.0.0', 'ipv4')
  list.addAddress('::1', 'ipv6')
  list.addAddress('::', 'ipv6')
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) list.addAddress(a.address.replace(/%.*$/, ''), a.family === 'IPv4' ? 'ipv4' : 'ipv6')
  }
  // Interfaces change rarely; a short cache keeps this off every delivery's path.
  local = { list, until: Date.now() + 30_000 }
  return list
}

/** An IP address in one spelling: IPv6 canonical, an IPv4-mapped one (`::ffff:7f00:1` too) as its IPv4. */
function canonicalIp(ip: string): string {
  if (!net.isIPv6(ip)) return ip
  const v6 = new net.SocketAddress({ address: ip, family: 'ipv6' }).address
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(v6)
  return mapped ? mapped[1]! : v6
}

/** Two IP addresses are the same (IPv4-mapped IPv6 equal to its IPv4; IPv6 in any spelling). */
function sameIp(a: string, b: string): boolean {
  return a === b || canonicalIp(a) === canonicalIp(b)
}

/** Does a listener bound to `host` accept connections to `address`? */
function listenerTakes(host: string, rawAddress: string): boolean {
  if (net.isIP(rawAddress) === 0) return false
  const address = canonicalIp(rawAddress)
  if (host === '' || host === '0.0.0.0') return net.isIPv4(address) && localAddresses().check(address, 'ipv4')
  // Node binds '::' dual-stack: IPv4 addresses of this machine reach it too.
  if (host === '::') return localAddresses().check(address, familyOf(address))
  if (host === 'localhost') return ['127.0.0.1', '::1'].some((h) => listenerTakes(h, address))
  if (net.isIP(host) === 0) return false // a name: the greeting check still catches it
  return sameIp(host, address)
}

/** Is `address`:`port` one of this relay's own SMTP listeners? */
export function isOwnEndpoint(config: RelayConfig, address: string, port: number): boolean {
  return ownListeners(config).some((l) => l.port === port && listenerTakes(l.host, address))
}

/** The host name a server gives first in a 2xx greeting or EHLO/LHLO reply (`220 mx.example.com ESMTP`). */
function nameIn(reply: string): string | undefined {
  const m = /^2\d\d[ -]([^\s]+)/.exec(reply)
  return m?.[1]
}

type Action = (this: unknown, reply: string) => unknown
interface PeerReplyActions {
  _actionGreeting: Action
  _actionEHLO: Action
}

// nodemailer keeps neither the greeting nor the first line of the EHLO reply, so the two private
// reply handlers are wrapped per connection. Checked once at load: an upgrade that renames them
// must stop the relay at start rather than silently lose loop detection.
{
  const proto = (SMTPConnection as unknown as { prototype: Partial<PeerReplyActions> }).prototype
  if (typeof proto._actionGreeting !== 'function' || typeof proto._actionEHLO !== 'function') {
    throw new Error('nodemailer SMTPConnection internals changed (_actionGreeting/_actionEHLO): check core/delivery/loop.ts against the installed version')
  }
}

/**
 * Records the names the server of `conn` gives in its greeting and in its EHLO/LHLO replies (after
 * STARTTLS too). Call before `connect()`; read the returned list once connected.
 */
export function peerNames(conn: SMTPConnection): string[] {
  const names: string[] = []
  const c = conn as unknown as PeerReplyActions
  for (const action of ['_actionGreeting', '_actionEHLO'] as const) {
    const original = c[action]
    c[action] = function (this: unknown, reply: string) {
      const name = nameIn(String(reply))
      if (name) names.push(name)
      return original.call(this, reply)
    }
  }
  return names
}

/** Postfix's wording, status 5.4.6. */
export const loopsBack = (domain: string) => `5.4.6 mail for ${domain} loops back to myself`
