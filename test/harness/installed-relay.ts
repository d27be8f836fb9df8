// `relay start` of a project that installed relay-mta (node_modules/.bin/relay), as its user runs it:
// the config is found by search from `dir`. Resolves once it listens, with the JSON log lines so far
// (and those to come); rejects naming `dir` and showing stderr when it exits or does not start in 20 s.
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'

export interface InstalledRelay {
  child: ChildProcess
  port: number
  logs: Record<string, unknown>[]
}

export function startInstalledRelay(dir: string, env: NodeJS.ProcessEnv): Promise<InstalledRelay> {
  const child = spawn(process.execPath, [path.join(dir, 'node_modules/.bin/relay'), 'start'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const logs: Record<string, unknown>[] = []
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`relay did not start in 20 s in ${dir}: ${stderr}`))
    }, 20_000)
    let buf = ''
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        try {
          logs.push(JSON.parse(line) as Record<string, unknown>)
        } catch {
          logs.push({ msg: line })
        }
      }
      const listening = logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('listening on'))
      if (listening && logs.some((l) => l.msg === 'relay started')) {
        clearTimeout(timer)
        resolve({ child, port: listening.port as number, logs })
      }
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`relay exited with ${code} in ${dir}: ${stderr}`))
    })
  })
}

/** The relay.config.ts such a project writes: loopback, the test DNS and receiver, `plugin` refusing `nobody` before relay-acl. */
export function installedRelayConfig(plugin: string, dnsServer: string, mxPort: number): string {
  return `import { defineConfig } from 'relay-mta'

export default defineConfig({
  hostname: 'relay.example.com',
  listen: [{ host: '127.0.0.1', port: 0, role: 'mx' }],
  dataDir: './data',
  dns: { servers: ['${dnsServer}'] },
  delivery: { port: ${mxPort} },
  smtp: { reverseLookup: false },
  plugins: [
    ['${plugin}', { block: ['nobody'] }],
    'relay-acl',
  ],
})
`
}
