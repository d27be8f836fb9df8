// Configs that cannot be what the operator meant are refused by `relay check-config` and `relay
// start` (exit 2, nothing bound): a config file with no default export or nothing in it (not a
// silent run on the defaults).
import { describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { BIN, runCli, tempDir } from '../harness/relay.js'

const ENV = { RELAY_CONFIG: undefined, RELAY_SYSTEM_CONFIG_DIR: tempDir('relay-etc-empty-') }
const LISTEN = [{ host: '127.0.0.1', port: 37520, role: 'mx' }]

function fileIn(name: string, text: string): string {
  const file = path.join(tempDir('relay-cfgchk-'), name)
  fs.writeFileSync(file, text)
  return file
}

/** `relay start`: its exit, or null if it was still running after `ms` (then stopped). */
function startBriefly(file: string, ms = 8000): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'start', '--config', file], { cwd: path.dirname(file), env: { ...process.env, ...ENV }, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), ms)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code: signal === 'SIGKILL' ? null : code, stderr })
    })
  })
}

describe('a config file that holds no config', () => {
  const settings = `{ hostname: 'mine.example', listen: ${JSON.stringify(LISTEN)}, dataDir: './data' }`
  const noExport: [string, string][] = [
    ['relay.config.ts', `import { defineConfig } from 'relay-mta'\ndefineConfig(${settings})\n`],
    ['relay.config.ts', 'const x = 1\n'],
    ['relay.config.ts', `export const config = ${settings}\n`],
    ['relay.config.mjs', `const config = ${settings}\n`],
    ['relay.config.js', 'const x = 1\n'],
    ['relay.config.cjs', 'const x = 1\n'],
  ]

  it.each(noExport)('%s without a default export: check-config says so, exit 2 (%#)', (name, text) => {
    const file = fileIn(name, text)
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain(`invalid config in ${file}:`)
    expect(r.stderr).toContain('no default export: the file holds no config')
    expect(r.stdout).not.toContain('config ok')
  })

  it.each([
    ['relay.config.json', ''],
    ['relay.config.yaml', '# settings to come\n'],
    ['relay.config.ts', '\n'],
    ['.relayrc', ''],
  ])('an empty %s is an error, not the defaults', (name, text) => {
    const file = fileIn(name, text)
    const r = runCli(['check-config', '--config', file], { env: ENV })
    expect(r.code, r.stdout).toBe(2)
    expect(r.stderr).toContain(`invalid config in ${file}:`)
    expect(r.stderr).toContain('the file is empty: it holds no config')
    // Found by the search in the current directory too, rather than skipped for the next place.
    const found = runCli(['check-config'], { cwd: path.dirname(file), env: ENV })
    expect(found.code, found.stdout).toBe(2)
    expect(found.stderr).toContain(`invalid config in ${file}:`)
  })

  it('start refuses it (exit 2) and runs nothing on the defaults', async () => {
    const file = fileIn('relay.config.ts', `import { defineConfig } from 'relay-mta'\ndefineConfig(${settings})\n`)
    const r = await startBriefly(file)
    expect(r.code, r.stderr).toBe(2)
    expect(r.stderr).toContain(`invalid config in ${file}:`)
    expect(r.stderr).toContain('no default export')
    expect(fs.existsSync(path.join(path.dirname(file), 'data'))).toBe(false)
  })

  it('`export default {}` and module.exports still mean what they say', () => {
    for (const [name, text, hostname] of [
      ['relay.config.mjs', 'export default {}\n', undefined],
      ['relay.config.cjs', "module.exports = { hostname: 'cjs.example' }\n", 'cjs.example'],
      ['relay.config.json', '{}', undefined],
    ] as const) {
      const r = runCli(['check-config', '--config', fileIn(name, text)], { env: ENV })
      expect(r.code, r.stderr).toBe(0)
      if (hostname) expect(r.stdout).toContain(`hostname ${hostname}`)
    }
  })
})
