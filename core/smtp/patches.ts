// Two adjustments to smtp-server's connection class (pinned at 3.21.x; see STACK.md):
// 1. With ENHANCEDSTATUSCODES on, smtp-server derives the enhanced code from the basic code, so a
//    plugin could never answer `550 5.7.1`. A reply text that already starts with an enhanced code
//    is sent as it is.
// 2. smtp-server waits a fixed 100 ms before the greeting (early-talker check). That caps a
//    one-message-per-connection client at 10 messages/s per session; the pause becomes the
//    server option `greetingDelay` (ms, default 0).
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js'

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /

interface ConnectionInternals {
  send(code: number, data: unknown, context?: unknown): void
  init(): void
  _setListeners(cb: () => void): void
  connectionReady(): void
  _server: { options: { maxClients?: number; greetingDelay?: number }; connections: Set<unknown> }
  name: string
}

let applied = false

export function patchSmtpServer(): void {
  if (applied) return
  applied = true
  const proto = (SMTPConnection as unknown as { prototype: ConnectionInternals }).prototype
  if (typeof proto.send !== 'function' || typeof proto._setListeners !== 'function' || typeof proto.connectionReady !== 'function') {
    throw new Error('smtp-server internals changed: check core/smtp/patches.ts against the installed version')
  }
  const send = proto.send
  proto.send = function (code, data, context) {
    if (typeof data === 'string' && ENHANCED.test(data)) return send.call(this, code, data, false)
    return send.call(this, code, data, context)
  }
  proto.init = function (this: ConnectionInternals) {
    this._setListeners(() => {
      const options = this._server.options
      if (options.maxClients && this._server.connections.size > options.maxClients) {
        return this.send(421, `4.7.0 ${this.name} Too many connected clients, try again in a moment`, false)
      }
      const delay = options.greetingDelay ?? 0
      if (delay <= 0) return this.connectionReady()
      setTimeout(() => this.connectionReady(), delay).unref()
    })
  }
}
