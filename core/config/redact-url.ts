// A connection string from the config made safe to show (`relay config show`, start errors, logs):
// the user-info password, and query parameters whose names say they carry a secret
// (`postgres://relay@db/relay?password=…` is accepted by pg, `…/hook?apikey=…` by many services).

export const REDACTED = '<redacted>'

/** Parameter names that carry a credential: password, pwd, secret, token, apikey, access_token, sig, X-Amz-Credential… */
const SECRET_PARAM = /pass|pwd|secret|token|key|auth|sig|credential|session|cookie/i

/** A host[:port] as consumers parse one (IPv6 in brackets); anything else means the user info ran on. */
const HOST_PORT = /^(\[[0-9a-z:.%]*\]|[^:@[\]]*)(:\d*)?$/i

/** `name=value&…` with the values of secret-named parameters replaced. */
function redactParams(params: string, mark: string): string {
  return params
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=')
      if (eq === -1) return pair
      let name = pair.slice(0, eq)
      try {
        name = decodeURIComponent(name.replace(/\+/g, ' '))
      } catch {
        // undecodable: judged as written
      }
      return SECRET_PARAM.test(name) ? `${pair.slice(0, eq)}=${mark}` : pair
    })
    .join('&')
}

/** The user info (everything before the host) without its password; a lone user part is redacted (some services put the token there). */
function redactUserinfo(userinfo: string, mark: string): string {
  const colon = userinfo.indexOf(':')
  return colon === -1 ? mark : `${userinfo.slice(0, colon)}:${mark}`
}

/** libpq's `host=db user=relay password=…` (values may be quoted). */
function redactKeyValues(value: string, mark: string): string {
  return value.replace(/(^|\s)([A-Za-z_][\w-]*)(\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)/g, (all, lead: string, name: string, eq: string) =>
    SECRET_PARAM.test(name) ? `${lead}${name}${eq}${mark}` : all,
  )
}

/**
 * `value` safe to show when it is a URL (`scheme://…`) or a key=value connection string; any other
 * string unchanged. The user info ends at the LAST `@` before the path, as URL parsers take it, so
 * an unencoded `@` in the password does not leave its tail showing; a `/` in it (which leaves no
 * valid host before the first `/`) is caught too. `mark` stands for what is cut.
 */
export function redactUrl(value: string, mark = REDACTED): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(value)
  if (!scheme) return /^\s*[A-Za-z_][\w-]*\s*=/.test(value) ? redactKeyValues(value, mark) : value
  let rest = value.slice(scheme[0].length)
  const authority = rest.slice(0, end(rest, 0))
  let at = authority.lastIndexOf('@')
  if (!HOST_PORT.test(authority.slice(at + 1))) {
    // No valid host where parsers look: a `/`, `?` or `#` in the password. The user info then ends
    // at the last `@` followed by a valid host; without one, nothing after the scheme is shown.
    at = [...rest.matchAll(/@/g)].map((m) => m.index).reverse().find((i) => i > 0 && HOST_PORT.test(rest.slice(i + 1, end(rest, i + 1)))) ?? -1
    if (at === -1) return `${scheme[0]}${mark}`
  }
  let out = ''
  if (at !== -1) {
    out = `${redactUserinfo(rest.slice(0, at), mark)}@`
    rest = rest.slice(at + 1)
  }
  const queryAt = rest.search(/[?#]/)
  if (queryAt === -1) return `${scheme[0]}${out}${rest}`
  // `?query#fragment`: both may carry parameters (an OAuth fragment has access_token=…).
  const tail = rest.slice(queryAt).replace(/([?#])([^#]*)/g, (_, sep: string, params: string) => `${sep}${redactParams(params, mark)}`)
  return `${scheme[0]}${out}${rest.slice(0, queryAt)}${tail}`
}

/** Where the authority that starts at `from` ends: the first `/`, `?` or `#`. */
function end(s: string, from: number): number {
  const i = s.slice(from).search(/[/?#]/)
  return i === -1 ? s.length : from + i
}
