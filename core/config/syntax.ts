// JSON and YAML configs that do not parse: the error names the line and column, as an editor does,
// instead of a position in bytes or a stack trace.
import { defaultLoaders, type Loader } from 'cosmiconfig'

/** A config file that does not parse; `line` and `column` count from 1. */
export class ConfigSyntaxError extends Error {
  constructor(
    readonly format: 'JSON' | 'YAML',
    readonly line: number,
    readonly column: number,
    readonly reason: string,
    readonly snippet?: string,
  ) {
    super(`${format} syntax error at line ${line}, column ${column}: ${reason}`)
    this.name = 'ConfigSyntaxError'
  }
}

/** Line and column (from 1) of a character offset. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)))
  const lines = before.split('\n')
  return { line: lines.length, column: lines.at(-1)!.length + 1 }
}

/** The lines around `line`, with a caret under `column`. */
function snippetAt(text: string, line: number, column: number): string {
  const lines = text.split('\n')
  const from = Math.max(1, line - 2)
  const width = String(line).length
  const out: string[] = []
  for (let n = from; n <= Math.min(line, lines.length); n++) out.push(`${String(n).padStart(width)} | ${lines[n - 1]}`)
  out.push(`${' '.repeat(width)} | ${' '.repeat(Math.max(0, column - 1))}^`)
  return out.join('\n')
}

export const loadJson: Loader = (_filepath, content) => {
  if (content.trim() === '') return undefined
  try {
    return JSON.parse(content) as unknown
  } catch (err) {
    const message = (err as Error).message
    // Node 20 says "at position N"; newer versions add "(line L column C)". Without either the text ended early.
    const lc = /\(line (\d+) column (\d+)\)/.exec(message)
    const pos = /at position (\d+)/.exec(message)
    const { line, column } = lc ? { line: Number(lc[1]), column: Number(lc[2]) } : lineColumn(content, pos ? Number(pos[1]) : content.length)
    const reason = message.replace(/\s*\(line \d+ column \d+\)/, '').replace(/ in JSON at position \d+.*$/s, '').replace(/^JSON\.parse: /, '')
    throw new ConfigSyntaxError('JSON', line, column, reason, snippetAt(content, line, column))
  }
}

export const loadYaml: Loader = async (filepath, content) => {
  try {
    return await defaultLoaders['.yaml'](filepath, content)
  } catch (err) {
    // js-yaml's YAMLException: `reason`, and `mark` with a line and column counted from 0.
    const e = err as { reason?: string; mark?: { line: number; column: number } }
    if (!e.mark) throw err
    const line = e.mark.line + 1
    const column = e.mark.column + 1
    throw new ConfigSyntaxError('YAML', line, column, e.reason ?? 'invalid YAML', snippetAt(content, line, column))
  }
}
