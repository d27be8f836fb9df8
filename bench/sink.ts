// A minimal, fast receiving SMTP server for the benchmark (a child process): accepts everything,
// counts messages by their X-Bench-Seq header, reports counts to the parent over IPC.
import net from 'node:net'

// argv: PORT [HOSTS] — HOSTS a comma-separated list of loopback addresses (default 127.0.0.1),
// all on the same port (several "remote MX" servers in one process).
const port = Number(process.argv[2] ?? 0)
const hosts = (process.argv[3] ?? '127.0.0.1').split(',')
const seen = new Map<number, number>()
let messages = 0
let sessions = 0

const handle = (socket: net.Socket) => {
  sessions++
  socket.setNoDelay(true)
  let buf = ''
  let inData = false
  let data = ''
  socket.write('220 sink ESMTP\r\n')
  socket.on('data', (chunk) => {
    buf += chunk.toString('latin1')
    for (;;) {
      if (inData) {
        const end = buf.indexOf('\r\n.\r\n')
        if (end < 0) {
          // keep the tail that may hold a split terminator
          data += buf.slice(0, Math.max(0, buf.length - 4))
          buf = buf.slice(Math.max(0, buf.length - 4))
          return
        }
        data += buf.slice(0, end)
        buf = buf.slice(end + 5)
        inData = false
        const m = /X-Bench-Seq: (\d+)/.exec(data)
        if (m) seen.set(Number(m[1]), (seen.get(Number(m[1])) ?? 0) + 1)
        messages++
        data = ''
        socket.write('250 2.0.0 Ok\r\n')
        continue
      }
      const nl = buf.indexOf('\r\n')
      if (nl < 0) return
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 2)
      const cmd = line.slice(0, 4).toUpperCase()
      if (cmd === 'EHLO') socket.write('250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n')
      else if (cmd === 'DATA') {
        inData = true
        data = '\r\n'
        socket.write('354 go\r\n')
      } else if (cmd === 'QUIT') {
        socket.end('221 2.0.0 Bye\r\n')
        return
      } else socket.write('250 2.0.0 Ok\r\n')
    }
  })
  socket.on('error', () => undefined)
}

// Every host on the same port: the first picks the port (when 0), the others follow it.
async function listenAll(): Promise<number> {
  let p = port
  for (const host of hosts) {
    const server = net.createServer(handle)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(p, host, () => resolve())
    })
    p = (server.address() as net.AddressInfo).port
  }
  return p
}
void listenAll().then((p) => process.send?.({ type: 'listening', port: p }))

process.on('message', (msg: { type: string }) => {
  if (msg.type === 'stats') {
    let duplicates = 0
    for (const n of seen.values()) if (n > 1) duplicates += n - 1
    process.send?.({ type: 'stats', messages, unique: seen.size, duplicates, sessions })
  }
  if (msg.type === 'exit') process.exit(0)
})
