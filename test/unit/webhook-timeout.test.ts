// The webhook's per-POST timeout holds under garbage collection: a timeout signal inside
// AbortSignal.any() could be collected before it fired (nodejs/node#57736), and a POST to an
// endpoint that never answers then waited for undici's own 300 s header timeout.
import { execFile } from 'node:child_process'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

let server: http.Server
beforeAll(async () => {
  server = http.createServer((req) => req.resume()) // reads the POST, never answers
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
})
afterAll(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))

describe('webhook post', () => {
  it('gives up at its timeout while the process collects garbage all the time', async () => {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
    const script =
      `import { post } from ${JSON.stringify(path.join(process.cwd(), 'dist/plugins/webhook/sender.js'))}\n` +
      `const gcs = setInterval(() => globalThis.gc(), 20)\n` +
      `const started = Date.now()\n` +
      `const r = await post(${JSON.stringify(url)}, 'secret', '{}', 1000, new AbortController().signal)\n` +
      `clearInterval(gcs)\n` +
      `console.log(JSON.stringify({ ...r, ms: Date.now() - started }))\n`
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { timeout: 15_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    )
    const r = JSON.parse(out) as { ok: boolean; reason: string; ms: number }
    expect(r).toMatchObject({ ok: false, reason: 'no answer within 1000 ms' })
    expect(r.ms).toBeLessThan(5000)
  }, 30_000)
})
