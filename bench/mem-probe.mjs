// Preloaded into the relay by bench/idle-sessions.ts (`--import`): every second, the process's
// memory split (JS heap, external, array buffers, RSS) goes to $RELAY_MEM_PROBE_FILE, so the bench
// can tell where per-session memory lives without touching the relay's code.
import fs from 'node:fs'
import { isMainThread } from 'node:worker_threads'

const file = process.env.RELAY_MEM_PROBE_FILE
// Worker threads inherit --import: only the main thread reports.
if (file && isMainThread) {
  const write = () => {
    const m = process.memoryUsage()
    fs.writeFileSync(file, JSON.stringify({ at: Date.now(), ...m }))
  }
  setInterval(write, 1000).unref()
  write()
}
