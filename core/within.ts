// A promise given up on after `ms`: config files, plugin modules, setups and teardowns are user
// code that may never settle. The work itself cannot be cancelled; the caller goes on without it.

/** `work`, or a rejection with `error()` once `ms` have passed (the timer keeps the process alive until then). */
export function within<T>(work: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(error()), ms)
  })
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer))
}
