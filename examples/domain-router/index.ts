// Domain router: mail for the listed domains goes to a fixed host instead of the domain's MX
// (a partner's gateway, an internal mail server). A `deliver` hook that returns route(); other
// domains get no verdict and are delivered by MX as usual.
import { definePlugin, route, z } from 'relay-mta'

const options = z.object({
  /** Domain → where to send its mail, e.g. { 'partner.example': { host: 'gw.partner.example' } }. */
  routes: z.record(
    z.string(),
    z.object({
      host: z.string().min(1),
      port: z.number().int().min(1).max(65535).default(25),
    }),
  ),
})

export default definePlugin({
  name: 'domain-router',
  options,
  hooks: {
    deliver({ domain, recipients, options, log }) {
      const to = Object.entries(options.routes).find(([d]) => d.toLowerCase() === domain.toLowerCase())?.[1]
      if (!to) return
      log.info({ domain, recipients: recipients.length, host: to.host, port: to.port }, 'routed')
      return route({ hosts: [to.host], port: to.port })
    },
  },
})
