// A port that accepts connections and never answers: proof that a command made no connection
// (a connection attempt is counted, and a client waiting for a greeting would hang).
import net from 'node:net'

/** Runs `fn` with the port; resolves with how many connections were made to it meanwhile. */
export async function connectionsDuring(fn: (port: number) => Promise<void>): Promise<number> {
  let connections = 0
  const silent = net.createServer((sock) => (connections++, sock.on('error', () => undefined)))
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  try {
    await fn((silent.address() as net.AddressInfo).port)
    return connections
  } finally {
    silent.close()
  }
}
