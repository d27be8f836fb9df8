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
import { CORE_REPLIES, replyError, replyFor, type Reply } from '../hooks/verdict.js'
import { logRefusal, type Refusal } from '../events/log.js'
import type { HookName, ListenerRole, SessionInfo, Verdict } from '../hooks/types.js'
import { networkMatcher } from '../net/networks.js'
import { asciiDomainAddress, hasNonAscii, parseAddress } from '../mail/address.js'
import { isCorePolicy, type PolicyEnv } from '../policies/index.js'
import { PolicyStages } from './policy-stages.js'
import { patchSmtpServer } from './patches.js'
import { refuseUntrustedProxyHeaders } from './proxy.js'
import { mergeDuplicateRecipient } from './duplicate-recipients.js'
import { envelopeOf, SessionNotes, sessionInfo, toAddress, unmapIp, parameterRefusal, type AuthenticatedUser, type ListenerInfo } from './session.js'
import { createSmtpServer, listen, type Listener } from './server.js'
import { openConnections } from './server-internals.js'
import { SessionLimits, type SharedClientCounts } from './session-limits.js'
import { TlsCertificates, type ServedCertificate } from './tls-watch.js'
import { dropPostmasterTwin, qualifyPostmaster } from './postmaster.js'
import { receiveMessage } from './accept.js'
import { coreRule } from './core-rules.js'
import { injectMessage, type InjectOrigin } from './inject.js'
import type { InjectMessage } from '../hooks/operator.js'

/** What the relay remembers about one SMTP session. */
interface SessionState {
  /** Notes plugins share (session-long, and per transaction: renewed at each MAIL). */
  notes: SessionNotes
  /** The HELO name the helo hook last approved (the hook runs at the first MAIL after it). */
  heloChecked?: string
  authFailures: number
}

const smtpUtf8Declared = (mailFrom: SMTPServerAddress) => Boolean(mailFrom.args && 'SMTPUTF8' in mailFrom.args)

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
    for (const l of this.config.listen) {
      const listener: Listener = { host: l.host, port: l.port, role: l.role, tls: l.tls ?? (this.tls.files ? 'starttls' : 'none'), allowPlaintextAuth: l.allowPlaintextAuth, proxyProtocol: l.proxyProtocol ?? [] }
      const server = createSmtpServer(this.config, listener, this.log, this.resolver, listener.tls !== 'none' ? this.tls.files : undefined, {
        hasAuth: this.hooks.has('auth'),
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
      })
      await listen(server, listener, this.log)
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

  /**
   * The error that refuses a command, after the audit log line and telling observers and plugins
   * (`rejected`): `command` is the SMTP command refused, `stage` the hook stage or 'protocol' for the
   * core's own checks; `plugin` whose verdict it was (a `core:` name for the core's policies and
   * checks, which the event leaves out); `detail` goes to the log line only.
   */
  private refuse(session: SMTPServerSession, listener: Listener, command: Refusal['stage'], stage: HookName | 'protocol', reply: Reply, plugin?: string, address?: string, detail?: Record<string, unknown>): Error {
    const info = this.info(session, listener)
    const core = isCorePolicy(plugin)
    const rule = core ? plugin : plugin ? undefined : coreRule(reply)
    const sender = command === 'mail' || command === 'helo' ? address : session.envelope.mailFrom ? session.envelope.mailFrom.address : undefined
    const recipients = command === 'data' ? session.envelope.rcptTo.map((r) => r.address) : undefined
    logRefusal(this.log, {
      session: info, stage: command, hook: stage, code: reply.code, status: reply.status, text: reply.message, plugin: core ? undefined : plugin, rule,
      sender, recipient: command === 'rcpt' ? address : undefined, recipients, proto: session.transmissionType || undefined, detail,
    })
    if (this.hooks.has('rejected')) {
      void this.hooks.emit('rejected', { session: info, stage, code: reply.code, status: reply.status || undefined, message: reply.message, plugin: core ? undefined : plugin, address })
    }
    return replyError(reply)
  }

  /** What plugins see of the session (trusted: authenticated, or a client in smtp.trustedNetworks). */
  private info(session: SMTPServerSession, listener: Listener): SessionInfo {
    return sessionInfo(session, listener, this.trustedNetwork(unmapIp(session.remoteAddress)))
  }

  private state(session: SMTPServerSession): SessionState {
    let s = this.sessions.get(session)
    if (!s) this.sessions.set(session, (s = { authFailures: 0, notes: new SessionNotes() }))
    return s
  }

  /** AUTH is on offer only inside TLS (unless the listener opts in to plaintext AUTH). */
  private offerCommands(session: SMTPServerSession, listener: Listener, secure: boolean): void {
    const disabled: string[] = []
    if (!this.hooks.has('auth') || (!secure && !listener.allowPlaintextAuth)) disabled.push('AUTH')
    if (listener.tls !== 'starttls' || secure) disabled.push('STARTTLS')
    session.disabledCommands = disabled
  }

  /** Throws the refusal when the stage's deciding verdict is not an accept. */
  private async decide(stage: 'connect' | 'helo' | 'mail' | 'rcpt', run: Promise<Decision<HookName> | undefined>, session: SMTPServerSession, listener: Listener, address?: string): Promise<void> {
    const decision = await run
    if (decision && decision.verdict.action !== 'accept') throw this.refuse(session, listener, stage, stage, replyFor(stage, decision.verdict as Verdict), decision.plugin, address)
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
    // RFC 4616: an authorization identity that is not the user's own asks to act as someone else;
    // the relay has no proxy authorization, so that fails whatever the password.
    const { authzid = '', authcid = '' } = auth as { authzid?: string; authcid?: string }
    const actsAsOther = authzid !== '' && authcid !== '' && authzid.toLowerCase() !== authcid.toLowerCase()
    const decision = actsAsOther ? undefined : await this.policies.run('auth', { session: info, method: auth.method, username, password: auth.password ?? '', notes: state.notes })
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
    if (listener.role === 'submission' && !info.user) {
      // smtp-server asks for AUTH itself once it is offered; before TLS it is not, so say why.
      const reply = listener.tls === 'starttls' && !info.secure ? CORE_REPLIES.mustStartTls : CORE_REPLIES.authRequired
      throw this.refuse(session, listener, 'mail', 'mail', reply, undefined, address.address)
    }
    // AUTH= (RFC 4954 §5) only where AUTH is on offer.
    const badParameter = parameterRefusal('MAIL FROM', address, session)
    if (badParameter) throw this.refuse(session, listener, 'mail', 'protocol', badParameter, undefined, address.address)
    const helo = session.hostNameAppearsAs
    const state = this.state(session)
    state.notes.newTransaction()
    if (this.hooks.has('helo') && state.heloChecked !== helo) {
      await this.decide('helo', this.policies.run('helo', { session: info, helo, notes: state.notes }), session, listener, address.address)
      state.heloChecked = helo
    }
    if (address.address !== '' && !parseAddress(address.address)) throw this.refuse(session, listener, 'mail', 'protocol', CORE_REPLIES.badSenderSyntax, undefined, address.address)
    address.address = asciiDomainAddress(address.address)
    if (!smtpUtf8Declared(address) && hasNonAscii(address.address)) throw this.refuse(session, listener, 'mail', 'protocol', CORE_REPLIES.smtpUtf8Required, undefined, address.address)
    await this.decide('mail', this.policies.run('mail', { session: info, sender: toAddress(address), notes: state.notes }), session, listener, address.address)
  }

  private async onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, listener: Listener): Promise<void> {
    if (!qualifyPostmaster(address, this.config.localDomains)) throw this.refuse(session, listener, 'rcpt', 'rcpt', CORE_REPLIES.postmasterWithoutLocalDomain, undefined, address.address)
    const parsed = parseAddress(address.address)
    if (!parsed) throw this.refuse(session, listener, 'rcpt', 'protocol', CORE_REPLIES.badRecipientSyntax, undefined, address.address)
    address.address = asciiDomainAddress(address.address)
    const mailFrom = session.envelope.mailFrom
    if (mailFrom && !smtpUtf8Declared(mailFrom) && hasNonAscii(address.address)) throw this.refuse(session, listener, 'rcpt', 'protocol', CORE_REPLIES.smtpUtf8Required, undefined, address.address)
    const badParameter = parameterRefusal('RCPT TO', address, session)
    if (badParameter) throw this.refuse(session, listener, 'rcpt', 'protocol', badParameter, undefined, address.address)
    if (session.envelope.rcptTo.length >= this.config.smtp.maxRecipients) throw this.refuse(session, listener, 'rcpt', 'protocol', CORE_REPLIES.tooManyRecipients, undefined, address.address)
    const isLocal = this.local.has(parsed.domain)
    const data = { session: this.info(session, listener), envelope: envelopeOf(session), recipient: toAddress(address), domain: parsed.domain, isLocal, notes: this.state(session).notes }
    await this.decide('rcpt', this.policies.run('rcpt', data), session, listener, address.address)
    await this.decide('rcpt', this.policies.recipientPassed(data), session, listener, address.address)
    if (isLocal && parsed.local.toLowerCase() === 'postmaster') dropPostmasterTwin(session.envelope.rcptTo, address)
    mergeDuplicateRecipient(session.envelope.rcptTo, address)
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, listener: Listener): Promise<string> {
    const { config, log, spool, intake, policies, hooks } = this
    const refuse = (stage: HookName | 'protocol', reply: Reply, plugin?: string, detail?: Record<string, unknown>) => this.refuse(session, listener, 'data', stage, reply, plugin, undefined, detail)
    return receiveMessage({ config, log, spool, intake, policies, hooks }, stream, { session, info: this.info(session, listener), listener, notes: this.state(session).notes, refuse })
  }
}
