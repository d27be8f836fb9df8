import { domainToASCII, domainToUnicode } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { inject, injectable } from 'tsyringe'
import type { SMTPServer, SMTPServerDataStream, SMTPServerSession, SMTPServerAddress, SMTPServerAuthentication } from 'smtp-server'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { Tokens } from '../tokens.js'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus, Decision } from '../hooks/bus.js'
import type { Queue } from '../queue/types.js'
import type { Spool } from '../queue/spool.js'
import type { QueueIntake } from '../queue/intake.js'
import { CORE_REPLIES, replyFor, type Reply } from '../hooks/verdict.js'
import type { HookName, ListenerRole, SessionInfo, Verdict } from '../hooks/types.js'
import { networkMatcher } from '../net/networks.js'
import { parseAddress } from '../mail/address.js'
import type { PolicyEnv } from '../policies/index.js'
import { PolicyStages } from './policy-stages.js'
import { patchSmtpServer } from './patches.js'
import { refuseUntrustedProxyHeaders } from './proxy.js'
import { mergeDuplicateRecipient } from './duplicate-recipients.js'
import { actsAsAnotherIdentity, disabledCommands, envelopeOf, SessionNotes, sessionInfo, toAddress, unmapIp, type AuthenticatedUser, type ListenerInfo, type SessionState } from './session.js'
import { mailFromAllowed, recipientChecked, senderSyntax, type EnvelopeRefusal } from './envelope-checks.js'
import { createSmtpServer, listen, type Listener } from './server.js'
import { openConnections } from './server-internals.js'
import { SessionLimits, type SharedClientCounts } from './session-limits.js'
import { TlsCertificates, type ServedCertificate } from './tls-watch.js'
import { dropPostmasterTwin } from './postmaster.js'
import { receiveMessage } from './accept.js'
import { refusal, refusedCommand, type RefusedCommand } from './refusal.js'
import { injectMessage, type InjectOrigin } from './inject.js'
import type { InjectMessage } from '../hooks/operator.js'

/** A user name's domain (if it has one) as written is its A-label or U-label form (case and NFC aside), not another spelling of it. */
function canonicalDomain(username: string): boolean {
  const at = username.lastIndexOf('@')
  if (at < 0) return true
  const domain = username.slice(at + 1).toLowerCase().normalize('NFC')
  const ascii = domainToASCII(domain)
  return !ascii || domain === ascii || domain === domainToUnicode(ascii)
}

/** Format and control characters, and the default-ignorable code points IDNA maps to nothing. */
const INVISIBLE = /[\p{Cc}\p{Cf}\u034F\u115F\u1160\u17B4\u17B5\u180B-\u180F\u3164\uFE00-\uFE0F\uFFA0\u{E0100}-\u{E01EF}]/u

/** The SMTP side: one smtp-server per configured listener, each command mapped to a hook. */
@injectable()
export class SmtpListeners {
  private servers: { server: SMTPServer; listener: Listener }[] = []
  private readonly sessions = new WeakMap<SMTPServerSession, SessionState>()
  private local: Set<string>
  /** Is this client address in `smtp.trustedNetworks`? */
  private trustedNetwork: (ip: string) => boolean
  private readonly tls: TlsCertificates
  private readonly limits: SessionLimits
  /** Connections accepted since start, per listener role (metrics). */
  private readonly connections: Record<ListenerRole, number> = { mx: 0, submission: 0 }
  /** Hook stages with the core's own policies (core/policies) around the config's plugins. */
  private readonly policies: PolicyStages

  constructor(
    @inject(Tokens.Config) private config: RelayConfig,
    @inject(Tokens.Logger) private readonly log: Logger,
    @inject(Tokens.Resolver) private readonly resolver: Resolver,
    @inject(Tokens.Hooks) private readonly hooks: HookBus,
    @inject(Tokens.Queue) queue: Queue,
    @inject(Tokens.Spool) private readonly spool: Spool,
    @inject(Tokens.Intake) private readonly intake: QueueIntake,
  ) {
    patchSmtpServer()
    refuseUntrustedProxyHeaders()
    this.local = new Set(config.localDomains)
    this.trustedNetwork = networkMatcher(config.smtp.trustedNetworks)
    this.limits = new SessionLimits(log)
    this.tls = new TlsCertificates(config.tls, log, (files) => {
      // smtp-server upgrades sockets itself (STARTTLS and implicit) from these contexts.
      for (const { server, listener } of this.servers) if (listener.tls !== 'none') server.updateSecureContext({ key: files.key, cert: files.cert, sniOptions: files.sniOptions })
    })
    // The one place the core's policies are wired in (see core/smtp/policy-stages.ts).
    const emit: PolicyEnv['emit'] = (event, data) => void (this.hooks.has(event) && this.hooks.emit(event, data))
    const isLocalDomain = (d: string) => this.local.has(d.toLowerCase())
    const ctx = { log, resolver, hostname: config.hostname, configDir: config.configDir, isLocalDomain }
    this.policies = new PolicyStages({ config: () => this.config, queue, log, emit }, hooks, ctx, config.hookTimeout)
  }

  /** Starts every listener; resolves with the bound addresses once all accept connections. */
  async start(): Promise<ListenerInfo[]> {
    this.tls.start()
    const bound: ListenerInfo[] = []
    for (const [i, l] of this.config.listen.entries()) {
      const listener: Listener = { host: l.host, port: l.port, role: l.role, tls: l.tls ?? (this.tls.files ? 'starttls' : 'none'), allowPlaintextAuth: l.allowPlaintextAuth, auth: l.auth, proxyProtocol: l.proxyProtocol ?? [] }
      const server = createSmtpServer(this.config, listener, this.log, this.resolver, listener.tls !== 'none' ? this.tls.files : undefined, {
        processes: this.limits.shared?.processes,
        hasAuth: this.hooks.has('auth') && listener.auth,
        clients: this.limits.clients(() => this.config, (ip) => this.trustedNetwork(ip), `listen[${i}]`),
        onConnect: (session, cb) => void this.onConnect(session, listener).then(() => cb(), cb),
        onSecure: (_socket, session, cb) => {
          this.offerCommands(session, listener, true)
          cb()
        },
        onAuth: (auth, session, cb) => void this.onAuth(auth, session, listener).then((user) => cb(null, { user: user as never }), (err: Error) => cb(err)),
        onMailFrom: (address, session, cb) => void this.onMailFrom(address, session, listener).then(() => cb(), cb),
        onRcptTo: (address, session, cb) => void this.onRcptTo(address, session, listener).then(() => cb(), cb),
        onData: (stream, session, cb) => void this.onData(stream, session, listener).then((reply) => cb(null, reply), (err: Error) => cb(err)),
        onClose: (session) => this.onClose(session, listener),
        onRefused: (session, command, reply) => void refusedCommand(this.log, this.hooks, session, this.info(session, listener), command, reply),
      })
      await listen(server, listener, this.log, `listen[${i}]`)
      this.servers.push({ server, listener })
      bound.push({ host: listener.host, port: listener.port, role: listener.role })
    }
    return bound
  }

  /** Stops accepting; open sessions may finish until the timeout, then they are closed. */
  async stop(): Promise<void> {
    this.tls.stop()
    await Promise.all(this.servers.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve()))))
    this.servers = []
  }

  /** A message handed over without SMTP (sendmail's maildrop, the inject API): the same acceptance as DATA. */
  inject(message: InjectMessage, origin?: InjectOrigin): Promise<{ queueId: string }> {
    const { config, log, spool, intake, policies, hooks } = this
    return injectMessage({ config, log, spool, intake, policies, hooks }, message, origin)
  }

  /** Re-reads the certificate files for new connections; a file that cannot be read keeps the old ones. */
  reloadTls(): boolean {
    return this.tls.reload()
  }

  /** In an SMTP worker process: per-client connection counts for the whole relay (core/workers). */
  shareClientCounts(counts: SharedClientCounts): void {
    this.limits.shared = counts
  }

  /** The certificates served now (file, subject, expiry), for metrics. */
  tlsCertificates(): ServedCertificate[] {
    return this.tls.served()
  }

  /**
   * Hot reload hands over a new config generation (never changed afterwards): everything taken
   * from the old one (local domains, trusted networks, watched certificate files) is replaced.
   */
  applyConfig(next: RelayConfig): void {
    this.config = next
    this.local = new Set(next.localDomains)
    this.trustedNetwork = networkMatcher(next.smtp.trustedNetworks)
    this.tls.apply(next.tls, this.servers.length > 0)
  }

  /** Connections accepted since start and sessions open now, per listener role (read by metrics). */
  sessionCounts(): { connections: Record<ListenerRole, number>; active: Record<ListenerRole, number> } {
    const active: Record<ListenerRole, number> = { mx: 0, submission: 0 }
    for (const { server, listener } of this.servers) active[listener.role] += openConnections(server)
    return { connections: { ...this.connections }, active }
  }

  /** The error that refuses a command, after its log line and `rejected` event (core/smtp/refusal.ts). */
  private refuse(session: SMTPServerSession, listener: Listener, command: RefusedCommand['command'], stage: HookName | 'protocol', reply: Reply, plugin?: string, address?: string, detail?: Record<string, unknown>): Error {
    return refusal(this.log, this.hooks, session, this.info(session, listener), { command, stage, reply, plugin, address, detail })
  }

  /** What plugins see of the session (trusted: authenticated, or a client in smtp.trustedNetworks). */
  private info(session: SMTPServerSession, listener: Listener): SessionInfo {
    return sessionInfo(session, listener, this.trustedNetwork(unmapIp(session.remoteAddress)))
  }

  private state(session: SMTPServerSession): SessionState {
    if (!this.sessions.has(session)) this.sessions.set(session, { authFailures: 0, notes: new SessionNotes() })
    return this.sessions.get(session)!
  }

  /** AUTH is on offer only inside TLS (unless the listener opts in to plaintext AUTH). */
  private offerCommands(session: SMTPServerSession, listener: Listener, secure: boolean): void {
    session.disabledCommands = disabledCommands(this.hooks.has('auth') && listener.auth, listener, secure)
  }

  /** Throws the refusal when the stage's deciding verdict is not an accept. */
  private async decide(stage: 'connect' | 'helo' | 'mail' | 'rcpt', run: Promise<Decision<HookName> | undefined>, session: SMTPServerSession, listener: Listener, address?: string): Promise<void> {
    const decision = await run
    if (decision && decision.verdict.action !== 'accept') throw this.refuse(session, listener, stage, stage, replyFor(stage, decision.verdict as Verdict), decision.plugin, address)
  }

  /** The refusal of a core check (core/smtp/envelope-checks.ts). */
  private envelopeRefusal(r: EnvelopeRefusal, session: SMTPServerSession, listener: Listener, stage: 'mail' | 'rcpt', address: string): Error {
    return this.refuse(session, listener, stage, r.kind === 'stage' ? stage : 'protocol', r.reply, undefined, address)
  }

  private async onConnect(session: SMTPServerSession, listener: Listener): Promise<void> {
    this.offerCommands(session, listener, listener.tls === 'implicit')
    this.connections[listener.role]++
    const { smtp, hostname } = this.config
    const ip = unmapIp(session.remoteAddress)
    // Trusted networks are not counted against smtp.maxConnectionsPerClient.
    const refused = this.trustedNetwork(ip) ? undefined : await this.limits.admit(session, ip, smtp.maxConnectionsPerClient, hostname, smtp.clientIpv6Prefix)
    if (refused) throw this.refuse(session, listener, 'connect', 'protocol', refused, 'core:max-connections-per-client')
    await this.decide('connect', this.policies.run('connect', { session: this.info(session, listener), notes: this.state(session).notes }), session, listener)
    this.limits.limitTime(session, smtp.sessionTimeout, () => this.servers.map((s) => s.server), hostname)
  }

  private onClose(session: SMTPServerSession, listener: Listener): void {
    this.limits.release(session)
    if (this.hooks.has('sessionClosed')) void this.hooks.emit('sessionClosed', { session: this.info(session, listener) })
  }

  private async onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, listener: Listener): Promise<AuthenticatedUser> {
    const username = auth.username ?? ''
    const info = this.info(session, listener)
    const state = this.state(session)
    const actsAsOther = actsAsAnotherIdentity(auth)
    // A user name with characters nobody sees (U+200B, a soft hyphen: IDNA drops them), or a domain
    // in another spelling IDNA maps to the same name (fullwidth letters, U+3002 for the dot), may
    // match alice@example.com at a backend: it would log in under a spelling a log search misses.
    const decision = actsAsOther || INVISIBLE.test(username) || !canonicalDomain(username) ? undefined : await this.policies.run('auth', { session: info, method: auth.method, username, password: auth.password ?? '', notes: state.notes })
    if (decision?.verdict.action === 'accept') {
      const senders = decision.verdict.senders ?? (parseAddress(username) ? [username] : [])
      this.log.info({ session: session.id, user: username, method: auth.method, by: decision.plugin }, 'authenticated')
      return { username, senders }
    }
    state.authFailures++
    void this.hooks.emit('authFailed', { session: info, username, method: auth.method, temporary: decision?.verdict.action === 'tempfail' })
    // A growing pause makes guessing passwords slow, also within one connection.
    await sleep(this.config.smtp.authFailureDelay * Math.min(8, 2 ** (state.authFailures - 1)))
    // The refusal line is the audit line of the failure: it names the user tried and the method.
    const reply = actsAsOther ? CORE_REPLIES.foreignAuthorizationIdentity : replyFor('auth', decision?.verdict ?? { action: 'reject' })
    const by = actsAsOther ? undefined : (decision?.plugin ?? 'core:auth-default-deny')
    throw this.refuse(session, listener, 'auth', 'auth', reply, by, undefined, { user: username, method: auth.method, failures: state.authFailures })
  }

  private async onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, listener: Listener): Promise<void> {
    const info = this.info(session, listener)
    const early = mailFromAllowed(address, session, listener, info)
    if (early) throw this.envelopeRefusal(early, session, listener, 'mail', address.address)
    const helo = session.hostNameAppearsAs
    const state = this.state(session)
    state.notes.newTransaction()
    if (this.hooks.has('helo') && state.heloChecked !== helo) {
      await this.decide('helo', this.policies.run('helo', { session: info, helo, notes: state.notes }), session, listener, address.address)
      state.heloChecked = helo
    }
    const bad = senderSyntax(address)
    if (bad) throw this.envelopeRefusal(bad, session, listener, 'mail', address.address)
    await this.decide('mail', this.policies.run('mail', { session: info, sender: toAddress(address), notes: state.notes }), session, listener, address.address)
  }

  private async onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, listener: Listener): Promise<void> {
    const parsed = recipientChecked(address, session, this.config, this.config.smtp.maxRecipients)
    if ('reply' in parsed) throw this.envelopeRefusal(parsed, session, listener, 'rcpt', address.address)
    // The relay's postmaster is its own, as a local domain's mailboxes are (RFC 5321 §4.5.1).
    const isLocal = parsed.postmaster || this.local.has(parsed.domain)
    const data = { session: this.info(session, listener), envelope: envelopeOf(session), recipient: toAddress(address), domain: parsed.domain, isLocal, notes: this.state(session).notes }
    await this.decide('rcpt', this.policies.run('rcpt', data), session, listener, address.address)
    await this.decide('rcpt', this.policies.recipientPassed(data), session, listener, address.address)
    if (parsed.postmaster || (isLocal && parsed.local.toLowerCase() === 'postmaster')) dropPostmasterTwin(session.envelope.rcptTo, address)
    mergeDuplicateRecipient(session.envelope.rcptTo, address)
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, listener: Listener): Promise<string> {
    const { config, log, spool, intake, policies, hooks } = this
    const refuse = (stage: HookName | 'protocol', reply: Reply, plugin?: string, detail?: Record<string, unknown>) => this.refuse(session, listener, 'data', stage, reply, plugin, undefined, detail)
    return receiveMessage({ config, log, spool, intake, policies, hooks }, stream, { session, info: this.info(session, listener), listener, notes: this.state(session).notes, refuse })
  }
}
