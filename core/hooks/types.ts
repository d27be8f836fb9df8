import type { Logger } from 'pino'
import type { PluginProcesses } from './processes.js'
import type { ZodType } from 'zod'
import type { Resolver } from 'node:dns/promises'
import type { Readable } from 'node:stream'
import type { Command } from 'commander'
import type { MessageHeaders } from '../mail/headers.js'
import type { BounceCategory, EventName, HookName, ListenerRole } from './names.js'
import type { QueueOperations, RelayOperations } from './operator.js'

export type { BounceCategory, EventName, HookName, ListenerRole } from './names.js'

export type { Verdict, Route, RouteDecision } from './decisions.js'
import type { Verdict, Route, RouteDecision } from './decisions.js'

export type HookResult = Verdict | undefined | void
export type MaybePromise<T> = T | Promise<T>

/** One SMTP session as plugins see it. */
export interface SessionInfo {
  readonly id: string
  readonly remoteAddress: string
  readonly remotePort: number
  readonly localAddress: string
  readonly localPort: number
  /** Reverse DNS name of the client, or `[ip]` when unknown. */
  readonly clientHostname: string
  readonly listener: { readonly host: string; readonly port: number; readonly role: ListenerRole }
  /** The name given in HELO/EHLO. */
  readonly helo?: string
  readonly secure: boolean
  /** TLS protocol and cipher, once the session is encrypted. */
  readonly tls?: { readonly version: string; readonly cipher: string }
  /** The authenticated user, once AUTH has succeeded. */
  readonly user?: string
  /** What the authenticated user may send as (from the auth hook's verdict). */
  readonly senders?: readonly string[]
  /** The client authenticated, or its address is in `smtp.trustedNetworks`. */
  readonly trusted: boolean
}

export interface EnvelopeAddress {
  /** The address as given, without angle brackets; '' is the null sender. */
  address: string
  /** ESMTP parameters (SIZE, BODY, NOTIFY, ...), keys upper-cased. */
  args: Record<string, string | boolean>
}

export interface Envelope {
  sender: EnvelopeAddress
  recipients: EnvelopeAddress[]
}

/** A message as delivery sees it. */
export interface QueuedMessageInfo {
  readonly id: string
  readonly sender: string
  readonly messageId?: string
  readonly size: number
  readonly receivedAt: number
  readonly headers: string
}

export interface DeliveryEvent {
  queueId: string
  messageId?: string
  sender: string
  recipient: string
  domain: string
  /** The host that gave the response, as `name[ip]:port`, when one was reached. */
  remoteHost?: string
  response: string
  attempts: number
  /** Milliseconds this attempt took, and since the message was received. */
  durationMs: number
  queuedMs: number
  /** For deferrals: when the next attempt is due (epoch ms). */
  nextAttemptAt?: number
  /** For deferrals and bounces: the kind of failure (RFC 3463 code and reply text). */
  category?: BounceCategory
  /** TLS of the connection that gave the response; false: plain text; absent: no connection. */
  tls?: false | { version: string; cipher: string; verified: boolean }
  /** How it was sent: the domain's MX hosts, a smarthost ('smtp'), LMTP; absent when decided before routing. */
  route?: 'mx' | 'smtp' | 'lmtp'
  /** The name of the route a `deliver` hook chose (Route.name), when it gave one. */
  routeName?: string
  /** Decided by the operator (`relay queue bounce`), not by a delivery attempt: durationMs is 0. */
  byOperator?: true
}

/** What every hook receives besides its own data. */
export interface PluginContext<O, S = unknown> {
  /** A pino child logger named after the plugin. */
  log: Logger
  /** The plugin's own options, validated by its `options` schema. */
  options: O
  /** The relay's DNS resolver (config `dns.servers`). */
  resolver: Resolver
  /** This relay's host name (config `hostname`). */
  hostname: string
  /** Whether a domain is one of config `localDomains`. */
  isLocalDomain(domain: string): boolean
  /** What `setup` returned: the plugin's own state for this generation (undefined without setup). */
  state: S
  /** The directory of the config file (the working directory when there is none). */
  configDir: string
  /** A path from the plugin's options, resolved against the config file's directory (absolute ones stay). */
  resolvePath(file: string): string
  /** Which process this instance runs in, and calls to the plugin's instance in the primary (config `workers`). */
  processes: PluginProcesses
}

/**
 * Notes plugins leave for each other: `session` lives as long as the SMTP session, `message` for
 * one transaction (a new one at each MAIL FROM). Prefix keys with your plugin's name.
 */
export interface Notes {
  session: Map<string, unknown>
  message: Map<string, unknown>
}

export interface HookContexts {
  connect: { session: SessionInfo; notes: Notes }
  helo: { session: SessionInfo; helo: string; notes: Notes }
  auth: { session: SessionInfo; method: string; username: string; password: string; notes: Notes }
  mail: { session: SessionInfo; sender: EnvelopeAddress; notes: Notes }
  rcpt: { session: SessionInfo; envelope: Envelope; recipient: EnvelopeAddress; domain: string; isLocal: boolean; notes: Notes }
  data: { session: SessionInfo; envelope: Envelope; headers: MessageHeaders; size: number; readMessage: () => Readable; notes: Notes }
  queue: {
    session: SessionInfo
    envelope: Envelope
    headers: MessageHeaders
    size: number
    queueId: string
    readMessage: () => Readable
    /**
     * Converts the message's 8-bit MIME parts to quoted-printable or base64 (RFC 6152 §3, what
     * delivery does for a next hop without 8BITMIME) before it is queued; `headers` and
     * `readMessage()` show the result. For a plugin that signs the message (DKIM): sign the form that
     * travels. Resolves false, changing nothing, when there is no 8-bit content or it cannot be
     * converted (8-bit header fields).
     */
    convertTo7bit: () => Promise<boolean>
    notes: Notes
  }
  /** A message the relay wrote itself (a DSN for `dsnFor`), before it is queued; never refused (core/hooks/generated.ts). */
  generated: { kind: 'dsn'; envelope: Envelope; headers: MessageHeaders; size: number; queueId: string; dsnFor?: string; readMessage: () => Readable; convertTo7bit: () => Promise<boolean> }
  deliver: { message: QueuedMessageInfo; domain: string; recipients: string[]; attempt: number }
}
// The lists in names.ts and the context types must name the same hooks and events.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
const hookNamesMatch: Same<keyof HookContexts, HookName> = true
const eventNamesMatch: Same<keyof EventContexts, EventName> = true
void hookNamesMatch
void eventNamesMatch

/** A message was written to the queue and answered 250. */
export interface AcceptedEvent {
  queueId: string
  messageId?: string
  sender: string
  recipients: string[]
  size: number
  session: SessionInfo
}

/** A command was refused (4xx/5xx) by a hook or by the core's own checks. */
export interface RejectedEvent {
  session: SessionInfo
  /**
   * Where: a hook stage, or 'protocol' for the core's own checks (address syntax, size, bare LF,
   * recipient limit). The core's policy refusals (relaying denied, suppressed recipient, sender not
   * owned by the user) carry their stage and no `plugin`.
   */
  stage: HookName | 'protocol'
  code: number
  /** Enhanced status code, e.g. '5.7.1'. */
  status?: string
  message: string
  /** The plugin whose verdict it was; absent for the core's own decisions. */
  plugin?: string
  /** The refused recipient or sender, at rcpt and mail. */
  address?: string
  /** The SMTP command refused ('mail': `address` is the sender; 'rcpt': a recipient; 'command': any other), also for stage 'protocol'. */
  command?: 'connect' | 'helo' | 'auth' | 'mail' | 'rcpt' | 'data' | 'command'
}

/** A recipient was refused at RCPT because it is on the suppression list. */
export interface SuppressedEvent {
  session: SessionInfo
  recipient: string
  reason: string
  /** The queue id of the message whose bounce suppressed it, or 'cli'. */
  source?: string
}

export interface EventContexts {
  accepted: AcceptedEvent
  rejected: RejectedEvent
  suppressed: SuppressedEvent
  delivered: DeliveryEvent
  deferred: DeliveryEvent
  bounced: DeliveryEvent
  /** AUTH failed (wrong credentials, or refused by a plugin). */
  authFailed: { session: SessionInfo; username: string; method: string; /** A plugin answered tempfail (e.g. its backend is down): not a wrong password. */ temporary?: boolean }
  /** The SMTP session ended (for counters of open connections). */
  sessionClosed: { session: SessionInfo }
  /** A DNS lookup failed (not NXDOMAIN/NODATA): the record type and the resolver's error code. */
  dnsFailed: { type: string; code: string }
  /** This node took over queued work whose holder died or hung (its lease or heartbeat ran out). */
  leaseTakenOver: { recipients: number }
  /** A feedback-loop complaint was recorded (`relay.queue.recordComplaint`, e.g. by the reputation plugin). */
  complaint: ComplaintEvent
  /** A hot reload ended (SIGHUP, `relay reload`, POST /api/reload): applied (with the settings that changed) or refused. */
  reloaded: { ok: boolean; changed?: string[]; error?: string }
}

/** A complaint as recorded: matched to a message this relay sent, or counted against a domain only. */
export interface ComplaintEvent {
  matched: boolean
  queueId?: string
  sender?: string
  /** The domain it was counted against ('' when none could be told). */
  senderDomain: string
  /** The complaining recipient's domain. */
  destDomain?: string
  feedbackType: string
  messageId?: string
  /** The reporting software (the report's User-Agent). */
  userAgent?: string
}

/** What each hook call gets besides its stage's data and the plugin context. */
export interface HookCall {
  /**
   * Aborted when the call runs past config `hookTimeout` (the relay has then answered without
   * it): stop the work, e.g. end a worker thread or cancel a request, so it no longer costs CPU.
   */
  signal: AbortSignal
}

export type Hooks<O, S = unknown> = {
  [K in HookName]?: (ctx: HookContexts[K] & PluginContext<O, S> & HookCall) => MaybePromise<K extends 'deliver' ? HookResult | RouteDecision : HookResult>
} & {
  [K in EventName]?: (event: EventContexts[K], ctx: PluginContext<O, S>) => MaybePromise<void>
}

/** A file a plugin reads, parsed, and read again when it changes (`ctx.watchFile`). */
export interface WatchedFile<T> {
  /** The last copy that parsed; a change that fails to parse keeps it (and logs why). */
  readonly current: T
  /** Stops watching (done for you at teardown). */
  close(): void
}

export interface SetupContext<O> extends Omit<PluginContext<O, undefined>, 'state'> {
  /** Where this relay keeps its data (config `dataDir`). */
  dataDir: string
  /** 'start' and 'reload' on a running relay; 'check' in `relay check-config` (bind nothing, start nothing). */
  mode: 'start' | 'reload' | 'check'
  /** The running relay's operator API (queue operations, reload, readiness); absent in 'check' mode. */
  relay?: RelayOperations
  /**
   * Reads `file` (resolved like `resolvePath`) and parses it now, throwing when it cannot; then
   * reads it again whenever it changes, keeping the last good copy. Closed at teardown.
   */
  watchFile<T>(file: string, parse: (text: string) => T, opts?: { onChange?: (value: T) => void }): WatchedFile<T>
}

/** One line of `relay doctor`'s report. */
export interface DoctorCheck {
  /** What was checked, e.g. `DKIM s2026._domainkey.example.com`. */
  name: string
  status: 'ok' | 'warning' | 'error'
  message: string
  /** What to do about a warning or error. */
  fix?: string
}

export interface DoctorContext<O, S = unknown> extends PluginContext<O, S> {
  /** The sending domain being checked. */
  domain: string
}

/** What `commands` gets besides the commander program. */
export interface CommandEnv {
  /**
   * Loads and validates the config file (`--config`, else the usual search; none found: the
   * defaults). With `required`, none found is a ConfigError saying where it looked (the CLI exits 2):
   * for verbs that must not work on the defaults' data directory (./data of wherever they run).
   */
  loadConfig(file?: string, opts?: { required?: boolean }): Promise<unknown>
  /**
   * The config's plugins, loaded and set up in 'check' mode (options validated, nothing bound), with
   * their contexts; call `close()` when done.
   */
  loadPlugins(configFile?: string): Promise<{ plugins: { plugin: Plugin; ctx: PluginContext<unknown> }[]; close(): Promise<void> }>
  /**
   * The configured queue opened for this command (a stopped relay's data directory, or the shared
   * PostgreSQL queue), with the config it was found by and the pid of a relay running on that data
   * directory, if any (told by SIGUSR2 to scan the queue when a verb made work due). Call `close()` when done. With
   * `create: false`, a SQLite data directory no relay has used yet is left alone: it rejects with an
   * Error whose `kind` is 'not-found'. With no config file found at all it rejects with a ConfigError
   * listing where it looked (the CLI exits 2): a queue verb never runs on the defaults by accident.
   */
  openQueue(configFile?: string, opts?: { create?: boolean }): Promise<{ queue: QueueOperations; config: { dataDir: string; configFile?: string }; running?: number; close(): Promise<void> }>
  /**
   * The pid of the relay running on `dataDir` now (it holds the directory's lock), else undefined.
   * Files a relay left there (admin.json) are its run's only when they name this pid: a relay killed
   * with -9 leaves them behind, and their pid may belong to another program by now.
   */
  runningRelay(dataDir: string): number | undefined
}

/** What setup returns in the factory form: hooks and events made there (beside the object's own), its teardown, its state. */
export interface SetupMade<O = any, S = any> {
  hooks?: Hooks<O, S>
  events?: Partial<Pick<Hooks<O, S>, EventName>>
  teardown?: (ctx: PluginContext<O, S>) => MaybePromise<void>
  state?: S
}

/** A plugin: a plain object with a name and hooks. `S`: what `setup` returns, each hook's `ctx.state` for one generation. */
export interface Plugin<O = any, S = any> {
  name: string
  /** A zod schema for the plugin's options; they are validated at start. */
  options?: ZodType<O>
  /**
   * Runs at start (and at each hot reload, for the new generation) within config `setupTimeout`;
   * returns the plugin's state (`ctx.state` in hooks), or the parts it made: `{ hooks, events,
   * teardown, state }` (the factory form, docs/plugins.md). A returned function is taken as
   * `teardown` (the older form).
   */
  setup?: (ctx: SetupContext<O>) => MaybePromise<S | (() => MaybePromise<void>) | SetupMade<O, S>>
  /** Runs at shutdown, and for the old generation after a reload swapped in the new one. */
  teardown?: (ctx: PluginContext<O, S>) => MaybePromise<void>
  hooks?: Hooks<O, S>
  /** The addresses it binds with these options, `key` the option setting each (`'port'`): a clash is a config error (docs/plugins.md). */
  ports?: (options: O) => { host: string; port: number; key: string }[]
  /** Kept across hot reloads while its options stay the same (a listener it binds); changed ones need a restart. */
  keepOnReload?: boolean
  /** CLI verbs this plugin adds to `relay` (a commander program), when it is in the config or bundled. */
  commands?: (program: Command, env: CommandEnv) => void
  /** Checks this plugin adds to `relay doctor <domain>` (e.g. DKIM records against its keys). */
  doctor?: (ctx: DoctorContext<O, S>) => MaybePromise<DoctorCheck[]>
}
