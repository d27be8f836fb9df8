// Header rewriter: on mail leaving for other domains, removes internal header fields (by name
// prefix, `X-Internal-` by default) and sets fields of its own. Mail for the relay's local domains
// keeps them. Runs at `data`, where `headers` can be changed before the message is queued.
import { definePlugin, z } from 'relay-mta'

const options = z.object({
  /** Field-name prefixes to remove (case-insensitive). */
  remove: z.array(z.string().min(1)).default(['X-Internal-']),
  /** Fields to set (replacing any the client sent), e.g. { 'X-Relayed-By': 'relay.example.com' }. */
  set: z.record(z.string(), z.string()).default({}),
})

const domainOf = (address: string) => address.slice(address.lastIndexOf('@') + 1).toLowerCase()

export default definePlugin({
  name: 'header-rewriter',
  options,
  hooks: {
    data({ envelope, headers, options, isLocalDomain, log }) {
      if (envelope.recipients.every((r) => isLocalDomain(domainOf(r.address)))) return
      const prefixes = options.remove.map((p) => p.toLowerCase())
      const names = new Set(headers.fields.map((f) => f.name).filter((n) => prefixes.some((p) => n.toLowerCase().startsWith(p))))
      for (const name of names) headers.remove(name)
      for (const [name, value] of Object.entries(options.set)) headers.set(name, value)
      if (names.size > 0) log.info({ removed: [...names] }, 'internal header fields removed')
      // No verdict: the message goes on to the next plugin and the queue.
    },
  },
})
