/**
 * The `senders` column as a list: a Postgres text[] or json/jsonb array (pg hands them over as
 * arrays), a JSON array in text ('["a@example.com","example.org"]'), a Postgres array literal in
 * text ('{a@example.com,example.org}'), or plain text separated by commas and/or white space.
 * NULL, a missing column or blank text give undefined (the relay's default: the user name, when it
 * is an address); an empty array gives [] (the user may send as nobody).
 */
export function parseSenders(value: unknown): string[] | undefined {
  if (value === null || value === undefined) return undefined
  if (Array.isArray(value)) return clean(value.flat(Infinity).map((v) => (v === null || v === undefined ? '' : String(v))))
  if (Buffer.isBuffer(value)) value = value.toString('utf8')
  if (typeof value !== 'string') return undefined
  const text = value.trim()
  if (text === '') return undefined
  if (text.startsWith('[')) {
    try {
      const parsed: unknown = JSON.parse(text)
      if (Array.isArray(parsed)) return parseSenders(parsed)
    } catch {
      // not JSON: read it as a list below
    }
  }
  const body = text.startsWith('{') && text.endsWith('}') ? text.slice(1, -1).replace(/"/g, '') : text
  return clean(body.split(/[\s,;]+/))
}

function clean(list: string[]): string[] {
  return [...new Set(list.map((s) => s.trim()).filter((s) => s !== ''))]
}
