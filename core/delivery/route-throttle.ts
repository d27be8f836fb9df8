// Sending caps of a named route as a whole (Route.limits: concurrency, perSecond, perMinute), on
// top of the domain and MX host limits: a smarthost such as SES has one sending-rate quota whatever
// addresses its endpoint resolves to. The counters live in the throttle under 'r:<name>' (shared
// through Redis with delivery.throttle.redis). At the cap, the attempt waits here for a slot; when
// none comes within the wait, it is deferred to when one may be free (retryAt), not failed.
import type { Route } from '../hooks/types.js'
import type { Throttle } from './throttle.js'

export type RouteGate = { ok: true; release: () => void } | { ok: false; retryAt: number; response: string }

const OPEN: RouteGate = { ok: true, release: () => undefined }

/** Attempts of this process waiting for each route's slot now. */
const waiting = new Map<string, number>()
/** When the next attempt deferred for want of a waiting place is due, by route: a queue at the cap's rate. */
const turns = new Map<string, number>()

/** Attempts per second the caps allow at most (a concurrency alone: about one per slot per second). */
function perSecond(limits: NonNullable<Route['limits']>): number {
  const rates = [limits.perSecond, limits.perMinute === undefined ? undefined : limits.perMinute / 60].filter((v): v is number => v !== undefined)
  return rates.length ? Math.min(...rates) : limits.concurrency!
}

/** A route's caps as given, or a reason they are unusable. */
export function checkRouteLimits(route: Route): string | undefined {
  if (!route.limits) return undefined
  if (!route.name) return 'a route with limits needs a name'
  for (const [k, v] of Object.entries(route.limits)) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) return `limits.${k} must be a positive integer`
  }
  return undefined
}

/**
 * Waits (up to `waitMs`, never past a known refusal time beyond it) for a slot of route `name`.
 * Each waiter holds a delivery slot, so at most `maxWaiters` wait per route (and no more than the
 * caps can admit within the wait): the others are deferred at once, to about when their turn comes,
 * leaving the node's slots to other destinations. No limits or no throttle: open at once.
 */
export async function admitRoute(throttle: Throttle | undefined, route: Route | undefined, waitMs: number, maxWaiters = Infinity): Promise<RouteGate> {
  const limits = route?.limits
  const name = route?.name
  if (!throttle || !limits || !name || Object.values(limits).every((v) => v === undefined)) return OPEN
  const refused = (retryAt: number, now: number): RouteGate => ({
    ok: false,
    retryAt: Math.max(retryAt, now + 1000),
    response: `4.4.5 Route ${name} is at its sending cap (${describe(limits)}); waiting for a slot`,
  })
  const first = await throttle.admitRoute(name, limits)
  if (first.ok) return { ok: true, release: () => throttle.release(first.slot) }
  const rate = perSecond(limits)
  const already = waiting.get(name) ?? 0
  const room = Math.min(maxWaiters, Math.ceil((rate * waitMs) / 1000))
  if (already >= room) {
    // Behind the waiters and the attempts deferred before it, one turn each at the cap's rate.
    const now = Date.now()
    const step = 1000 / rate
    const at = Math.max(turns.get(name) ?? 0, now + Math.ceil(room * step), first.retryAt)
    turns.set(name, at + step)
    return refused(at, now)
  }
  waiting.set(name, already + 1)
  try {
    const deadline = Date.now() + waitMs
    let retryAt = first.retryAt
    // Bounded: each turn sleeps at least 20 ms and the loop ends at the deadline.
    for (;;) {
      const now = Date.now()
      if (now >= deadline || retryAt > deadline) return refused(retryAt, now)
      const delay = retryAt > now ? retryAt - now : 100
      await new Promise((resolve) => setTimeout(resolve, Math.max(20, Math.min(delay, 250, deadline - now))))
      const admission = await throttle.admitRoute(name, limits)
      if (admission.ok) return { ok: true, release: () => throttle.release(admission.slot) }
      retryAt = admission.retryAt
    }
  } finally {
    const n = (waiting.get(name) ?? 1) - 1
    if (n > 0) waiting.set(name, n)
    else waiting.delete(name)
  }
}

function describe(limits: NonNullable<Route['limits']>): string {
  const parts: string[] = []
  if (limits.concurrency !== undefined) parts.push(`concurrency ${limits.concurrency}`)
  if (limits.perSecond !== undefined) parts.push(`${limits.perSecond}/s`)
  if (limits.perMinute !== undefined) parts.push(`${limits.perMinute}/min`)
  return parts.join(', ')
}
