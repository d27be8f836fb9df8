import type { Logger } from 'pino'
import type { ZodType } from 'zod'
import type { Resolver } from 'node:dns/promises'
import type { Readable } from 'node:stream'
import type { MessageHeaders } from '../mail/headers.js'

/** What a hook decides. Returning nothing passes the decision on to the next plugin. */
export interface Verdict {
  action: 'accept' | 'reject' | 'tempfail'
  /** SMTP reply code; defaults to the stage's code for this action (see docs/hooks.md). */
  code?: number
  /** RFC 3463 enhanced status code, e.g. '5.7.1'. */
  status?: string
  message?: string
  /**
   * From an `auth` hook that accepts: the addresses (`alice@example.com`) and domains
   * (`example.com`) the user may send as; `'*'` for any. Default: the user name, if it is an address.
   */
  senders?: string[]
}

/**
 * Where and how a `deliver` hook sends these recipients. `kind` 'mx' (the default when no `hosts`
 * or `socketPath` is given) uses the recipient domain's MX hosts; 'smtp' the given `hosts` (a
 * smarthost); 'lmtp' an LMTP server (`hosts` + `port`, or a unix `socketPath`).
 */
export interface Route {
  kind?: 'mx' | 'smtp' | 'lmtp'
  /** Host names or IP addresses, tried in order ('smtp', 'lmtp'). */
  hosts?: string[]
  port?: number
  /** Unix socket of an LMTP server ('lmtp' only, instead of hosts). */
  socketPath?: string
  /** Name sent in EHLO/LHLO (default: config `hostname`). */
  helo?: string
  /**
   * TLS policy: 'may' (default: STARTTLS when offered, plain text after a failed handshake),
   * 'encrypt' (TLS required, certificate not checked), 'verify' (TLS required, certificate valid
   * for the host name). A failure under 'encrypt'/'verify' defers; it never falls back to plain text.
   */
  tls?: 'may' | 'encrypt' | 'verify'
  /** TLS from the first byte (port 465) instead of STARTTLS. */
  implicitTls?: boolean
  /** SMTP AUTH after TLS (never sent over a connection that is not encrypted). */
  auth?: { user: string; pass: string }
  /** Local IP address to send from. */
  localAddress?: string
}
export interface RouteDecision {
  action: 'route'
  route: Route
}

export type HookResult = Verdict | undefined | void
export type MaybePromise<T> = T | Promise<T>

export type ListenerRole = 'mx' | 'submission'

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

/** What kind of failure a deferral or bounce was (core/delivery/classify.ts). */
export type BounceCategory = 'bad-mailbox' | 'mailbox-full' | 'policy' | 'dns' | 'tls' | 'auth' | 'throttled' | 'other'

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
}

/** What every hook receives besides its own data. */
export interface PluginContext<O> {
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
  deliver: { message: QueuedMessageInfo; domain: string; recipients: string[]; attempt: number }
}
export type HookName = keyof HookContexts

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
}
export type EventName = keyof EventContexts

/** What each hook call gets besides its stage's data and the plugin context. */
export interface HookCall {
  /**
   * Aborted when the call runs past config `hookTimeout` (the relay has then answered without
   * it): stop the work, e.g. end a worker thread or cancel a request, so it no longer costs CPU.
   */
  signal: AbortSignal
}

export type Hooks<O> = {
  [K in HookName]?: (ctx: HookContexts[K] & PluginContext<O> & HookCall) => MaybePromise<K extends 'deliver' ? HookResult | RouteDecision : HookResult>
} & {
  [K in EventName]?: (event: EventContexts[K], ctx: PluginContext<O>) => MaybePromise<void>
}

export interface SetupContext<O> extends PluginContext<O> {
  /** Where this relay keeps its data (config `dataDir`). */
  dataDir: string
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

export interface DoctorContext<O> extends PluginContext<O> {
  /** The sending domain being checked. */
  domain: string
}

/** A plugin: a plain object with a name and hook functions. */
export interface Plugin<O = any> {
  name: string
  /** A zod schema for the plugin's options; they are validated at start. */
  options?: ZodType<O>
  /** Runs once at start; may return a function that runs at shutdown. */
  setup?: (ctx: SetupContext<O>) => MaybePromise<void | (() => MaybePromise<void>)>
  hooks: Hooks<O>
  /** Checks this plugin adds to `relay doctor <domain>` (e.g. DKIM records against its keys). */
  doctor?: (ctx: DoctorContext<O>) => MaybePromise<DoctorCheck[]>
}
