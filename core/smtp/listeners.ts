import fs from 'node:fs'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { inject, injectable } from 'tsyringe'
import { SMTPServer, type SMTPServerSession, type SMTPServerDataStream, type SMTPServerAddress, type SMTPServerAuthentication } from 'smtp-server'
import type { Logger } from 'pino'
import type { Resolver } from 'node:dns/promises'
import { Tokens } from '../tokens.js'
import type { RelayConfig } from '../config/schema.js'
import type { HookBus } from '../hooks/bus.js'
import type { NewMessage, Queue } from '../queue/types.js'
import type { Spool } from '../queue/spool.js'
import { newQueueId } from '../queue/id.js'
import { replyError, replyFor, type Reply } from '../hooks/verdict.js'
import type { HookName, ListenerRole, SessionInfo, Verdict } from '../hooks/types.js'
import { networkMatcher } from '../net/networks.js'
import { patchSmtpServer } from './patches.js'
import { acceptProxyProtocol, refuseUntrustedProxyHeaders } from './proxy.js'
import { envelopeOf, sessionInfo, toAddress, unmapIp, type AuthenticatedUser, type ListenerInfo } from './session.js'
import { acceptedFields } from '../events/log.js'
import { hasRoutingInLocalPart, parseAddress } from '../mail/address.js'
import { BareLineEndingError, HeaderTooLargeError, NulByteError, readMessage } from './data.js'
import { hopCount, receivedHeader, rfc5322Date } from './received.js'
import { foreignHeaderSenders, senderAllowed } from './identity.js'
import { readTlsFiles, tlsFilePaths, type TlsFiles } from './tls.js'
import { convertReceivedTo7bit } from './seven-bit.js'
import type { QueueIntake } from '../queue/intake.js'
import { FeedbackIntake } from '../reputation/intake.js'

const fixed = (code: number, status: string, message: string): Reply => ({ code, status, message })

/** What the relay remembers about one SMTP session. */
interface SessionState {
  /** Notes plugins share (session-long, and per transaction: renewed at each MAIL). */
  notes: { session: Map<string, unknown>; message: Map<string, unknown> }
  /** The HELO name the helo hook last approved (the hook runs at the first MAIL after it). */
  heloChecked?: string
  authFailures: number
  timer?: NodeJS.Timeout
  /** The client address this session counts against in `smtp.maxConnectionsPerClient`. */
  countedAs?: string
}

interface Listener extends ListenerInfo {
  tls: 'starttls' | 'implicit' | 'none'
  allowPlaintextAuth: boolean
  /** Trusted PROXY protocol senders (IPs, CIDR blocks); empty: none. */
  proxyProtocol: string[]
}

/** The SMTP side: one smtp-server per configured listener, each command mapped to a hook. */
@injectable()
export class SmtpListeners {
  private servers: { server: SMTPServer; listener: Listener }[] = []
  private readonly sessions = new WeakMap<SMTPServerSession, SessionState>()
  private readonly local: Set<string>
  /** Is this client address in `smtp.trustedNetworks`? */
  private trustedNetwork: (ip: string) => boolean
  /** Feedback-loop reports (ARF) to config `reputation.feedbackAddresses`: counted, not queued. */
  readonly feedback: FeedbackIntake
  private tlsFiles: TlsFiles | undefined
  private watchers: fs.FSWatcher[] = []
  /** Connections accepted since start, per listener role (metrics). */
  private readonly connections: Record<ListenerRole, number> = { mx: 0, submission: 0 }
  /** Open sessions per client address (all listeners), for `smtp.maxConnectionsPerClient`. */
  private readonly perClient = new Map<string, number>()

  constructor(
    @inject(Tokens.Config) private readonly config: RelayConfig,
    @inject(Tokens.Logger) private readonly log: Logger,
    @inject(Tokens.Resolver) private readonly resolver: Resolver,
    @inject(Tokens.Hooks) private readonly hooks: HookBus,
    @inject(Tokens.Queue) private readonly queue: Queue,
    @inject(Tokens.Spool) private readonly spool: Spool,
    @inject(Tokens.Intake) private readonly intake: QueueIntake,
  ) {
    patchSmtpServer()
    refuseUntrustedProxyHeaders()
    this.local = new Set(config.localDomains)
    this.trustedNetwork = networkMatcher(config.smtp.trustedNetworks)
    this.feedback = new FeedbackIntake(queue, config, log)
  }

  /** Starts every listener; resolves with the bound addresses once all accept connections. */
  async start(): Promise<ListenerInfo[]> {
    if (this.config.tls) {
      this.tlsFiles = readTlsFiles(this.config.tls)
      this.watchTlsFiles()
    }
    const bound: ListenerInfo[] = []
    for (const l of this.config.listen) {
      const listener: Listener = { host: l.host, port: l.port, role: l.role, tls: l.tls ?? (this.tlsFiles ? 'starttls' : 'none'), allowPlaintextAuth: l.allowPlaintextAuth, proxyProtocol: l.proxyProtocol ?? [] }
      const server = this.createServer(listener)
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(l.port, l.host, () => {
          server.off('error', reject)
          resolve()
        })
      })
      // Client-side failures (a TLS handshake a client broke off, a reset) come here too: one
      // short line each; anything else is a server problem.
      server.on('error', (err: Error & { meta?: { stage?: string; remoteAddress?: string } }) =>
        err.meta?.remoteAddress
          ? this.log.info({ client: err.meta.remoteAddress, stage: err.meta.stage, error: err.message.trim() }, 'client connection failed')
          : this.log.error({ err, listener: { host: listener.host, port: listener.port } }, 'listener error'),
      )
      const address = server.server.address()
      if (address && typeof address === 'object') listener.port = address.port
      this.servers.push({ server, listener })
      bound.push({ host: listener.host, port: listener.port, role: listener.role })
      this.log.info({ host: listener.host, port: listener.port, role: listener.role, tls: listener.tls }, `listening on ${listener.host}:${listener.port} (${listener.role})`)
    }
    return bound
  }

  /** Stops accepting; open sessions may finish until the timeout, then they are closed. */
  async stop(): Promise<void> {
    for (const w of this.watchers) w.close()
    await Promise.all(this.servers.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve()))))
    this.servers = []
  }

  /**
   * Reads the certificate files again and gives new connections the new ones; open sessions keep
   * theirs. A file that cannot be read keeps the old certificate in use (and says so in the log).
   */
  reloadTls(): boolean {
    if (!this.config.tls) return false
    let files: TlsFiles
    try {
      files = readTlsFiles(this.config.tls)
    } catch (err) {
      this.log.error({ err }, 'TLS certificate reload failed; the previous certificate stays in use')
      return false
    }
    this.tlsFiles = files
    for (const { server, listener } of this.servers) {
      if (listener.tls === 'none') continue
      // smtp-server upgrades sockets itself (STARTTLS and implicit) from these contexts.
      server.updateSecureContext({ key: files.key, cert: files.cert, sniOptions: files.sniOptions })
    }
    this.log.info('TLS certificates reloaded')
    return true
  }

  /**
   * Hot reload (core/reload.ts) changed the shared config in place: refresh what was taken from it
   * at start (the local domains, the watched certificate files) and re-read the certificates.
   */
  applyConfig(): void {
    this.local.clear()
    for (const d of this.config.localDomains) this.local.add(d)
    this.trustedNetwork = networkMatcher(this.config.smtp.trustedNetworks)
    if (!this.config.tls || !this.servers.length) return
    for (const w of this.watchers) w.close()
    this.watchers = []
    this.watchTlsFiles()
    this.reloadTls()
  }

  private watchTlsFiles(): void {
    let timer: NodeJS.Timeout | undefined
    for (const file of tlsFilePaths(this.config.tls!)) {
      try {
        const w = fs.watch(file, () => {
          clearTimeout(timer)
          timer = setTimeout(() => this.reloadTls(), 200)
        })
        w.unref()
        this.watchers.push(w)
      } catch {
        // not watchable (e.g. some network filesystems): SIGHUP still reloads
      }
    }
  }

  /** Connections accepted since start and sessions open now, per listener role (read by metrics). */
  sessionCounts(): { connections: Record<ListenerRole, number>; active: Record<ListenerRole, number> } {
    const active: Record<ListenerRole, number> = { mx: 0, submission: 0 }
    for (const { server, listener } of this.servers) active[listener.role] += (server as unknown as { connections: Set<unknown> }).connections.size
    return { connections: { ...this.connections }, active }
  }

  /**
   * The error that refuses a command, after telling observers and plugins (`rejected`): `stage` is
   * the hook stage or 'protocol' for the core's own checks; `plugin` whose verdict it was.
   */
  private refuse(session: SMTPServerSession, listener: Listener, stage: HookName | 'protocol', reply: Reply, plugin?: string, address?: string): Error {
    if (this.hooks.has('rejected')) {
      void this.hooks.emit('rejected', { session: this.info(session, listener), stage, code: reply.code, status: reply.status || undefined, message: reply.message, plugin, address })
    }
    return replyError(reply)
  }

  /** What plugins see of the session (trusted: authenticated, or a client in smtp.trustedNetworks). */
  private info(session: SMTPServerSession, listener: Listener): SessionInfo {
    return sessionInfo(session, listener, this.trustedNetwork(unmapIp(session.remoteAddress)))
  }

  private state(session: SMTPServerSession): SessionState {
    let s = this.sessions.get(session)
    if (!s) this.sessions.set(session, (s = { authFailures: 0, notes: { session: new Map(), message: new Map() } }))
    return s
  }

  private createServer(listener: Listener): SMTPServer {
    const c = this.config
    const hasAuth = this.hooks.has('auth')
    const resolver = this.resolver
    const tls = listener.tls !== 'none' ? this.tlsFiles : undefined
    const server = new SMTPServer({
      name: c.hostname,
      banner: 'Relay',
      secure: listener.tls === 'implicit',
      ...(tls ? { key: tls.key, cert: tls.cert, sniOptions: tls.sniOptions, minVersion: tls.minVersion } : {}),
      hideSTARTTLS: listener.tls !== 'starttls',
      size: c.smtp.maxMessageSize,
      maxClients: c.smtp.maxClients,
      socketTimeout: c.smtp.socketTimeout,
      closeTimeout: c.shutdownTimeout,
      hideENHANCEDSTATUSCODES: false,
      hide8BITMIME: false,
      hidePIPELINING: false,
      hideSMTPUTF8: false,
      // RFC 3461: NOTIFY, RET, ENVID, ORCPT are parsed and validated by smtp-server, kept in the
      // envelope args, honoured in bounces and passed on to a next hop that offers DSN.
      hideDSN: false,
      hideREQUIRETLS: true,
      authMethods: ['PLAIN', 'LOGIN'],
      allowInsecureAuth: listener.allowPlaintextAuth,
      // Submission needs AUTH before MAIL; smtp-server enforces it once AUTH is on offer (in TLS).
      authOptional: !(hasAuth && listener.role === 'submission'),
      authRequiredMessage: '5.7.0 Authentication required',
      maxAllowedUnauthenticatedCommands: c.smtp.maxUnauthenticatedCommands,
      // Every 4xx/5xx reply counts (core/smtp/patches.ts); the one that reaches the limit is a 421.
      maxErrors: c.smtp.maxErrors,
      onTooManyErrors: (session: SMTPServerSession) => this.log.warn({ session: session.id, client: session.remoteAddress }, 'too many errors: closing the session'),
      firstCommandTimeout: c.smtp.firstCommandTimeout,
      onFirstCommandTimeout: (session: SMTPServerSession) => this.log.info({ session: session.id, client: session.remoteAddress }, 'no command before the first-command timeout: closing'),
      onProxyHeaderRefused: (client: string) => this.log.warn({ client, listener: { host: listener.host, port: listener.port } }, `PROXY header from ${client} refused: not a trusted proxy`),
      disableReverseLookup: !c.smtp.reverseLookup,
      resolver: { reverse: (ip: string, cb: (err: Error | null, names?: string[]) => void) => void resolver.reverse(ip).then((n) => cb(null, n), (e: Error) => cb(e)) },
      logger: false,
      greetingDelay: c.smtp.greetingDelay,
      onConnect: (session, cb) => void this.onConnect(session, listener).then(() => cb(), cb),
      onSecure: (_socket, session, cb) => {
        this.offerCommands(session, listener, true)
        cb()
      },
      onAuth: (auth, session, cb) =>
        void this.onAuth(auth, session, listener).then((user) => cb(null, { user: user as never }), (err: Error) => cb(err)),
      onMailFrom: (address, session, cb) => void this.onMailFrom(address, session, listener).then(() => cb(), cb),
      onRcptTo: (address, session, cb) => void this.onRcptTo(address, session, listener).then(() => cb(), cb),
      onData: (stream, session, cb) =>
        void this.onData(stream, session, listener).then((message) => cb(null, message), (err: Error) => cb(err)),
      onClose: (session) => this.onClose(session, listener),
    } as ConstructorParameters<typeof SMTPServer>[0])
    if (listener.proxyProtocol.length) {
      // Header before greeting (and before TLS on 465); its wait is capped at 10 s.
      const timeoutMs = Math.min(10_000, c.smtp.socketTimeout)
      acceptProxyProtocol(server, { trusted: listener.proxyProtocol, timeoutMs, hostname: c.hostname, implicitTls: listener.tls === 'implicit', log: this.log })
    }
    return server
  }

  /** AUTH is on offer only inside TLS (unless the listener opts in to plaintext AUTH). */
  private offerCommands(session: SMTPServerSession, listener: Listener, secure: boolean): void {
    const disabled: string[] = []
    if (!this.hooks.has('auth') || (!secure && !listener.allowPlaintextAuth)) disabled.push('AUTH')
    if (listener.tls !== 'starttls' || secure) disabled.push('STARTTLS')
    session.disabledCommands = disabled
  }

  private async decide(
    stage: 'connect' | 'helo' | 'mail' | 'rcpt',
    run: Promise<{ plugin: string; verdict: { action: string } } | undefined>,
    session: SMTPServerSession,
    listener: Listener,
    address?: string,
  ): Promise<boolean> {
    const decision = await run
    if (!decision) return false
    const verdict = decision.verdict as Verdict
    if (verdict.action === 'accept') return true
    throw this.refuse(session, listener, stage, replyFor(stage, verdict), decision.plugin, address)
  }

  private async onConnect(session: SMTPServerSession, listener: Listener): Promise<void> {
    this.offerCommands(session, listener, listener.tls === 'implicit')
    this.connections[listener.role]++
    const state = this.state(session)
    this.countClient(session, listener, state)
    await this.decide('connect', this.hooks.run('connect', { session: this.info(session, listener), notes: state.notes }), session, listener)
    state.timer = setTimeout(() => this.expire(session), this.config.smtp.sessionTimeout)
    state.timer.unref()
  }

  /** Ends a session that has lasted `smtp.sessionTimeout` (a client that never finishes). */
  private expire(session: SMTPServerSession): void {
    for (const { server } of this.servers) {
      for (const conn of (server as unknown as { connections: Set<{ session?: SMTPServerSession; send(c: number, m: string): void }> }).connections) {
        if (conn.session !== session) continue
        this.log.info({ session: session.id, client: session.remoteAddress }, 'session time limit reached: closing')
        conn.send(421, `4.4.2 ${this.config.hostname} Session time limit exceeded, closing connection`)
      }
    }
  }

  /**
   * Counts the session against its client address, or refuses it (421 4.7.0) when that address
   * already has `smtp.maxConnectionsPerClient` open sessions. Trusted networks are not counted.
   */
  private countClient(session: SMTPServerSession, listener: Listener, state: SessionState): void {
    const ip = unmapIp(session.remoteAddress)
    if (this.trustedNetwork(ip)) return
    const open = this.perClient.get(ip) ?? 0
    if (open >= this.config.smtp.maxConnectionsPerClient) {
      this.log.warn({ session: session.id, client: ip, open, limit: this.config.smtp.maxConnectionsPerClient }, 'too many connections from one client: refused')
      throw this.refuse(session, listener, 'protocol', fixed(421, '4.7.0', `${this.config.hostname} Too many connections from ${ip}, try again later`))
    }
    this.perClient.set(ip, open + 1)
    state.countedAs = ip
  }

  private onClose(session: SMTPServerSession, listener: Listener): void {
    const state = this.sessions.get(session)
    clearTimeout(state?.timer)
    if (state?.countedAs) {
      const open = (this.perClient.get(state.countedAs) ?? 1) - 1
      if (open > 0) this.perClient.set(state.countedAs, open)
      else this.perClient.delete(state.countedAs)
      state.countedAs = undefined
    }
    if (this.hooks.has('sessionClosed')) void this.hooks.emit('sessionClosed', { session: this.info(session, listener) })
  }

  private async onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, listener: Listener): Promise<AuthenticatedUser> {
    const username = auth.username ?? ''
    const info = this.info(session, listener)
    const decision = await this.hooks.run('auth', { session: info, method: auth.method, username, password: auth.password ?? '', notes: this.state(session).notes })
    if (decision?.verdict.action === 'accept') {
      const verdict = decision.verdict as Verdict
      const senders = verdict.senders ?? (parseAddress(username) ? [username] : [])
      this.log.info({ session: session.id, user: username, method: auth.method, by: decision.plugin }, 'authenticated')
      return { username, senders }
    }
    const state = this.state(session)
    state.authFailures++
    this.log.warn({ session: session.id, user: username, client: info.remoteAddress, by: decision?.plugin }, 'authentication failed')
    void this.hooks.emit('authFailed', { session: info, username, method: auth.method, temporary: decision?.verdict.action === 'tempfail' })
    // A growing pause makes guessing passwords slow, also within one connection.
    await sleep(this.config.smtp.authFailureDelay * Math.min(8, 2 ** (state.authFailures - 1)))
    throw this.refuse(session, listener, 'auth', replyFor('auth', (decision?.verdict as Verdict | undefined) ?? { action: 'reject' }), decision?.plugin)
  }

  private async onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, listener: Listener): Promise<void> {
    const info = this.info(session, listener)
    if (listener.role === 'submission' && !info.user) {
      // smtp-server asks for AUTH itself once it is offered; before TLS it is not, so say why.
      throw this.refuse(
        session,
        listener,
        'mail',
        listener.tls === 'starttls' && !info.secure
          ? fixed(530, '5.7.0', 'Must issue a STARTTLS command first, then authenticate')
          : fixed(530, '5.7.0', 'Authentication required'),
        undefined,
        address.address,
      )
    }
    const helo = session.hostNameAppearsAs
    const state = this.state(session)
    state.notes.message = new Map() // a new transaction
    if (this.hooks.has('helo') && state.heloChecked !== helo) {
      await this.decide('helo', this.hooks.run('helo', { session: info, helo, notes: state.notes }), session, listener, address.address)
      state.heloChecked = helo
    }
    if (address.address !== '' && !parseAddress(address.address)) {
      throw this.refuse(session, listener, 'protocol', fixed(553, '5.1.7', 'Bad sender address syntax'), undefined, address.address)
    }
    // An authenticated user sends only as what its backend lists for it.
    if (info.user && address.address !== '' && !senderAllowed(address.address, info.senders ?? [])) {
      this.log.warn({ session: session.id, user: info.user, sender: address.address }, 'sender refused: not owned by the authenticated user')
      throw this.refuse(session, listener, 'mail', fixed(553, '5.7.1', `Sender address <${address.address}> not owned by user ${info.user}`), undefined, address.address)
    }
    await this.decide('mail', this.hooks.run('mail', { session: info, sender: toAddress(address), notes: state.notes }), session, listener, address.address)
  }

  private async onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, listener: Listener): Promise<void> {
    // RFC 5321 §4.1.1.3: `RCPT TO:<postmaster>` must be accepted; it is the first local domain's.
    if (address.address.toLowerCase() === 'postmaster') {
      const domain = this.config.localDomains[0]
      if (!domain) throw this.refuse(session, listener, 'rcpt', fixed(550, '5.1.1', '<postmaster>: this relay has no local domain; give the full address'), undefined, address.address)
      address.address = `postmaster@${domain}`
    }
    const parsed = parseAddress(address.address)
    if (!parsed) throw this.refuse(session, listener, 'protocol', fixed(553, '5.1.3', 'Bad recipient address syntax'), undefined, address.address)
    if (session.envelope.rcptTo.length >= this.config.smtp.maxRecipients) throw this.refuse(session, listener, 'protocol', fixed(452, '4.5.3', 'Too many recipients'), undefined, address.address)
    const isLocal = this.local.has(parsed.domain)
    // `user%other@local`, `other!user@local`, `"user@other"@local`: mail stores may route these on.
    if (isLocal && !this.config.smtp.allowRoutingInLocalPart && hasRoutingInLocalPart(parsed.local)) {
      throw this.refuse(session, listener, 'rcpt', fixed(550, '5.7.1', `Routing in the local part is not allowed: <${address.address}>`), undefined, address.address)
    }
    const accepted = await this.decide(
      'rcpt',
      this.hooks.run('rcpt', { session: this.info(session, listener), envelope: envelopeOf(session), recipient: toAddress(address), domain: parsed.domain, isLocal, notes: this.state(session).notes }),
      session,
      listener,
      address.address,
    )
    // Closed by default: only local domains, or what a plugin accepted, get in (and our feedback addresses).
    if (!accepted && !isLocal && !this.feedback.isFeedbackAddress(address.address)) throw this.refuse(session, listener, 'rcpt', fixed(550, '5.7.1', `Relaying denied for <${address.address}>`), undefined, address.address)
    // Hard-bounced addresses (and those added with `relay suppression add`): a lookup in the queue database.
    if (this.config.delivery.suppression.enabled) {
      const suppressed = await this.queue.isSuppressed(address.address)
      if (suppressed) {
        this.log.info({ session: session.id, to: address.address, reason: suppressed.reason }, 'recipient refused: suppressed')
        if (this.hooks.has('suppressed')) void this.hooks.emit('suppressed', { session: this.info(session, listener), recipient: address.address, reason: suppressed.reason, source: suppressed.source })
        throw this.refuse(session, listener, 'rcpt', fixed(550, '5.1.1', `<${address.address}>: recipient suppressed (${suppressed.reason.replace(/[\x00-\x1f\x7f]+/g, ' ')})`), undefined, address.address)
      }
    }
    // smtp-server dedupes recipients by what the client typed; `<postmaster>` is now another spelling.
    if (parsed.local.toLowerCase() === 'postmaster' && isLocal) {
      const rcpts = session.envelope.rcptTo
      const twin = rcpts.findIndex((r) => r !== address && r.address.toLowerCase() === address.address.toLowerCase())
      if (twin >= 0) rcpts.splice(twin, 1)
    }
  }

  private async onData(stream: SMTPServerDataStream, session: SMTPServerSession, listener: Listener): Promise<string> {
    const id = newQueueId()
    const started = Date.now()
    let data: Awaited<ReturnType<typeof readMessage>>
    try {
      const { maxHeaderSize, maxHeaderLines, maxHeaderFieldLines } = this.config.smtp
      const headerLimits = { maxBytes: maxHeaderSize, maxLines: maxHeaderLines, maxFieldLines: maxHeaderFieldLines }
      data = await readMessage(stream, { spool: this.spool, id, lineEndings: this.config.smtp.bareLineEndings, headerLimits })
    } catch (err) {
      if (err instanceof HeaderTooLargeError) {
        this.log.info({ session: session.id, client: session.remoteAddress, limit: err.limit, max: err.max }, `message refused: ${err.message}`)
        throw this.refuse(session, listener, 'protocol', fixed(552, '5.3.4', `Message header too large: ${err.message}`))
      }
      if (err instanceof BareLineEndingError) {
        this.log.info({ session: session.id, client: session.remoteAddress }, 'message refused: bare LF or CR')
        throw this.refuse(session, listener, 'protocol', fixed(550, '5.6.0', 'Message contains bare LF or bare CR (only CRLF line ends are allowed)'))
      }
      if (err instanceof NulByteError) {
        this.log.info({ session: session.id, client: session.remoteAddress }, 'message refused: NUL byte')
        throw this.refuse(session, listener, 'protocol', fixed(550, '5.6.0', 'Message contains a NUL byte (not allowed in mail)'))
      }
      // A client that went away gets no reply, so that is no refusal either.
      if ((err as { code?: string }).code === 'ECONNECTION') throw replyError(fixed(451, '4.3.0', 'Error reading message, try again'))
      this.log.error({ err, session: session.id }, 'reading message failed')
      throw this.refuse(session, listener, 'protocol', fixed(451, '4.3.0', 'Error reading message, try again'))
    }
    const discard = async () => {
      if ('file' in data.body) await data.body.file.discard()
    }
    try {
      // smtp-server answers 552 itself; the message must not be queued behind that answer.
      if (stream.sizeExceeded) {
        await discard()
        throw this.refuse(session, listener, 'protocol', fixed(552, '5.3.4', 'Message exceeds fixed maximum message size'))
      }
      // A feedback report goes to the complaint counters, not through the data hooks (it carries
      // the reported spam, content scanners would refuse it) and not into the queue.
      if (this.feedback.isReport(session.envelope.rcptTo.map((r) => r.address))) {
        if ('file' in data.body) await data.body.file.flushPending()
        const body = 'file' in data.body ? { path: data.body.file.path } : data.body
        const reply = await this.feedback.take({ header: data.headers.toBuffer(), body, session: session.id, client: session.remoteAddress, sender: session.envelope.mailFrom ? session.envelope.mailFrom.address : '' })
        await discard()
        return reply
      }
      return await this.accept(id, data, session, listener, started)
    } catch (err) {
      await discard().catch(() => undefined)
      if ((err as { responseCode?: number }).responseCode) throw err
      this.log.error({ err, session: session.id }, 'queueing message failed')
      throw this.refuse(session, listener, 'queue', fixed(451, '4.3.0', 'Message could not be queued, try again later'))
    }
  }

  /** Hooks, trace headers, the durable write: resolves only once the message is on disk. */
  private async accept(id: string, data: Awaited<ReturnType<typeof readMessage>>, session: SMTPServerSession, listener: Listener, started: number): Promise<string> {
    const info = this.info(session, listener)
    const envelope = envelopeOf(session)
    const { headers } = data
    const size = () => headers.toBuffer().length + data.bodySize

    // RFC 5321 §6.3: a message that has been round this many times is in a loop (ours not counted yet).
    const hops = hopCount(headers.toBuffer().toString('latin1'))
    if (hops > this.config.smtp.maxHops) {
      this.log.warn({ session: session.id, client: session.remoteAddress, hops, limit: this.config.smtp.maxHops }, 'message refused: too many hops')
      throw this.refuse(session, listener, 'protocol', fixed(554, '5.4.6', 'Too many hops'))
    }

    if (info.user) {
      const foreign = foreignHeaderSenders(headers, info.senders ?? [])
      if (foreign.length) {
        this.log.warn({ session: session.id, user: info.user, header: foreign }, 'message refused: From/Sender not owned by the authenticated user')
        throw this.refuse(session, listener, 'data', fixed(553, '5.7.1', `Header sender <${foreign[0]}> not owned by user ${info.user}`))
      }
    }

    // Plugins that scan or sign read the message as it stands: current header fields, then the body.
    if ('file' in data.body) await data.body.file.flushPending()
    // The body as it stands: a queue plugin may have it converted to 7-bit (convertTo7bit).
    const readMessage = () => {
      const body = data.body
      return 'inline' in body
        ? Readable.from([headers.toBuffer(), body.inline], { objectMode: false })
        : Readable.from(
            (async function* () {
              yield headers.toBuffer()
              yield* fs.createReadStream(body.file.path)
            })(),
            { objectMode: false },
          )
    }
    const convertTo7bit = () => convertReceivedTo7bit(data, readMessage, this.spool, id)

    const d = await this.hooks.run('data', { session: info, envelope, headers, size: size(), readMessage, notes: this.state(session).notes })
    if (d && d.verdict.action !== 'accept') throw this.refuse(session, listener, 'data', replyFor('data', d.verdict), d.plugin)

    if (listener.role === 'submission') {
      if (!headers.has('Message-ID')) headers.append('Message-ID', `<${id}@${this.config.hostname}>`)
      if (!headers.has('Date')) headers.append('Date', rfc5322Date())
    }
    const recipients = envelope.recipients.map((r) => r.address)
    const tls = info.tls ? `${info.tls.version} with cipher ${info.tls.cipher}` : undefined
    headers.prepend('Received', receivedHeader({ session: info, hostname: this.config.hostname, protocol: session.transmissionType, queueId: id, recipients, tls }))

    const q = await this.hooks.run('queue', { session: info, envelope, headers, size: size(), queueId: id, readMessage, convertTo7bit, notes: this.state(session).notes })
    if (q && q.verdict.action !== 'accept') throw this.refuse(session, listener, 'queue', replyFor('queue', q.verdict), q.plugin)

    const headerBytes = headers.toBuffer()
    if ('file' in data.body) await data.body.file.commit()
    const now = Date.now()
    const message: NewMessage = {
      id,
      sender: envelope.sender.address,
      senderArgs: envelope.sender.args,
      recipients: envelope.recipients.map((r) => ({ address: r.address, domain: parseAddress(r.address)!.domain, args: r.args })),
      headers: headerBytes,
      body: 'file' in data.body ? { file: data.body.file.path } : { inline: data.body.inline },
      size: headerBytes.length + data.bodySize,
      messageId: headers.get('Message-ID'),
      receivedAt: now,
      expiresAt: now + this.config.delivery.maxQueueLifetime,
      meta: { clientAddress: info.remoteAddress, clientHostname: info.clientHostname, helo: info.helo, listener: `${listener.host}:${listener.port}`, user: info.user, trusted: info.trusted },
    }
    // Durable before the 250; the queue then announces the new work to delivery.
    await this.intake.enqueue(message)
    // The 'accepted' delivery event's log line (core/events/log.ts logs the others).
    this.log.info({ event: 'accepted', queueId: id, ...acceptedFields(message, recipients, info), ms: now - started }, 'delivery event')
    if (this.hooks.has('accepted')) {
      void this.hooks.emit('accepted', { queueId: id, messageId: message.messageId, sender: message.sender, recipients, size: message.size, session: info })
    }
    return `2.0.0 Ok: queued as ${id}`
  }
}
