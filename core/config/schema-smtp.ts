// The `smtp` section of the config: limits and timeouts of the SMTP sessions (core/smtp).
import { z } from 'zod'
import { cidr, duration, size, timeout, timer } from './fields.js'
import { restartOnly } from './restart-only.js'

export const smtpSection = z
  .object({
    maxMessageSize: size.default(50 * 1024 * 1024).register(restartOnly),
    maxRecipients: z.number().int().positive().default(1000),
    /**
     * Mail loops (RFC 5321 §6.3): a message that arrives with more `Received:` fields than this is
     * refused at the end of DATA (`554 5.4.6 Too many hops`); one already queued bounces with 5.4.6.
     * Postfix's hopcount_limit.
     */
    maxHops: z.number().int().positive().default(50),
    /** Postfix's smtpd_forbid_bare_newline: 'reject' (550 5.6.0) or 'normalize' to CRLF. NUL bytes likewise: refused, or removed. */
    bareLineEndings: z.enum(['reject', 'normalize']).default('reject'),
    /**
     * Largest header section (all fields, before the blank line). A message with a bigger one is
     * refused with 552 5.3.4 at the end of DATA, before any plugin parses it. Postfix keeps 100 KB.
     */
    maxHeaderSize: size.default(1024 * 1024),
    /**
     * Header bytes beyond each message's first 64 KB that all sessions together may hold while
     * their header sections arrive (they are held in memory until parsed); a message that needs
     * more than is left gets 452 4.3.1 and the session goes on. Per process: with config
     * `workers` each SMTP worker has its own (docs/workers.md).
     */
    maxHeaderMemory: size.default(64 * 1024 * 1024),
    /** Most physical lines in the header section (continuation lines count); more: 552 5.3.4. */
    maxHeaderLines: z.number().int().positive().default(10_000),
    /**
     * Most physical lines of one header field (its first line and its continuations); more:
     * 552 5.3.4. Long folded fields are what makes header unfolding slow (mailauth's is quadratic).
     */
    maxHeaderFieldLines: z.number().int().positive().default(1_000),
    /**
     * Idle time allowed between commands: RFC 5321 §4.5.3.2.7's 5 minutes, as Postfix's smtpd_timeout.
     * It is also a deadline: a command must arrive whole this long after the relay's last reply, not
     * just one byte of it (Postfix's smtpd_per_record_deadline).
     */
    socketTimeout: timeout.default(300_000).register(restartOnly),
    /**
     * From the accepted connection (after any PROXY header) to the client's first command, greeting
     * delay not counted: a connection that never speaks holds a slot, so it gets `421 4.4.2` sooner
     * than `socketTimeout`. Real clients send EHLO within a second of the greeting.
     */
    firstCommandTimeout: timeout.default(30_000).register(restartOnly),
    /**
     * Under stress (a listener holding 80 % of `maxClients`, Postfix's stress mode), a client neither
     * in `trustedNetworks` nor authenticated gets this long instead of `socketTimeout`: idle, and to
     * send a whole command. A flood of slow or silent connections then frees its slots in seconds.
     * At `socketTimeout` or more: no stress mode.
     */
    stressTimeout: timer.default(10_000).register(restartOnly),
    /**
     * Message data must arrive at this many bytes a second at least (Postfix's smtpd_min_data_rate):
     * a client has `socketTimeout` (under stress `stressTimeout`) from the 354 reply, plus one second
     * per `minDataRate` bytes received, to send the message. 0: no rate (idle time only).
     */
    minDataRate: z.number().int().min(0).default(500).register(restartOnly),
    maxClients: z.number().int().positive().default(1000).register(restartOnly),
    /**
     * Simultaneous connections from one client address (after PROXY protocol), all listeners
     * together; more get `421 4.7.0 Too many connections from <ip>`. Postfix's
     * smtpd_client_connection_count_limit (50). Clients in `trustedNetworks` are exempt.
     */
    maxConnectionsPerClient: z.number().int().positive().default(50),
    /**
     * Failed implicit-TLS handshakes (bytes sent, no TLS session: garbage, or a handshake broken off
     * or timed out) from one client before its new connections are refused on arrival, before any
     * handshake (421 4.7.0 on a plain-text port, closed on a TLS one), until
     * `tlsHandshakeFailurePeriod` has passed since its last failure. 0: no limit. Per process;
     * clients in `trustedNetworks` are exempt; a connection that sends nothing does not count.
     */
    maxTlsHandshakeFailures: z.number().int().min(0).default(10),
    tlsHandshakeFailurePeriod: duration.default(600_000),
    /** Per-client counts group an IPv6 client by this prefix (its /64); IPv4 stays per address. Postfix's smtpd_client_ipv6_prefix_length. */
    clientIpv6Prefix: z.number().int().min(1).max(128).default(64),
    /** Look up the client's reverse DNS name (for Received headers and plugins). */
    reverseLookup: z.boolean().default(true).register(restartOnly),
    /** Pause before the greeting; a client that talks first is refused (early talker). */
    greetingDelay: timer.default(0).register(restartOnly),
    /** A session is closed (421) after this long, whatever it is doing. */
    sessionTimeout: timeout.default(1_800_000),
    /** Refused commands (4xx/5xx) in one session: the one that reaches it is answered 421 and the session closed. */
    maxErrors: z.number().int().positive().default(20).register(restartOnly),
    /** Commands a client may send on an AUTH-requiring listener before authenticating. */
    maxUnauthenticatedCommands: z.number().int().positive().default(10).register(restartOnly),
    /** A failed AUTH is answered after this delay, doubled for each further failure in the session (max 8×). */
    authFailureDelay: timer.default(1000),
    /** Take `%`, `!` or a quoted `@` in a local-domain recipient's local part (routing); off: 550 5.7.1. */
    allowRoutingInLocalPart: z.boolean().default(false),
    /**
     * Clients (IP addresses, CIDR blocks) the core trusts, as Postfix's mynetworks: exempt from the
     * per-client connection cap, and their unauthenticated mail gets the full DSN policy. Empty by
     * default: loopback is not trusted unless listed. (Who may relay is relay-acl's business.)
     */
    trustedNetworks: z.array(cidr).default([]),
  })
  .strict()
  .prefault({})
