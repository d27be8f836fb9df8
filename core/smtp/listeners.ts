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
import { patchSmtpServer } from './patches.js'
import { envelopeOf, sessionInfo, toAddress, type ListenerInfo } from './session.js'
import { parseAddress } from './address.js'
import { BareLineEndingError, readMessage } from './data.js'
import { receivedHeader, rfc5322Date } from './received.js'
import type { DeliveryScheduler } from '../delivery/scheduler.js'

type Callback = (err?: Error | null) => void

const fixed = (code: number, status: string, message: string): Reply => ({ code, status, message })

/** The SMTP side: one smtp-server per configured listener, each command mapped to a hook. */
@injectable()
export class SmtpListeners {
  private servers: { server: SMTPServer; listener: ListenerInfo }[] = []
  /** The HELO name each session's helo hook last approved (the hook runs at the first MAIL). */
  private heloChecked = new WeakMap<SMTPServerSession, string>()
  private readonly local: Set<string>

  constructor(
    @inject(Tokens.Config) private readonly config: RelayConfig,
    @inject(Tokens.Logger) private readonly log: Logger,
    @inject(Tokens.Resolver) private readonly resolver: Resolver,
    @inject(Tokens.Hooks) private readonly hooks: HookBus,
    @inject(Tokens.Queue) private readonly queue: Queue,
    @inject(Tokens.Spool) private readonly spool: Spool,
    @inject(Tokens.Delivery) private readonly delivery: DeliveryScheduler,
  ) {
    patchSmtpServer()
    this.local = new Set(config.localDomains)
  }

  /** Starts every listener; resolves with the bound addresses once all accept connections. */
  async start(): Promise<ListenerInfo[]> {
    const bound: ListenerInfo[] = []
    for (const l of this.config.listen) {
      const listener: ListenerInfo = { host: l.host, port: l.port, role: l.role }
      const server = this.createServer(listener)
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(l.port, l.host, () => {
          server.off('error', reject)
          resolve()
        })
      })
      server.on('error', (err) => this.log.error({ err, listener }, 'listener error'))
      const address = server.server.address()
      if (address && typeof address === 'object') listener.port = address.port
      this.servers.push({ server, listener })
      bound.push(listener)
      this.log.info({ host: listener.host, port: listener.port, role: listener.role }, `listening on ${listener.host}:${listener.port} (${listener.role})`)
    }
    return bound
  }

  /** Stops accepting; open sessions may finish until the timeout, then they are closed. */
  async stop(): Promise<void> {
    await Promise.all(this.servers.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve()))))
    this.servers = []
  }

  private createServer(listener: ListenerInfo): SMTPServer {
    const c = this.config
    const hasAuth = this.hooks.has('auth')
    const resolver = this.resolver
    return new SMTPServer({
      name: c.hostname,
      banner: 'Relay',
      size: c.smtp.maxMessageSize,
      maxClients: c.smtp.maxClients,
      socketTimeout: c.smtp.socketTimeout,
      closeTimeout: c.shutdownTimeout,
      hideENHANCEDSTATUSCODES: false,
      hide8BITMIME: false,
      hidePIPELINING: false,
      hideSMTPUTF8: false,
      hideDSN: true,
      // TLS (STARTTLS, implicit) comes with the listener TLS options; until then no STARTTLS offer.
      disabledCommands: hasAuth ? ['STARTTLS'] : ['STARTTLS', 'AUTH'],
      authOptional: true,
      disableReverseLookup: !c.smtp.reverseLookup,
      resolver: { reverse: (ip: string, cb: (err: Error | null, names?: string[]) => void) => void resolver.reverse(ip).then((n) => cb(null, n), (e: Error) => cb(e)) },
      logger: false,
      greetingDelay: c.smtp.greetingDelay,
      onConnect: (session, cb) => void this.onConnect(session, listener).then(() => cb(), cb),
      onAuth: (auth, session, cb) =>
        void this.onAuth(auth, session, listener).then((user) => cb(null, { user }), (err: Error) => cb(err)),
      onMailFrom: (address, session, cb) => void this.onMailFrom(address, session, listener).then(() => cb(), cb),
      onRcptTo: (address, session, cb) => void this.onRcptTo(address, session, listener).then(() => cb(), cb),
      onData: (stream, session, cb) =>
        void this.onData(stream, session, listener).then((message) => cb(null, message), (err: Error) => cb(err)),
    } as ConstructorParameters<typeof SMTPServer>[0])
  }

  private async decide(stage: 'connect' | 'helo' | 'mail' | 'rcpt', run: Promise<{ verdict: { action: string } } | undefined>): Promise<boolean> {
    const decision = await run
    if (!decision) return false
    const verdict = decision.verdict as Parameters<typeof replyFor>[1]
    if (verdict.action === 'accept') return true
    throw replyError(replyFor(stage, verdict))
  }

  private async onConnect(session: SMTPServerSession, listener: ListenerInfo): Promise<void> {
    await this.decide('connect', this.hooks.run('connect', { session: sessionInfo(session, listener) }))
  }

  private async onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, listener: ListenerInfo): Promise<string> {
    const username = auth.username ?? ''
    const decision = await this.hooks.run('auth', {
      session: sessionInfo(session, listener),
      method: auth.method,
      username,
      password: auth.password ?? '',
    })
    if (decision?.verdict.action === 'accept') {
      this.log.info({ session: session.id, user: username, method: auth.method }, 'authenticated')
      return username
    }
    this.log.warn({ session: session.id, user: username, client: session.remoteAddress }, 'authentication failed')
    throw replyError(replyFor('auth', decision?.verdict ?? { action: 'reject' }))
  }

  private async onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, listener: ListenerInfo): Promise<void> {
    const info = sessionInfo(session, listener)
    const helo = session.hostNameAppearsAs
    if (this.hooks.has('helo') && this.heloChecked.get(session) !== helo) {
      await this.decide('helo', this.hooks.run('helo', { session: info, helo }))
      this.heloChecked.set(session, helo)
    }
    if (address.address !== '' && !parseAddress(address.address)) {
      throw replyError(fixed(553, '5.1.7', 'Bad sender address syntax'))
    }
    await this.decide('mail', this.hooks.run('mail', { session: info, sender: toAddress(address) }))
  }

  private async onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, listener: ListenerInfo): Promise<void> {
    const parsed = parseAddress(address.address)
    if (!parsed) throw replyError(fixed(553, '5.1.3', 'Bad recipient address syntax'))
    if (session.envelope.rcptTo.length >= this.config.smtp.maxRecipients) throw replyError(fixed(452, '4.5.3', 'Too many recipients'))
    const isLocal = this.local.has(parsed.domain)
    const accepted = await this.decide(
      'rcpt',
      this.hooks.run('rcpt', { session: sessionInfo(session, listener), envelope: envelopeOf(session), recipient: toAddress(address), domain: parsed.domain, isLocal }),
    )
    // Closed by default: only local domains, or what a plugin accepted, get in.
    if (!accepted && !isLocal) throw replyError(fixed(550, '5.7.1', `Relaying denied for <${address.address}>`))
  }

  private async onData(stream: SMTPServerDataStream, session: SMTPServerSession, listener: ListenerInfo): Promise<string> {
    const id = newQueueId()
    const started = Date.now()
    let data: Awaited<ReturnType<typeof readMessage>>
    try {
      data = await readMessage(stream, { spool: this.spool, id, lineEndings: this.config.smtp.bareLineEndings })
    } catch (err) {
      if (err instanceof BareLineEndingError) {
        this.log.info({ session: session.id, client: session.remoteAddress }, 'message refused: bare LF or CR')
        throw replyError(fixed(550, '5.6.0', 'Message contains bare LF or bare CR (only CRLF line ends are allowed)'))
      }
      if ((err as { code?: string }).code !== 'ECONNECTION') this.log.error({ err, session: session.id }, 'reading message failed')
      throw replyError(fixed(451, '4.3.0', 'Error reading message, try again'))
    }
    const discard = async () => {
      if ('file' in data.body) await data.body.file.discard()
    }
    try {
      if (stream.sizeExceeded) {
        await discard()
        throw replyError(fixed(552, '5.3.4', 'Message exceeds fixed maximum message size'))
      }
      return await this.accept(id, data, session, listener, started)
    } catch (err) {
      await discard().catch(() => undefined)
      if ((err as { responseCode?: number }).responseCode) throw err
      this.log.error({ err, session: session.id }, 'queueing message failed')
      throw replyError(fixed(451, '4.3.0', 'Message could not be queued, try again later'))
    }
  }

  /** Hooks, trace headers, the durable write: resolves only once the message is on disk. */
  private async accept(id: string, data: Awaited<ReturnType<typeof readMessage>>, session: SMTPServerSession, listener: ListenerInfo, started: number): Promise<string> {
    const info = sessionInfo(session, listener)
    const envelope = envelopeOf(session)
    const { headers } = data
    const size = () => headers.toBuffer().length + data.bodySize

    const d = await this.hooks.run('data', { session: info, envelope, headers, size: size() })
    if (d && d.verdict.action !== 'accept') throw replyError(replyFor('data', d.verdict))

    if (listener.role === 'submission') {
      if (!headers.has('Message-ID')) headers.append('Message-ID', `<${id}@${this.config.hostname}>`)
      if (!headers.has('Date')) headers.append('Date', rfc5322Date())
    }
    const recipients = envelope.recipients.map((r) => r.address)
    headers.prepend('Received', receivedHeader({ session: info, hostname: this.config.hostname, protocol: session.transmissionType, queueId: id, recipients }))

    const q = await this.hooks.run('queue', { session: info, envelope, headers, size: size(), queueId: id })
    if (q && q.verdict.action !== 'accept') throw replyError(replyFor('queue', q.verdict))

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
      meta: { clientAddress: info.remoteAddress, clientHostname: info.clientHostname, helo: info.helo, listener: `${listener.host}:${listener.port}`, user: info.user },
    }
    // When delivery has free slots for every domain, the message goes out from memory at once.
    const domains = [...new Set(message.recipients.map((r) => r.domain))]
    const leaseUntil = this.delivery.reserve(domains)
    let rowIds: number[]
    try {
      rowIds = await this.queue.enqueue(message, leaseUntil)
    } catch (err) {
      if (leaseUntil) this.delivery.unreserve(domains)
      throw err
    }
    this.log.info(
      { queueId: id, from: envelope.sender.address, to: recipients, size: headerBytes.length + data.bodySize, client: info.remoteAddress, ms: now - started },
      'message accepted',
    )
    if (leaseUntil) this.delivery.startReserved(message, rowIds)
    else this.delivery.notify()
    return `2.0.0 Ok: queued as ${id}`
  }
}
