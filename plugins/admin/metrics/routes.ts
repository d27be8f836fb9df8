// Delivery results by route name (Route.name, from the routing plugin's config). The names come
// from config, so the set is small; still, a plugin could name routes freely, so at most
// MAX_ROUTE_LABELS names get a label value of their own and any later one counts as 'other'.
import { Counter, type Registry } from 'prom-client'
import type { DeliveryEvent } from '../../../core/index.js'

export const MAX_ROUTE_LABELS = 50

export class RouteResults {
  private readonly counter: Counter<'route' | 'result'>
  private readonly names = new Set<string>()

  constructor(registry: Registry) {
    this.counter = new Counter({
      name: 'relay_delivery_route_results_total',
      help: 'Delivery results (one per recipient and attempt) of mail sent through a named route, by route and result (delivered, deferred, bounced); a deferral includes waits at the route sending cap.',
      labelNames: ['route', 'result'],
      registers: [registry],
    })
  }

  /** Counts an event that went through a named route (events without one are not counted here). */
  count(result: 'delivered' | 'deferred' | 'bounced', e: DeliveryEvent): void {
    if (!e.routeName) return
    this.counter.inc({ route: this.label(e.routeName), result })
  }

  private label(name: string): string {
    if (this.names.has(name)) return name
    if (this.names.size >= MAX_ROUTE_LABELS) return 'other'
    this.names.add(name)
    return name
  }
}
