// Adjustments to smtp-server's connection class (pinned at 3.21.x; see STACK.md):
// 1. With ENHANCEDSTATUSCODES on, smtp-server derives the enhanced code from the basic code, so a
//    plugin could never answer `550 5.7.1`. A reply text that already starts with an enhanced code
//    is sent as it is.
// 2. smtp-server waits a fixed 100 ms before the greeting (early-talker check). That caps a
//    one-message-per-connection client at 10 messages/s per session; the pause becomes the
//    server option `greetingDelay` (ms, default 0).
// 3. `smtp.maxErrors` counts every 4xx/5xx reply of a session (smtp-server's own, like 503 or 501,
//    as well as the relay's): server option `maxErrors`; the reply that reaches it becomes 421.
//    Not counted: the first RECIPIENT_OVERSHOOT `452 4.5.3` refusals of recipients over the limit
//    (RFC 5321 §4.5.3.1.10: the client sends DATA for those taken and the rest later; Postfix's
//    smtpd_recipient_overshoot_limit), so a long list does not lose the recipients already taken.
//    smtp-server's own 421 4.4.2 ("bad connection": retry) for a command line over its limit
//    becomes `500 5.5.2 Line too long` (RFC 5321 §4.2.4) before the close; its limit of 10
//    unrecognized commands answers as maxErrors does (421 4.7.0). AUTH before STARTTLS where AUTH
//    comes with TLS (server option `authAfterStartTls`) gets 530 5.7.0 and STARTTLS inside TLS
//    503 5.5.1, not "500 command not recognized" (RFC 3207 §4).
// 4. smtp-server counts commands before AUTH (`maxAllowedUnauthenticatedCommands`) only while AUTH
//    is on offer; on a listener that requires AUTH it is hidden until STARTTLS, so those commands
//    are counted here as well.
// 5. Server option `firstCommandTimeout` (ms): a connection that sends no command that long after it
//    was accepted (plus `greetingDelay`) gets 421 4.4.2 and is closed, long before `socketTimeout`:
//    silent connections must not hold the slots of `maxClients`. `onFirstCommandTimeout(session)`
//    is told. The idle timeout's 421 (smtp-server: "Timeout - closing connection") names the host,
//    as RFC 5321 §3.8 has a 421 do, and goes to `onIdleTimeout(session, lastCommand)` for its log line.
// 6. An idle session holds only what it uses (thousands of them are the common case for an MX):
//    `_xClient`/`_xForward` are one shared empty map (that refuses writes) unless XCLIENT/XFORWARD
//    are on, and `_rcptIndex` is made at the first RCPT of a transaction, not at every EHLO/RSET.
// 7. The idle timeout keeps one 'timeout' listener per socket, shared code, instead of a once()
//    wrapper (four objects) made again at every arming.
// 8. A plaintext socket feeds its command parser through 'data'/'end' listeners shared by all
//    connections instead of Readable#pipe (nine closures and two once() wrappers per connection),
//    with the same backpressure (pause until the parser drains). The library's later unpipe calls
//    then undo nothing; what they stop is stopped anyway: close(), _onClose() and upgrade() mark
//    the parser closed first (it then drops input unparsed), upgrade() removes every listener of
//    the plaintext socket, and a parser that failed or ended is not written to. After STARTTLS the
//    library pipes the TLS socket as before. _setListeners is replaced whole: checked against its
//    source below.
// 9. RFC 4954 §4: AUTH inside a mail transaction (after MAIL FROM) gets 503. smtp-server takes it,
//    and then the envelope sender given before AUTH is never checked against what the user owns.
// 10. RFC 5321 §4.1.2: a quoted local part may hold spaces and `<` `>` (`"john smith"@example.com`);
//    smtp-server splits MAIL/RCPT at every space and wants no `<>` inside the path. Those characters
//    inside quoted strings are masked for its parser and put back in the address it returns
//    (core/smtp/quoted-strings.ts). The envelope checks then refuse `<` `>` in a local part all the
//    same (core/mail/address.ts: no next hop could be given such an address); spaces pass.
// 11. RFC 2920 §3.1: a client waits for 354 before it sends the message. Bytes that came after DATA
//    in the same read are improper pipelining: when DATA is refused (no valid recipient) smtp-server
//    would run the message's lines as commands (a "body" holding MAIL/RCPT/DATA queued a second message), and when it is taken, the client did
//    not wait to learn whether it would be. The session gets 554 5.5.0 and is closed, as Postfix's
//    smtpd_forbid_unauth_pipelining does. The parser's read position is followed line by line.
// 12. RFC 3461 §4: ENVID and ORCPT are xtext. smtp-server decodes `+XX` and keeps whatever else it
//    finds (`ENVID=a+ZZ`, `a=b`), which a next hop would refuse (Postfix: 501 5.5.4 Bad ENVID
//    parameter syntax) after the relay took the mail. The names of such raw values are kept on the
//    args (a hidden property) for the relay's DSN parameter check (core/smtp/session.ts): 501 5.5.4.
// 13. smtp-server compares `MAIL FROM` with what comes before the colon as it is, so `MAIL  FROM:<a>`
//    (two spaces) was "Bad sender address syntax"; Postfix takes it. Runs of spaces there become one.
// 14. After 100 commands that move no mail since the session's last accepted message (MAIL, RSET,
//    NOOP, VRFY, HELP, HELO/EHLO, unknown ones: all but RCPT, DATA, AUTH, STARTTLS, QUIT; Postfix's
//    smtpd_junk_command_limit), each one counts as an error towards `maxErrors`. A MAIL/RSET loop ran
//    the sender checks (SPF: DNS queries for a domain the client chose) thousands of times a second,
//    and a NOOP loop held a slot, for the whole session; now either ends after ~120. Clients in
//    smtp.trustedNetworks (server option `trustedClient`) are exempt.
// 15. Every 4xx/5xx reply to a command that the relay's own refusal (core/smtp/refusal.ts) did not
//    log already (smtp-server's 501 to a bad HELO, 503 bad sequence, 500 unknown command, 530, ...)
//    goes to server option `onRefused(session, command, reply)`, for the one `refused` log line. Not
//    replies that answer no command (idle timeout, shutdown), nor those sent with context OWN_LINE
//    (closes the session limits log with their own line). RFC 5321 commands the relay knows and does
//    not implement (EXPN, TURN, ETRN, ...: session.ts NOT_IMPLEMENTED) get 502 5.5.1, not 500 (§4.2.4).
// 16. RFC 2920 §3.2: the replies to a group of pipelined commands go out in one write
//    (core/smtp/reply-groups.ts): each parser knows its connection's socket (`_createParser`).
// 17. A command must arrive whole within the idle limit of the last reply, message data at
//    `minDataRate`; under stress (server option `stressAt`) the idle limit is `stressTimeout` for
//    clients neither trusted nor authenticated (core/smtp/deadlines.ts). A client past its deadline
//    gets 421 4.4.2 and is closed; `onInputTooSlow` and `onStress` are told.
// 18. RFC 5321 §4.5.2: a leading period goes from every data line with more after it (core/smtp/dot-lines.ts).
// 19. RFC 5321 §4.1.1.4, §4.1.1.5: DATA and RSET take no argument. smtp-server ignored one, so
//    `DATA foo` got 354 and the client's next commands became message text; now 501 5.5.4 Syntax:
//    DATA, as Postfix answers (DATA without a recipient still gets 503 first).
// 20. A client that half-closes after its last command still gets every reply (core/smtp/half-close.ts).
// 21. REQUIRETLS, not offered, is left to the relay's check of unknown parameters (core/smtp/mail-params.ts);
//    smtp-server's 421 for too many commands before AUTH carries 4.7.0 (a policy limit), not 4.4.2.
import type { Socket } from 'node:net'
import type { Writable } from 'node:stream'
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js'
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js'
import { patchDotLines } from './dot-lines.js'
import { parseAddressCommandFor } from './address-command.js'
import { CORE_REPLIES, replyText } from '../hooks/verdict.js'
import { AT, READ, type ConnectionInternals, type ParserInternals } from './connection-internals.js'
import { canWait, holdReplies, isGroup, releaseReplies, REPLIES_TO } from './reply-groups.js'
import { checkStress, idleLimit, inTime, replied, withHandshakeDeadline, working } from './deadlines.js'
import { NOT_IMPLEMENTED, OWN_LINE, REFUSAL_LOGGED } from './session.js'
import { halfClosed, withHalfCloseAfterTls } from './half-close.js'
import { withoutUnofferedRequireTls } from './mail-params.js'

/** Commands that move no mail, after the last accepted message, before each counts as an error (patch 14; Postfix's junk limit). */
const JUNK_LIMIT = 100
/** The commands that do move mail on (or end the session): any other is junk (patch 14). */
const PROGRESS = /^(?:RCPT|DATA|AUTH|STARTTLS|QUIT)(?:\s|$)/i
/** Recipients over smtp.maxRecipients refused with 452 before those refusals count as errors (Postfix's default). */
const RECIPIENT_OVERSHOOT = 1000
const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /

/** The empty map idle sessions share; a write means smtp-server changed under this patch. */
class NoEntries<V> extends Map<string, V> {
  override set(): this {
    throw new Error('smtp-server wrote to a shared empty map: check core/smtp/patches.ts against the installed version')
  }
}
const NONE = new NoEntries<never>()

/** The connection whose idle timeout a socket carries (patch 7). */
const CONNECTION = Symbol('relay.smtpConnection')
type TimedSocket = Socket & { [CONNECTION]?: ConnectionInternals }
function onIdleTimeout(this: TimedSocket): void {
  this[CONNECTION]?._onTimeout()
}

/** The parser a plaintext socket feeds (patch 8). */
const PARSER = Symbol('relay.smtpParser')
type FedSocket = TimedSocket & { [PARSER]?: Writable }
function onSocketClose(this: FedSocket, hadError: boolean): void {
  this[CONNECTION]?._onCloseEvent(hadError)
}
function onSocketError(this: FedSocket, err: Error): void {
  this[CONNECTION]?._onError(err)
}
function onSocketData(this: FedSocket, chunk: Buffer): void {
  const parser = this[PARSER]
  if (!parser || parser.destroyed || parser.writableEnded) return
  if (!parser.write(chunk) && !this.isPaused()) {
    this.pause()
    parser.once('drain', () => this.resume())
  }
}
function onSocketEnd(this: FedSocket): void {
  const parser = this[PARSER]
  halfClosed(this, parser)
  if (parser && !parser.destroyed && !parser.writableEnded) parser.end()
}
/** smtp-server 3.21's _setListeners, whitespace folded: patch 8 replaces exactly this. */
const SET_LISTENERS =
  "_setListeners(callback) { this._socket.on('close', hadError => this._onCloseEvent(hadError)); this._socket.on('error', err => this._onError(err)); this._armTimeout(); this._socket.pipe(this._parser); if (!this.needsUpgrade) { return callback(); } this.upgrade(() => false, callback); }"

const PATCHED = Symbol.for('relay.smtpServerPatched')
let applied = false

export function patchSmtpServer(): void {
  if (applied) return
  applied = true
  const proto = (SMTPConnection as unknown as { prototype: ConnectionInternals }).prototype
  // Marked on the class itself: a second copy of this module (another install of the relay in the
  // same process) must neither patch twice nor take the patched methods for changed internals.
  const marked = proto as unknown as Record<symbol, boolean>
  if (marked[PATCHED]) return
  if (
    typeof proto.send !== 'function' ||
    typeof proto._setListeners !== 'function' ||
    typeof proto.connectionReady !== 'function' ||
    typeof proto._onCommand !== 'function' ||
    typeof proto._isDisabled !== 'function' ||
    typeof proto._onClose !== 'function' ||
    typeof proto._resetSession !== 'function' ||
    typeof proto.handler_RCPT !== 'function' ||
    typeof proto.handler_AUTH !== 'function' ||
    typeof proto.upgrade !== 'function' ||
    typeof proto.handler_DATA !== 'function' ||
    typeof proto.handler_RSET !== 'function' ||
    typeof proto._parseAddressCommand !== 'function' ||
    typeof proto._armTimeout !== 'function' ||
    typeof proto._onTimeout !== 'function' ||
    typeof proto._getEnhancedStatusCode !== 'function' ||
    typeof proto._createParser !== 'function' ||
    typeof proto._whenWritable !== 'function' ||
    typeof proto._validateMailParams !== 'function' ||
    typeof proto.close !== 'function' ||
    String(proto._setListeners).replace(/\s+/g, ' ') !== SET_LISTENERS
  ) {
    throw new Error('smtp-server internals changed: check core/smtp/patches.ts against the installed version')
  }
  marked[PATCHED] = true
  patchDotLines()
  proto._validateMailParams = withoutUnofferedRequireTls(proto._validateMailParams)
  const send = proto.send
  const relaySend: ConnectionInternals['send'] = function (this: ConnectionInternals, code, data, context) {
    if (code === 500 && context === 'STARTTLS' && this.secure) [code, data] = [503, replyText(CORE_REPLIES.tlsAlreadyActive)]
    else if (code === 500 && context === 'AUTH' && !this.secure && this._server.options.authAfterStartTls && this._isSupported('STARTTLS')) [code, data] = [530, replyText(CORE_REPLIES.mustStartTls)]
    else if (code === 500 && data === 'Error: command not recognized' && NOT_IMPLEMENTED.has(this._relayVerb ?? '')) [code, data] = [502, replyText(CORE_REPLIES.notImplemented)]
    // A policy limit, not a bad connection: 4.7.0 as the relay's own count of these commands (smtp-server derived 4.4.2).
    else if (code === 421 && data === 'Error: too many unauthenticated commands') data = replyText(CORE_REPLIES.tooManyUnauthenticatedCommands)
    const { maxErrors, onTooManyErrors, onRefused } = this._server.options
    const verb = this._relayVerb
    if (code >= 200 && code !== 334 && code !== 354) this._relayVerb = undefined
    const ownLine = context === OWN_LINE || data === 'Error: too many unrecognized commands'
    if (ownLine) context = false
    if (code >= 400 && verb && !ownLine) {
      const text = Array.isArray(data) ? data.join(' ') : String(data ?? '')
      if (this.session[REFUSAL_LOGGED] === text) this.session[REFUSAL_LOGGED] = undefined
      else {
        const status = ENHANCED.test(text) ? text.slice(0, text.indexOf(' ')) : this._getEnhancedStatusCode(code, context)
        onRefused?.(this.session, verb, { code, status, message: ENHANCED.test(text) ? text.slice(status.length + 1) : text })
      }
    }
    if (code === 421 && data === 'Timeout - closing connection') {
      this._server.options.onIdleTimeout?.(this.session, this._relayLastVerb)
      return send.call(this, 421, replyText(CORE_REPLIES.idleTimeout(this.name)), false)
    }
    if (code === 421 && data === 'Error: Command line too long') {
      send.call(this, 500, replyText(CORE_REPLIES.lineTooLong), false)
      return this.close()
    }
    if (code === 421 && data === 'Error: too many unrecognized commands') {
      onTooManyErrors?.(this.session)
      return send.call(this, 421, replyText(CORE_REPLIES.tooManyErrors(this.name)), false)
    }
    const overshoot = code === 452 && typeof data === 'string' && data.startsWith('4.5.3 ') && (this._relayOvershoot = (this._relayOvershoot ?? 0) + 1) <= RECIPIENT_OVERSHOOT
    if (maxErrors && code >= 400 && code !== 421 && !overshoot && (this._relayErrors = (this._relayErrors ?? 0) + 1) >= maxErrors) {
      onTooManyErrors?.(this.session)
      return send.call(this, 421, replyText(CORE_REPLIES.tooManyErrors(this.name)), false)
    }
    if (code === 250 && context === 'DATA_OK') this._relayJunk = 0
    if (typeof data === 'string' && ENHANCED.test(data)) return send.call(this, code, data, false)
    return send.call(this, code, data, context)
  }
  proto.send = function (code, data, context) {
    relaySend.call(this, code, data, context)
    replied(this)
    // Patch 16: a reply the client waits for before it sends more leaves now, with those before it.
    if (this._socket && !canWait(code)) releaseReplies(this._socket)
  }
  // Patch 16: smtp-server waits for a full socket to drain before the next command (a client that
  // does not read); a corked socket never drains, so what it holds goes out first.
  const whenWritable = proto._whenWritable
  proto._whenWritable = function (this: ConnectionInternals, next: () => void) {
    if (this._socket?.writableNeedDrain) releaseReplies(this._socket)
    return whenWritable.call(this, next)
  }
  const createParser = proto._createParser
  proto._createParser = function (this: ConnectionInternals) {
    const parser = createParser.call(this) as ParserInternals
    parser[REPLIES_TO] = this
    return parser
  }
  const parserProto = (SMTPStream as unknown as { prototype: ParserInternals }).prototype
  const parserWrite = parserProto._write
  parserProto._write = function (chunk, encoding, next) {
    // Patch 17: input past the client's deadline is not parsed; the session ends.
    const conn = this[REPLIES_TO]
    if (conn && !this.isClosed && !inTime(conn, chunk.length, this._dataMode)) {
      if (!conn._closing && !conn._closed) {
        conn._server.options.onInputTooSlow?.(conn.session, conn._relayLastVerb, this._dataMode)
        conn.send(421, replyText(CORE_REPLIES.inputTooSlow(conn.name)), OWN_LINE)
        conn.close()
      }
      return next()
    }
    // Command mode: the text the parser splits into lines now (what it kept of the last read first).
    if (!this._dataMode) {
      this[READ] = this._remainder + chunk.toString('binary')
      this[AT] = 0
      // Patch 16: a group's replies wait until the parser has dispatched all of this read.
      const socket = this[REPLIES_TO]?._socket
      if (socket && isGroup(chunk) && holdReplies(socket)) {
        return parserWrite.call(this, chunk, encoding, (err) => {
          releaseReplies(socket)
          next(err)
        })
      }
    }
    return parserWrite.call(this, chunk, encoding, next)
  }
  const onCommand = proto._onCommand
  proto._onCommand = function (command, callback) {
    const parser = this._parser as ParserInternals | false
    if (parser && parser[READ] !== undefined) {
      // This command is the next line of what the parser read: step over it and its line break.
      const read = parser[READ]
      let at = parser[AT]! + command.length
      if (read[at] === '\r') at++
      if (read[at] === '\n') at++
      parser[AT] = at
      if (/^DATA(?:\s|$)/i.test(command.toString('latin1')) && at < read.length) {
        this._server.options.onImproperPipelining?.(this.session)
        this.send(554, replyText(CORE_REPLIES.improperPipelining), OWN_LINE)
        return this.close()
      }
    }
    working(this)
    if (this._firstCommandTimer) {
      clearTimeout(this._firstCommandTimer)
      this._firstCommandTimer = undefined
    }
    const { maxErrors, onTooManyErrors } = this._server.options
    if (!this._nextHandler) this._relayLastVerb = this._relayVerb = command.toString('latin1', 0, 16).split(/[\s:]/, 1)[0]!.replace(/[^\x21-\x7e]/g, '?').toUpperCase() || '?'
    const junk = !this._nextHandler && maxErrors && !PROGRESS.test(command.toString('latin1', 0, 9))
    if (junk && (this._relayJunk = (this._relayJunk ?? 0) + 1) > JUNK_LIMIT && !(this._relayTrusted ??= this._server.options.trustedClient?.(this.remoteAddress) ?? false)) {
      if ((this._relayErrors = (this._relayErrors ?? 0) + 1) >= maxErrors) {
        onTooManyErrors?.(this.session)
        return this.send(421, replyText(CORE_REPLIES.tooManyErrors(this.name)), OWN_LINE)
      }
    }
    const max = this._maxAllowedUnauthenticatedCommands
    if (this._ready && !this._upgrading && !this._nextHandler && max !== false && !this.session.user && !this._server.options.authOptional && this._isDisabled('AUTH')) {
      if (++this._unauthenticatedCommands >= max) return this.send(421, replyText(CORE_REPLIES.tooManyUnauthenticatedCommands), false)
    }
    return onCommand.call(this, command, callback)
  }
  const onClose = proto._onClose
  proto._onClose = function () {
    clearTimeout(this._firstCommandTimer)
    onClose.call(this)
    checkStress(this._server, this._server.options.onStress)
  }
  const close = proto.close
  proto.close = function () {
    close.call(this)
    checkStress(this._server, this._server.options.onStress)
  }
  const resetSession = proto._resetSession
  proto._resetSession = function () {
    resetSession.call(this)
    this._rcptIndex = NONE
  }
  const rcpt = proto.handler_RCPT
  proto.handler_RCPT = function (command, callback) {
    if (this._rcptIndex === NONE) this._rcptIndex = new Map()
    return rcpt.call(this, command, callback)
  }
  // Patch 19.
  for (const verb of ['DATA', 'RSET'] as const) {
    const handler = proto[`handler_${verb}`]
    proto[`handler_${verb}`] = function (command, callback) {
      const extra = /^\S+\s+\S/.test(command.toString('latin1'))
      if (extra && (verb === 'RSET' || this.session.envelope.rcptTo.length)) {
        this.send(501, replyText(CORE_REPLIES.noArgument(verb)), false)
        return callback()
      }
      return handler.call(this, command, callback)
    }
  }
  proto.upgrade = withHalfCloseAfterTls(withHandshakeDeadline(proto.upgrade))
  const auth = proto.handler_AUTH
  proto.handler_AUTH = function (command, callback) {
    if (this.session.envelope.mailFrom) {
      this.send(503, replyText(CORE_REPLIES.authInTransaction), false)
      return callback()
    }
    return auth.call(this, command, callback)
  }
  proto._parseAddressCommand = parseAddressCommandFor(proto._parseAddressCommand)
  proto._armTimeout = function (this: ConnectionInternals, socket?: Socket) {
    const s = (socket ?? this._socket) as TimedSocket
    s[CONNECTION] = this
    if (!s.listeners('timeout').includes(onIdleTimeout)) s.on('timeout', onIdleTimeout)
    s.setTimeout((this._relayIdle = idleLimit(this)))
  }
  proto._setListeners = function (this: ConnectionInternals, callback: () => void) {
    const socket = this._socket as FedSocket
    socket[CONNECTION] = this
    socket.on('close', onSocketClose)
    socket.on('error', onSocketError)
    this._armTimeout()
    if (this._parser) {
      socket[PARSER] = this._parser
      socket.on('data', onSocketData)
      socket.on('end', onSocketEnd)
      if (socket.readableEnded) process.nextTick(() => onSocketEnd.call(socket))
      else if (!socket.readableFlowing) socket.resume()
    }
    if (!this.needsUpgrade) return callback()
    this.upgrade(() => false, callback)
  }
  proto.init = function (this: ConnectionInternals) {
    const { firstCommandTimeout, greetingDelay, onFirstCommandTimeout, useXClient, useXForward } = this._server.options
    if (!useXClient) this._xClient = NONE
    if (!useXForward) this._xForward = NONE
    this._rcptIndex = NONE
    if (firstCommandTimeout) {
      this._firstCommandTimer = setTimeout(() => {
        this._firstCommandTimer = undefined
        if (this._closing || this._closed) return
        onFirstCommandTimeout?.(this.session)
        this.send(421, replyText(CORE_REPLIES.firstCommandTimeout(this.name)), OWN_LINE)
      }, firstCommandTimeout + (greetingDelay ?? 0))
      this._firstCommandTimer.unref()
    }
    this._setListeners(() => {
      const options = this._server.options
      // A client in smtp.trustedNetworks (the apps this relay serves) is let in past the cap: a
      // flood of idle connections from elsewhere must not shut it out (Postfix exempts mynetworks too).
      checkStress(this._server, options.onStress)
      if (options.maxClients && this._server.connections.size > options.maxClients && !options.trustedClient?.(this.remoteAddress)) {
        return this.send(421, replyText(CORE_REPLIES.tooManyClients(this.name)), false)
      }
      const delay = options.greetingDelay ?? 0
      if (delay <= 0) return this.connectionReady()
      setTimeout(() => this.connectionReady(), delay).unref()
    })
  }
}
