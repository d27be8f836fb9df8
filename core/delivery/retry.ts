import type { RelayConfig } from '../config/schema.js'

/** Delay before the next attempt, after `attempts` failed ones: base · factor^(attempts-1), capped. */
export function retryDelay(attempts: number, retry: RelayConfig['delivery']['retry']): number {
  return Math.min(retry.base * Math.pow(retry.factor, Math.max(0, attempts - 1)), retry.max)
}
