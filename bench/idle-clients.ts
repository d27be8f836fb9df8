// A child of bench/idle-sessions.ts that holds a share of the idle SMTP sessions (one process
// cannot hold 20,000 sockets when the descriptor limit is 20,000). Over IPC:
// {type:'open', port, from, to, perIp, parallel} opens sessions from..to-1, each from its
// 127.1.x.y source address: greeting, EHLO, its 250, then silence; answers
// {type:'opened', open, failures, dropped}. {type:'exit'} closes them all and exits.
import net from 'node:net'

const sockets: net.Socket[] = []
const dropped = { count: 0, last: '' }
let closing = false

/** The source address of idle session `i`: 127.1.x.y, `perIp` sessions each (never .0 or .255). */
export const sourceOf = (i: number, perIp: number) => {
  const j = Math.floor(i / perIp)
  return `127.1.${Math.floor(j / 250)}.${1 + (j % 250)}`
}

/** Reads SMTP replies off a socket: calls `onReply(code, line)` for each final reply line. */
export function onReplies(socket: net.Socket, onReply: (code: number, line: string) => void): void {
  let buf = ''
  socket.on('data', (d) => {
    buf += d.toString('latin1')
    for (let nl = buf.indexOf('\r\n'); nl >= 0; nl = buf.indexOf('\r\n')) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 2)
      if (line[3] !== '-') onReply(Number(line.slice(0, 3)), line)
    }
  })
}

/** One idle session: connect, greeting, EHLO, its 250; then the socket stays open and silent. */
function openIdle(port: number, i: number, perIp: number): Promise<net.Socket> {
  const from = sourceOf(i, perIp)
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: from })
    let settled = false
    let last = ''
    const fail = (why: string) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      reject(new Error(`session ${i} from ${from}: ${why}`))
    }
    const timer = setTimeout(() => fail('no EHLO reply within 30 s'), 30_000)
    let sentEhlo = false
    onReplies(socket, (code, line) => {
      last = line
      if (settled) return
      if (code !== 220 && code !== 250) return fail(line)
      if (!sentEhlo) {
        sentEhlo = true
        socket.write(`EHLO idle-${i}.bench.test\r\n`)
        return
      }
      settled = true
      clearTimeout(timer)
      resolve(socket)
    })
    socket.on('error', (err) => fail(err.message))
    // Once set up, a close the bench did not ask for is the relay dropping an idle session.
    socket.on('close', () => {
      if (!settled) return fail('closed during setup')
      if (closing) return
      dropped.count++
      dropped.last = last
    })
  })
}

interface Open {
  type: 'open'
  port: number
  from: number
  to: number
  perIp: number
  parallel: number
}

async function open(m: Open): Promise<void> {
  const failures: string[] = []
  let next = m.from
  await Promise.all(
    Array.from({ length: m.parallel }, async () => {
      while (next < m.to && failures.length < 20) {
        const i = next++
        try {
          sockets.push(await openIdle(m.port, i, m.perIp))
        } catch (err) {
          failures.push((err as Error).message)
        }
      }
    }),
  )
  process.send!({ type: 'opened', open: sockets.length, failures, dropped: dropped.count, lastDropReply: dropped.last })
}

// Only as the bench's child (imported by the bench for its helpers, it does nothing).
if (process.argv[2] === '--child') {
  process.on('message', (m: Open | { type: 'exit' | 'status' }) => {
    if (m.type === 'open') void open(m)
    if (m.type === 'status') process.send!({ type: 'status', open: sockets.length, dropped: dropped.count, lastDropReply: dropped.last })
    if (m.type === 'exit') {
      closing = true
      for (const s of sockets) s.destroy()
      process.exit(0)
    }
  })
  process.send!({ type: 'ready' })
}
