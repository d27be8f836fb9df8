// A TCP proxy on loopback between the relay and a service (PostgreSQL, Redis), to take the service
// away without touching it: `cut` drops every connection and stops listening (a stopped or
// restarted server), `blackhole` keeps connections open but passes no byte either way, and takes
// new ones without ever answering (a lost network, a hung server); `hold` keeps what each side sends
// and passes it on at `restore` (a server that hung, then caught up with the commands sent
// meanwhile); `restore` brings it back.
import net from 'node:net'

export interface TcpProxy {
  /** The proxy's port on 127.0.0.1 (the same across cut and restore). */
  port: number
  /** `url` with its host and port pointing at the proxy. */
  via(url: string): string
  cut(): Promise<void>
  blackhole(): void
  /** The connections open now pass no byte ever again (a firewall or NAT lost their state); new ones work. */
  strandOpen(): void
  hold(): void
  restore(): Promise<void>
  close(): Promise<void>
  /** Connections made through the proxy so far. */
  connections(): number
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<{ a: net.Socket; b?: net.Socket }>()
  let mode: 'open' | 'blackhole' | 'hold' | 'cut' = 'open'
  let made = 0
  /** Bytes held (mode 'hold'), in order, to pass on at restore. */
  let held: { to: net.Socket; data: Buffer }[] = []
  const stranded = new WeakSet<net.Socket>()
  const pass = (to: net.Socket, data: Buffer) => {
    if (stranded.has(to)) return
    if (mode === 'open') to.write(data)
    else if (mode === 'hold') held.push({ to, data })
  }
  const onConnection = (a: net.Socket) => {
    made++
    const pair: { a: net.Socket; b?: net.Socket } = { a }
    pairs.add(pair)
    a.on('error', () => undefined)
    a.on('close', () => (pair.b?.destroy(), pairs.delete(pair)))
    if (mode === 'blackhole') return void a.on('data', () => undefined)
    const b = net.connect(target.port, target.host)
    pair.b = b
    b.on('error', () => a.destroy())
    b.on('close', () => a.destroy())
    // Bytes pass only while open: a blackholed pair swallows them.
    a.on('data', (d: Buffer) => pass(b, d))
    b.on('data', (d: Buffer) => pass(a, d))
  }
  let server = net.createServer(onConnection)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  const dropAll = () => {
    for (const p of pairs) (p.a.destroy(), p.b?.destroy())
    pairs.clear()
  }
  return {
    port,
    via(url) {
      const u = new URL(url)
      u.hostname = '127.0.0.1'
      u.port = String(port)
      return u.toString()
    },
    async cut() {
      mode = 'cut'
      dropAll()
      await new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))
    },
    blackhole() {
      mode = 'blackhole'
    },
    strandOpen() {
      for (const p of pairs) {
        stranded.add(p.a)
        if (p.b) stranded.add(p.b)
      }
    },
    hold() {
      mode = 'hold'
    },
    async restore() {
      // Connections held through a blackhole are dropped, as a network that comes back after the
      // peers' keepalives gave up; the clients reconnect.
      if (mode === 'blackhole') dropAll()
      mode = 'open'
      for (const { to, data } of held) if (!to.destroyed) to.write(data)
      held = []
      if (server.listening) return
      server = net.createServer(onConnection)
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', () => resolve()))
    },
    async close() {
      mode = 'cut'
      dropAll()
      await new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))
    },
    connections: () => made,
  }
}
