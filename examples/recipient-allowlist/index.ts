// Recipient allow-list: only the addresses and domains listed in a file may receive mail. One entry
// a line: `alice@example.com`, or `@example.com` for a whole domain; `#` starts a comment. The file
// is read again when it changes. Unlisted recipients get 550 5.1.1; listed ones pass on to the next
// plugin (list relay-acl after this one, or use localDomains, to accept them).
import { definePlugin, reject, z } from 'relay-mta'

const options = z.object({
  /** The list. A relative path is taken from the config file's directory (ctx.resolvePath). */
  file: z.string().min(1),
  /** Check only recipients in these domains (default: every recipient). */
  domains: z.array(z.string().toLowerCase()).optional(),
})

const parse = (text: string): Set<string> => new Set(text.split('\n').map((l) => l.replace(/#.*/, '').trim().toLowerCase()).filter(Boolean))

export default definePlugin({
  name: 'recipient-allowlist',
  options,
  // watchFile reads the file now (a missing one stops the start) and again whenever it changes,
  // keeping the last copy that could be read; its path is taken from the config file's directory.
  setup: ({ options, watchFile }) => ({ list: watchFile(options.file, parse) }),
  hooks: {
    rcpt({ recipient, domain, options, state }) {
      if (options.domains && !options.domains.includes(domain.toLowerCase())) return
      const list = state.list.current
      if (list.has(recipient.address.toLowerCase()) || list.has(`@${domain.toLowerCase()}`)) return
      return reject('5.1.1', 'no such recipient here')
    },
  },
})
