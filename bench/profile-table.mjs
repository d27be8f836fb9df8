// node bench/profile-table.mjs DIR|FILE...  — self time of V8 CPU profiles (node --cpu-prof) grouped
// by where the code lives: a package in node_modules, a part of Relay (core/smtp, core/queue, ...),
// node's own internals by module, GC, idle. One table per profile (main thread, queue worker, ...).
import fs from 'node:fs'
import path from 'node:path'

const files = process.argv.slice(2).flatMap((p) => (fs.statSync(p).isDirectory() ? fs.readdirSync(p).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(p, f)) : [p]))

function groupOf(frame) {
  const url = frame.url || ''
  const fn = frame.functionName
  if (!url) {
    if (fn === '(idle)' || fn === '(program)' || fn === '(garbage collector)') return fn
    return `native: ${fn || '(anonymous)'}`
  }
  const nm = url.lastIndexOf('node_modules/')
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/')
    return `pkg: ${rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`
  }
  const relay = /\/dist\/((?:core|plugins)\/[^/]+)/.exec(url) ?? /\/((?:core|plugins)\/[^/]+)/.exec(url)
  if (relay) return `relay: ${relay[1].replace(/\.js$/, '')}`
  if (url.startsWith('node:')) return `node: ${url.slice(5).split('/').slice(0, 2).join('/')}`
  return `other: ${path.basename(url)}`
}

for (const file of files) {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'))
  const byId = new Map(prof.nodes.map((n) => [n.id, n]))
  const self = new Map()
  // samples[i] ran for timeDeltas[i+1] (V8's layout); sum the time per node, then per group.
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i + 1] ?? 0
    const node = byId.get(prof.samples[i])
    const g = groupOf(node.callFrame)
    self.set(g, (self.get(g) ?? 0) + dt)
  }
  const idle = self.get('(idle)') ?? 0
  const total = [...self.values()].reduce((a, b) => a + b, 0)
  const busy = total - idle
  console.log(`\n${path.basename(file)}: ${(total / 1000).toFixed(0)} ms profiled, ${(busy / 1000).toFixed(0)} ms busy (${((busy / total) * 100).toFixed(0)} %)`)
  console.log('| where | ms | % of busy |\n|---|---|---|')
  for (const [g, us] of [...self].filter(([g]) => g !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.TOP ?? 25))) {
    console.log(`| ${g} | ${(us / 1000).toFixed(0)} | ${((us / busy) * 100).toFixed(1)} |`)
  }
}
