// The worker thread of mail-auth's check pool (pool.ts): runs the CPU-heavy mailauth work (DKIM,
// ARC and DMARC checks of a message; ARC sealing) off the relay's event loop. Several jobs run at
// once (they mostly wait for DNS). The message arrives in chunks pulled from the main thread, so
// it is never held whole; DNS lookups go back to the main thread's resolver (config dns.servers,
// timeouts, failure metrics), answered with the same shapes and error codes.
import { parentPort } from 'node:worker_threads'
import { Readable } from 'node:stream'
import { checkMessage } from './checks.js'
import { sealMessage } from './arc-seal.js'
import type { ToWorker } from './pool.js'

const port = parentPort!
const sources = new Map<number, Readable>()
const lookups = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
let nextLookup = 0

function resolver(name: string, type: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const q = ++nextLookup
    lookups.set(q, { resolve, reject })
    port.postMessage({ type: 'dns', q, name, rrtype: type })
  })
}

/** Jobs whose message has been read to its end. */
const ended = new Set<number>()

/** The message of job `id`: each read asks the main thread for the next chunk. */
function messageStream(id: number): Readable {
  const stream = new Readable({ read: () => void (ended.has(id) || port.postMessage({ type: 'pull', id })) })
  sources.set(id, stream)
  return stream
}

async function run(m: Extract<ToWorker, { type: 'job' }>): Promise<void> {
  const message = messageStream(m.id)
  try {
    const result =
      m.job.kind === 'check'
        ? await checkMessage({ ...m.job.input, message, resolver })
        : await sealMessage(message, m.job.key, m.job.seal)
    port.postMessage({ type: 'done', id: m.id, result })
  } catch (err) {
    port.postMessage({ type: 'failed', id: m.id, error: err instanceof Error ? err.message : String(err) })
  } finally {
    sources.delete(m.id)
    ended.delete(m.id)
    message.destroy()
  }
}

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'job':
      void run(m)
      break
    case 'chunk':
      sources.get(m.id)?.push(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength))
      break
    case 'end':
      if (ended.has(m.id)) break
      ended.add(m.id)
      sources.get(m.id)?.push(null)
      break
    case 'dns': {
      const waiter = lookups.get(m.q)
      lookups.delete(m.q)
      if (!waiter) break
      if (m.error) waiter.reject(Object.assign(new Error(m.error.message), { code: m.error.code }))
      else waiter.resolve(m.result)
      break
    }
  }
})
// Loaded: the pool may count on this thread now.
port.postMessage({ type: 'ready' })
