// A plain TCP server scripted by the test (a misbehaving SMTP peer: trickling, extra replies, 421s),
// on one loopback address and port; each server is added to `servers` for the test to close.
import net from 'node:net'

/** Listens on `host`:`port` (0: any free port), runs `onConnection` for each client; resolves with the port. */
export async function listenRaw(servers: net.Server[], host: string, port: number, onConnection: (sock: net.Socket) => void): Promise<number> {
  const server = net.createServer((sock) => {
    sock.on('error', () => undefined)
    onConnection(sock)
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(port, host, resolve))
  return (server.address() as net.AddressInfo).port
}
