import type { RelayOperations } from '../../core/index.js'
import type { RecentEvents } from './recent-events.js'
import type { RelayMetrics } from './metrics/relay-metrics.js'

/** Given to every module that registers admin routes (routes/index.ts). */
export interface AdminContext {
  /** The running relay's operator API (queue verbs, reload, readiness, counts, reputation thresholds). */
  relay: RelayOperations
  recent: RecentEvents
  metrics: RelayMetrics
  /** Config `hostname`: the right side of Message-IDs the relay makes (never the machine's name). */
  hostname: string
}
