// The public API of Relay. Plugins and configs import from here only.
import { z } from 'zod'
import type { Plugin } from './hooks/types.js'

export { defineConfig } from './config/schema.js'
export type { RelayConfig, RelayConfigInput } from './config/schema.js'
export { accept, reject, tempfail, route, replyFor, STAGE_REPLIES } from './hooks/verdict.js'
export type { Reply } from './hooks/verdict.js'
export type * from './hooks/types.js'
export type * from './hooks/processes.js'
export type * from './hooks/operator.js'
export { HOOK_NAMES, EVENT_NAMES } from './hooks/names.js'
export { PLUGIN_ERROR_CODES, PluginError } from './hooks/plugin-errors.js'
/** Password hashing for auth plugins: a bounded share of the thread pool, BUSY when the line is full. */
export { BUSY, BoundedWork, passwordChecks } from './hooks/password-checks.js'
export { ConfigError } from './config/load.js'
/** The first line of whatever was thrown (an Error, a string, null, an object without toString): for messages about another plugin's or a library's failure. */
export { errorText } from './error-text.js'
export { MessageHeaders } from './mail/headers.js'
/** RFC 2047 encoded-words for header text that is not ASCII. */
export { encodedWords } from './mail/encoded-words.js'
export { addressKey, domainKey, parseAddress } from './mail/address.js'
/** The relay's postmaster (its mailbox, postmaster at a local domain or the hostname): always taken at RCPT, never suppressed. */
export { isRelayPostmaster } from './smtp/postmaster.js'
/** Every address a From:/Sender: field can be read as (parsed, and every address-like token): for sender checks. */
export { headerAddresses } from './mail/header-addresses.js'
export { readerAddresses } from './mail/reader-addresses.js'
export { duration, durationAtLeast, timer, timerAtLeast, size, cidr, httpUrl, httpUrlWith } from './config/fields.js'
/** URLs for logs: origin and path only (no password, no query key). */
export { safeUrl, scrubUrls } from './net/urls.js'
export { redactUrl } from './config/redact-url.js'
/** 'host', 'host:port', an IP address or '[v6]:port', checked (a zod string; the reasons never echo the text), and its parser. */
export { hostPortString, parseHostPort, pemFilePath } from './config/fields.js'
/** Parses '30d', '12h', '90s', '250ms' or a number of seconds to milliseconds (undefined if not a duration). */
export { parseDuration } from './config/duration.js'
export { networkMatcher } from './net/networks.js'
export { clientKey } from './net/client-key.js'
/** GETs a domain's MTA-STS policy file (RFC 8461 §3.3), as delivery does: for `relay doctor` and plugins. */
export { fetchPolicyFile as fetchMtaStsPolicy } from './delivery/mta-sts.js'
/** mailauth's unpublished internals (`mailauth/lib/...`), typed and loaded on first use: see core/mailauth.ts. */
export { mailauthInternals } from './mailauth.js'
/** Imports an optional peer package (`pg`, `ioredis`) with an error that names the feature and what to install. */
export { importOptional } from './optional.js'
/** mkdir -p that fails where Node's recursive mkdir would spin (/proc, /sys). */
export { makeDirs } from './queue/private-files.js'
/** Creates a file 0600 (or takes others' access away from one): for a plugin's database in the data directory. */
export { privateFile } from './queue/private-files.js'
export type { ParsedHeaderLine as MailauthHeaderLine, DmarcRecordFound } from './mailauth.js'
export { computeFigures, hourlySeries, windowStart, statsResponse, statsFromRows, DEFAULT_THRESHOLDS, PERIODS } from './queue/figures.js'
export type { Figures, Period, Warning, DomainFigures, HourPoint, Thresholds, Counts, StatsResponse } from './queue/figures.js'
/** Is a better-sqlite3 import: loaded only when `relay queue backup|restore` runs. */
export const queueBackup = () => import('./queue/backup.js')
export { z }

/**
 * Declares a plugin: a name, an optional zod schema for its options, an optional setup whose
 * result is the plugin's state (`ctx.state` in every hook), and hooks. The object and its hooks are
 * frozen: another plugin that imports it (a bundled one, one package) cannot change what it does.
 */
export function definePlugin<O = Record<string, never>, S = undefined>(plugin: Plugin<O, S>): Plugin<O, S> {
  if (typeof plugin.hooks === 'object' && plugin.hooks !== null) Object.freeze(plugin.hooks)
  return Object.freeze(plugin)
}
