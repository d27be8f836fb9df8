// Prometheus metrics of the relay (GET /metrics on the admin listener).
export { RelayMetrics, type MetricsOptions, type SessionCounts } from './relay-metrics.js'
export { DomainLabels } from './domains.js'
export { registerMetricsRoute } from './route.js'
