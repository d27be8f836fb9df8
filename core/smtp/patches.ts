// Adjustments to smtp-server's connection class (pinned at 3.21.x; see STACK.md):
// 1. With ENHANCEDSTATUSCODES on, smtp-server derives the enhanced code from the basic code, so a
//    plugin could never answer `550 5.7.1`. A reply text that already starts with an enhanced code
//    is sent as it is.
// 2. smtp-server waits a fixed 100 ms before the greeting (early-talker check). That caps a
//    one-message-per-connection client at 10 messages/s per session; the pause becomes the
//    server option `greetingDelay` (ms, default 0).
// 3. `smtp.maxErrors` counts every 4xx/5xx reply of a session (smtp-server's own, like 503 or 501,
//    as well as the relay's): server option `maxErrors`; the reply that reaches it becomes 421.
// 4. smtp-server counts commands before AUTH (`maxAllowedUnauthenticatedCommands`) only while AUTH
//    is on offer; on a listener that requires AUTH it is hidden until STARTTLS, so those commands
//    are counted here as well.
// 5. Server option `firstCommandTimeout` (ms): a connection that sends no command that long after it
//    was accepted (plus `greetingDelay`) gets 421 4.4.2 and is closed, long before `socketTimeout`:
//    silent connections must not hold the slots of `maxClients`. `onFirstCommandTimeout(session)`
//    is told.
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js'
import { CORE_REPLIES, replyText } from '../hooks/verdict.js'

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /

interface ConnectionInternals {
  send(code: number, data: unknown, context?: unknown): void
  init(): void
  _setListeners(cb: () => void): void
  connectionReady(): void
  _onCommand(command: Buffer, callback: () => void): void
  _isDisabled(command: string): boolean
  _onClose(): void
  _server: {
    options: {
      maxClients?: number
      greetingDelay?: number
      maxErrors?: number
      onTooManyErrors?: (session: unknown) => void
      authOptional?: boolean
      firstCommandTimeout?: number
      onFirstCommandTimeout?: (session: unknown) => void
    }
    connections: Set<unknown>
  }
  name: string
  session: { user?: unknown }
  _ready?: boolean
  _upgrading?: boolean
  _nextHandler?: unknown
  _maxAllowedUnauthenticatedCommands: number | false
  _unauthenticatedCommands: number
  _relayErrors?: number
  _closing?: boolean
  _closed?: boolean
  _firstCommandTimer?: NodeJS.Timeout
}

let applied = false

export function patchSmtpServer(): void {
  if (applied) return
  applied = true
  const proto = (SMTPConnection as unknown as { prototype: ConnectionInternals }).prototype
  if (
    typeof proto.send !== 'function' ||
    typeof proto._setListeners !== 'function' ||
    typeof proto.connectionReady !== 'function' ||
    typeof proto._onCommand !== 'function' ||
    typeof proto._isDisabled !== 'function' ||
    typeof proto._onClose !== 'function'
  ) {
    throw new Error('smtp-server internals changed: check core/smtp/patches.ts against the installed version')
  }
  const send = proto.send
  proto.send = function (code, data, context) {
    const { maxErrors, onTooManyErrors } = this._server.options
    if (maxErrors && code >= 400 && code !== 421 && (this._relayErrors = (this._relayErrors ?? 0) + 1) >= maxErrors) {
      onTooManyErrors?.(this.session)
      return send.call(this, 421, replyText(CORE_REPLIES.tooManyErrors(this.name)), false)
    }
    if (typeof data === 'string' && ENHANCED.test(data)) return send.call(this, code, data, false)
    return send.call(this, code, data, context)
  }
  const onCommand = proto._onCommand
  proto._onCommand = function (command, callback) {
    if (this._firstCommandTimer) {
      clearTimeout(this._firstCommandTimer)
      this._firstCommandTimer = undefined
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
    return onClose.call(this)
  }
  proto.init = function (this: ConnectionInternals) {
    const { firstCommandTimeout, greetingDelay, onFirstCommandTimeout } = this._server.options
    if (firstCommandTimeout) {
      this._firstCommandTimer = setTimeout(() => {
        this._firstCommandTimer = undefined
        if (this._closing || this._closed) return
        onFirstCommandTimeout?.(this.session)
        this.send(421, replyText(CORE_REPLIES.firstCommandTimeout(this.name)), false)
      }, firstCommandTimeout + (greetingDelay ?? 0))
      this._firstCommandTimer.unref()
    }
    this._setListeners(() => {
      const options = this._server.options
      if (options.maxClients && this._server.connections.size > options.maxClients) {
        return this.send(421, replyText(CORE_REPLIES.tooManyClients(this.name)), false)
      }
      const delay = options.greetingDelay ?? 0
      if (delay <= 0) return this.connectionReady()
      setTimeout(() => this.connectionReady(), delay).unref()
    })
  }
}
