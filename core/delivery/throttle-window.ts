// Sliding-window arithmetic of the in-memory throttle (throttle.ts): start times, oldest first.

/**
 * When a new start is allowed under `limit` starts per `windowMs`: 0 now, else the time the oldest
 * start inside the window leaves it. A start at t counts while now < t + windowMs (as in Redis).
 */
export function windowRetryAt(starts: readonly number[], now: number, windowMs: number, limit: number): number {
  // Starts are in order: walk back from the newest to the first one inside the window.
  let i = starts.length
  while (i > 0 && starts[i - 1]! > now - windowMs) i--
  const inside = starts.length - i
  if (inside < limit) return 0
  // The start whose leaving frees a place: the (inside - limit + 1)-th oldest inside the window.
  return starts[i + inside - limit]! + windowMs
}
