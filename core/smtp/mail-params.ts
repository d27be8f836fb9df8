// Patch 21 (core/smtp/patches.ts): REQUIRETLS (RFC 8689) is not offered (hideREQUIRETLS), yet
// smtp-server still judged the parameter, so in plain text it got 530 "not permitted on non-TLS
// connections", as if TLS would help. It is left to the relay's check of unknown parameters:
// 555 5.5.4, with or without TLS.
import type { ConnectionInternals } from './connection-internals.js'

export function withoutUnofferedRequireTls(validate: ConnectionInternals['_validateMailParams']): ConnectionInternals['_validateMailParams'] {
  return function (this: ConnectionInternals, parsed) {
    if (!this._server.options.hideREQUIRETLS || !parsed.args || parsed.args.REQUIRETLS === undefined) return validate.call(this, parsed)
    const { REQUIRETLS: _, ...args } = parsed.args
    return validate.call(this, { ...parsed, args })
  }
}
