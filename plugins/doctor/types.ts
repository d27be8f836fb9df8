// The check functions' shared vocabulary: what they get (DoctorEnv) and the lines they return.
import type { Resolver } from 'node:dns/promises'
import type { DoctorCheck, Plugin, PluginContext } from '../../core/index.js'
import type { DomainSettings } from './options.js'

export type { DoctorCheck }

/** One of the config's plugins, set up in 'check' mode, with its context (CommandEnv.loadPlugins). */
export interface LoadedPlugin {
  plugin: Plugin
  ctx: PluginContext<unknown>
}

/** What every check gets: the domain, the relay's resolver and the parts of the config they need. */
export interface DoctorEnv {
  /** The sending domain being checked, lower case, no trailing dot. */
  domain: string
  resolver: Resolver
  /** Config `hostname`: the name the relay gives in EHLO. */
  hostname: string
  /** Config `delivery.outboundAddresses`: the public addresses the relay sends from. */
  outboundAddresses: string[]
  mtaSts: {
    /** Fetch the MTA-STS policy over HTTPS (off: only the DNS records are checked). */
    fetch: boolean
    /** `host:port` to connect to instead of mta-sts.<domain>:443; the certificate is still checked for mta-sts.<domain>. */
    connect?: string
    timeoutMs: number
  }
  /** Smarthost routes of the routing plugin that carry the domain's mail; absent: none (all leaves from the relay). */
  send?: SendPlan
}

export function ok(name: string, message: string): DoctorCheck {
  return { name, status: 'ok', message }
}
export function warning(name: string, message: string, fix?: string): DoctorCheck {
  return fix ? { name, status: 'warning', message, fix } : { name, status: 'warning', message }
}
export function error(name: string, message: string, fix?: string): DoctorCheck {
  return fix ? { name, status: 'error', message, fix } : { name, status: 'error', message }
}

export type Provider = { id: 'sendgrid' } | { id: 'ses'; region: string } | { id: 'mailgun'; eu: boolean } | { id: 'unknown'; host: string }

/** A smarthost route that carries all or some of the domain's mail. */
export interface SmarthostUse {
  /** The route's name, else `routes[i]`. */
  label: string
  hosts: string[]
  provider: Provider
  /** 'all': every message from the domain takes it; 'some': only some (recipient or address criteria). */
  coverage: 'all' | 'some'
}

export interface SendPlan {
  smarthosts: SmarthostUse[]
  /** Some of the domain's mail leaves from the relay's own addresses (an mx route, or no route fits). */
  direct: boolean
  /** The doctor's options for this domain (`domains['<domain>']`). */
  settings: DomainSettings
}
