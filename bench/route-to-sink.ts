// Bench plugin: sends every message to one fixed next hop (no DNS), like Postfix's relayhost.
import { definePlugin, route, z } from '../core/index.js'

export default definePlugin({
  name: 'route-to-sink',
  options: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int() }),
  hooks: {
    deliver({ options }) {
      return route({ hosts: [options.host], port: options.port })
    },
  },
})
