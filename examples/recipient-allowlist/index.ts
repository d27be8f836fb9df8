// Recipient allow-list: only the addresses and domains listed in a file may receive mail. One entry
// a line: `alice@example.com`, or `@example.com` for a whole domain; `#` starts a comment. The file
// is read again when it changes. Unlisted recipients get 550 5.1.1; listed ones pass on to the next
// plugin (list relay-acl after this one, or use localDomains, to accept them).
import fs from 'node:fs'
import path from 'node:path'
import { definePlugin, reject, tempfail, z } from 'relay-mta'

const options = z.object({
  /** The list. A relative path is taken from the relay's working directory. */
  file: z.string().min(1),
  /** Check only recipients in these domains (default: every recipient). */
  domains: z.array(z.string().toLowerCase()).optional(),
})

const lists = new Map<string, { stamp: string; entries: Set<string> }>()
function entries(file: string): Set<string> {
  const st = fs.statSync(file)
  const stamp = `${st.mtimeMs}:${st.size}`
  let list = lists.get(file)
  if (list?.stamp !== stamp) {
    const lines = fs.readFileSync(file, 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim().toLowerCase())
    lists.set(file, (list = { stamp, entries: new Set(lines.filter(Boolean)) }))
  }
  return list.entries
}

export default definePlugin({
  name: 'recipient-allowlist',
  options,
  setup: ({ options }) => void entries(path.resolve(options.file)), // a missing file stops the start
  hooks: {
    rcpt({ recipient, domain, options, log }) {
      if (options.domains && !options.domains.includes(domain.toLowerCase())) return
      let list: Set<string>
      try {
        list = entries(path.resolve(options.file))
      } catch (err) {
        log.error({ err }, 'cannot read the allow-list')
        return tempfail('4.3.0', 'recipient check unavailable, try again later')
      }
      if (list.has(recipient.address.toLowerCase()) || list.has(`@${domain.toLowerCase()}`)) return
      return reject('5.1.1', 'no such recipient here')
    },
  },
})
