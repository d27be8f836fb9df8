// A listening socket that cannot be bound: the message names the listener (`listen[0] 0.0.0.0:25`)
// and what to do when a port below 1024 is refused (EACCES), as Postfix's master does for its own.
export type ListenFailure = NodeJS.ErrnoException & { port?: number }

const REASONS: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EADDRNOTAVAIL: 'no such local address',
  EACCES: 'permission denied',
}

/** What to do about an EACCES on a port below 1024 (empty for any other failure). */
export function privilegedPortHint(err: ListenFailure | undefined): string {
  if (err?.code !== 'EACCES' || typeof err.port !== 'number' || err.port <= 0 || err.port >= 1024) return ''
  return `: ports below 1024 need root or the CAP_NET_BIND_SERVICE capability (the systemd unit deploy/relay.service grants it with AmbientCapabilities=CAP_NET_BIND_SERVICE)`
}

/** The bind failure as `<at>: <reason>[: hint]`, keeping code, syscall and port (the cause is the original). */
export function listenFailure(err: ListenFailure, at: string): ListenFailure {
  const reason = (err.code && REASONS[err.code]) ?? err.message
  return Object.assign(new Error(`${at}: ${reason}${privilegedPortHint(err)}`, { cause: err }), { code: err.code, syscall: err.syscall, port: err.port })
}
