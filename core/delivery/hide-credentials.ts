// A smarthost's replies (to AUTH above all, but any of the session's) go to events, queue
// listings and DSNs to senders. Some servers quote what they were sent: the account name, or the
// whole AUTH command with PLAIN's base64 "\0user\0password" (or LOGIN's base64 user and password).
// Neither form may leave the relay; the route's name (in the delivery event) says which credentials failed.

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

/** `text` with the user and password, as written or inside any base64 token, replaced by placeholders. */
export function hideCredentials(text: string, auth: { user: string; pass: string }): string {
  const secrets = [auth.user, auth.pass].filter((s) => s.length >= 3)
  // A base64 token (either alphabet, padded or not) that decodes to something holding a secret goes whole.
  let out = text.replace(/[A-Za-z0-9+/_-]{4,}={0,2}/g, (token) => {
    const decoded = Buffer.from(token, 'base64').toString('latin1')
    const asUtf8 = Buffer.from(token, 'base64').toString('utf8')
    return secrets.some((s) => decoded.includes(s) || asUtf8.includes(s)) ? '<credentials>' : token
  })
  for (const [secret, shown] of [[auth.user, '<user>'], [auth.pass, '<password>']] as const) {
    if (secret.length >= 3) out = out.replace(new RegExp(escape(secret), 'gi'), shown)
  }
  return out
}
