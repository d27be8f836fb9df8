// docs/plugins.md's hook reference against the types: every hook and event in core/hooks/types.ts
// (HookContexts, EventContexts) has a row in the reference table and every row is a real hook; each
// row names what its hook's ctx holds; every PluginContext member is in "Context helpers".
import { describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import ts from 'typescript'
import { ROOT } from './harness/relay.js'

const TYPES = path.join(ROOT, 'core/hooks/types.ts')
const DOC = path.join(ROOT, 'docs/plugins.md')

const source = ts.createSourceFile(TYPES, fs.readFileSync(TYPES, 'utf8'), ts.ScriptTarget.Latest, true)

function iface(name: string): ts.InterfaceDeclaration {
  const found = source.statements.find((s): s is ts.InterfaceDeclaration => ts.isInterfaceDeclaration(s) && s.name.text === name)
  if (!found) throw new Error(`interface ${name} not found in core/hooks/types.ts`)
  return found
}

/** Member names of an interface or type literal, with their type nodes. */
function members(node: ts.InterfaceDeclaration | ts.TypeLiteralNode): Map<string, ts.TypeNode | undefined> {
  const out = new Map<string, ts.TypeNode | undefined>()
  for (const m of node.members) {
    if ((ts.isPropertySignature(m) || ts.isMethodSignature(m)) && m.name && (ts.isIdentifier(m.name) || ts.isStringLiteral(m.name))) {
      out.set(m.name.text, ts.isPropertySignature(m) ? m.type : undefined)
    }
  }
  return out
}

const hooks = members(iface('HookContexts'))
const events = members(iface('EventContexts'))
const contextMembers = [...members(iface('PluginContext')).keys()]

const doc = fs.readFileSync(DOC, 'utf8')
function section(heading: string): string {
  const start = doc.indexOf(`\n## ${heading}\n`)
  if (start < 0) throw new Error(`docs/plugins.md has no "## ${heading}" section`)
  const end = doc.indexOf('\n## ', start + 1)
  return doc.slice(start, end < 0 ? undefined : end)
}

// Rows of the reference table: | `name` | runs | ctx | ... |
const reference = section('Hook reference')
const rows = new Map<string, string[]>()
for (const line of reference.split('\n')) {
  const m = /^\|\s*`(\w+)`\s*\|/.exec(line)
  if (!m) continue
  if (rows.has(m[1]!)) throw new Error(`docs/plugins.md: hook ${m[1]} has two rows`)
  rows.set(m[1]!, line.split('|').slice(1, -1).map((c) => c.trim()))
}

describe('docs/plugins.md hook reference', () => {
  it('finds the hooks and events in the types and the rows in the docs (the parsers work)', () => {
    expect(hooks.size).toBeGreaterThanOrEqual(8)
    expect(events.size).toBeGreaterThanOrEqual(5)
    expect(hooks.has('rcpt') && events.has('delivered')).toBe(true)
    expect(rows.size).toBeGreaterThanOrEqual(13)
  })

  it('has a row for every hook and event in core/hooks/types.ts', () => {
    const missing = [...hooks.keys(), ...events.keys()].filter((h) => !rows.has(h))
    expect(missing, `add these to the "Hook reference" table of docs/plugins.md: ${missing.join(', ')}`).toEqual([])
  })

  it('documents no hook or event the types do not have', () => {
    const unknown = [...rows.keys()].filter((h) => !hooks.has(h) && !events.has(h))
    expect(unknown, `not in HookContexts/EventContexts of core/hooks/types.ts: ${unknown.join(', ')}`).toEqual([])
  })

  it("names every member of each hook's ctx (or its type) in the row's ctx column", () => {
    const gaps: string[] = []
    for (const [name, type] of [...hooks, ...events]) {
      const ctx = rows.get(name)?.[2]
      if (ctx === undefined || !type) continue
      const wanted = ts.isTypeLiteralNode(type) ? [...members(type).keys()] : ts.isTypeReferenceNode(type) ? [type.typeName.getText(source)] : []
      for (const w of wanted) if (!ctx.includes(`\`${w}\``)) gaps.push(`${name}: \`${w}\``)
    }
    expect(gaps, 'missing from the ctx column of docs/plugins.md').toEqual([])
  })

  it('describes every PluginContext member under "Context helpers"', () => {
    const helpers = section('Context helpers')
    expect(contextMembers.length).toBeGreaterThanOrEqual(5)
    const missing = contextMembers.filter((m) => !helpers.includes(`\`${m}\``) && !helpers.includes(`\`${m}(`))
    expect(missing).toEqual([])
  })
})
