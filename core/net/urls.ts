// URLs in what the relay logs: origin and path only. A URL's user info holds a password, its query
// string often a key; error messages of fetch and friends quote the whole URL.

/** `url` as origin and path: no user info, query or fragment ('[url]' when it does not parse). */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url)
    return `${u.origin}${u.pathname}`
  } catch {
    return '[url]'
  }
}

/** The text with every URL in it cut as safeUrl cuts it. */
export function scrubUrls(text: string): string {
  return text.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>`]*[^\s"'<>`,.;:!?)\]]/gi, safeUrl)
}
