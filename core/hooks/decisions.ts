// What a plugin's hooks decide: a verdict at each stage, or (a `deliver` hook) a route.

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
  /**
   * From a `data` hook that accepts: the plugin has taken the message itself (a feedback report
   * counted, a message handed to another system). The client gets 250 (with `message`), nothing is
   * queued, and later `data` and `queue` hooks do not run.
   */
  handled?: boolean
}

/**
 * Where and how a `deliver` hook sends these recipients. `kind` 'mx' (the default without `hosts` or `socketPath`):
 * the domain's MX hosts; 'smtp' the given `hosts` (a smarthost); 'lmtp' an LMTP server (`hosts` + `port`, or `socketPath`).
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
  /**
   * The route's name (unique among routes): in delivery events (`routeName`), log lines and metrics,
   * and the key of its `limits`. Required with `limits`.
   */
  name?: string
  /**
   * Sending caps for the route as a whole, whatever hosts it resolves to (a smarthost's quota):
   * attempts in flight, and attempts started per sliding second / minute. At a cap the attempt waits
   * (up to `delivery.throttle.hostWait`), then is deferred until a slot may be free; no failure,
   * no bounce. Shared by all nodes with `delivery.throttle.redis`.
   */
  limits?: { concurrency?: number; perSecond?: number; perMinute?: number }
}
export interface RouteDecision {
  action: 'route'
  route: Route
}
