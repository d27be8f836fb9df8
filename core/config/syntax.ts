// Config files (and plugin files) that do not parse: the error names the file, line and column, as
// an editor does, instead of a position in bytes, a bare "Transform failed" or a stack trace.
import fs from 'node:fs'
import module from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { defaultLoaders, type Loader } from 'cosmiconfig'
import { maskSecretsInLine, maskSecretsInReason } from './redact.js'

export type SyntaxFormat = 'JSON' | 'YAML' | 'TypeScript' | 'JavaScript'

/**
 * A config file that does not parse; `line` and `column` count from 1. `file` is the file at fault
 * when it is not the config itself (a module the config imports).
 */
export class ConfigSyntaxError extends Error {
  constructor(
    readonly format: SyntaxFormat,
    readonly line: number,
    readonly column: number,
    readonly reason: string,
    readonly snippet?: string,
    readonly file?: string,
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

/** Control characters (an ESC sequence would drive the terminal) as `?`, as the CLI prints text from outside. */
const printable = (s: string) => s.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, '?')

/** The lines (from 1) around `line` that an error shows. */
const around = (text: string, line: number) => text.split('\n').slice(Math.max(0, line - 3), line)

/** The lines around `line`, with a caret under `column`; secrets in them starred out. */
function snippetAt(text: string, line: number, column: number): string {
  const lines = around(text, line)
  const width = String(line).length
  const out = lines.map((l, i) => `${String(line - lines.length + 1 + i).padStart(width)} | ${printable(maskSecretsInLine(l))}`)
  out.push(`${' '.repeat(width)} | ${' '.repeat(Math.max(0, column - 1))}^`)
  return out.join('\n')
}

/** A parser's reason, with no secret it quotes from the lines around `line` and no control characters. */
const safeReason = (reason: string, text: string | undefined, line: number) => printable(text === undefined ? reason : maskSecretsInReason(reason, around(text, line)))

/** Where js-yaml (through cosmiconfig's loader) stops reading `content`, from 0; undefined if it reads it. */
function yamlMark(filepath: string, content: string): { line: number; column: number } | undefined {
  try {
    void defaultLoaders['.yaml'](filepath, content)
    return undefined
  } catch (err) {
    return (err as { mark?: { line: number; column: number } }).mark
  }
}

/**
 * The first key an object of the JSON text holds twice: JSON.parse keeps the last, so the first
 * (a whole `"smtp": { … }` block) would be dropped without a word. The text has parsed already.
 */
function duplicateKey(text: string): { key: string; index: number } | undefined {
  const objects: (Set<string> | undefined)[] = [] // undefined: an array
  let keyNext = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === '"') {
      let end = i + 1
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1
      const keys = objects.at(-1)
      if (keys && keyNext) {
        const key = JSON.parse(text.slice(i, end + 1)) as string
        if (keys.has(key)) return { key, index: i }
        keys.add(key)
        keyNext = false
      }
      i = end
    } else if (c === '{') {
      objects.push(new Set())
      keyNext = true
    } else if (c === '[') objects.push(undefined)
    else if (c === '}' || c === ']') objects.pop()
    else if (c === ',') keyNext = objects.at(-1) !== undefined
  }
  return undefined
}

export const loadJson: Loader = (filepath, raw) => {
  // A byte order mark (some Windows editors write one) is no JSON syntax error.
  const content = raw.replace(/^\uFEFF/, '')
  if (content.trim() === '') return undefined
  try {
    const value = JSON.parse(content) as unknown
    // `null` is a value, not an empty file: said as what it is (as a module's `export default null`).
    if (value === null) throw Object.assign(new Error('the file holds null: no config ({} asks for the defaults)'), { filepath })
    const dup = duplicateKey(content)
    if (dup) {
      const { line, column } = lineColumn(content, dup.index)
      throw new ConfigSyntaxError('JSON', line, column, `the key ${JSON.stringify(dup.key)} is given twice in one object: JSON keeps only the last, so merge them`, snippetAt(content, line, column))
    }
    return value
  } catch (err) {
    if (err instanceof ConfigSyntaxError || (err as { filepath?: unknown }).filepath === filepath) throw err
    const message = (err as Error).message
    // Node 20 says "at position N" for some errors, newer versions add "(line L column C)"; for the
    // rest (`Unexpected token ','`) the YAML parser, which reads JSON too, finds the place.
    const lc = /\(line (\d+) column (\d+)\)/.exec(message)
    const pos = /at position (\d+)/.exec(message)
    // The input ended early: where it ends (the YAML parser names the line after the last).
    const ended = !lc && !pos && /Unexpected end of JSON input/.test(message) ? lineColumn(content, content.trimEnd().length) : undefined
    const mark = lc || pos ? undefined : ended ? { line: ended.line - 1, column: ended.column - 1 } : yamlMark(filepath, content)
    const { line, column } = lc
      ? { line: Number(lc[1]), column: Number(lc[2]) }
      : mark
        ? { line: mark.line + 1, column: mark.column + 1 }
        : lineColumn(content, pos ? Number(pos[1]) : content.length)
    // V8 quotes the text around the error (`Unexpected token ',', ..."abc",, is not valid JSON`): cut.
    const reason = message.replace(/\s*\(line \d+ column \d+\)/, '').replace(/ in JSON at position \d+.*$/s, '').replace(/^JSON\.parse: /, '').replace(/,\s*(?:"|\.\.\.)[\s\S]*$/, '')
    throw new ConfigSyntaxError('JSON', line, column, safeReason(reason, content, line), snippetAt(content, line, column))
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
    throw new ConfigSyntaxError('YAML', line, column, safeReason(e.reason ?? 'invalid YAML', content, line), snippetAt(content, line, column))
  }
}

/** esbuild's message (as tsx passes it on, often without its `errors` array): `file:line:col: ERROR: reason`. */
const ESBUILD_LINE = /^(.+?):(\d+):(\d+): ERROR: (.+)$/m

interface EsbuildMessage {
  text?: string
  location?: { file?: string; line?: number; column?: number } | null
}

function formatOf(file: string): SyntaxFormat {
  return /\.[cm]?tsx?$/.test(file) ? 'TypeScript' : 'JavaScript'
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}

function syntaxError(file: string, line: number, column: number, reason: string, content?: string): ConfigSyntaxError {
  const text = content ?? readText(file)
  return new ConfigSyntaxError(formatOf(file), line, column, safeReason(reason, text, line), text === undefined ? undefined : snippetAt(text, line, column), file)
}

/** esbuild, as tsx uses it: found beside this module or beside tsx (whose dependency it is). */
function esbuild(): { transformSync: (code: string, options: object) => unknown } | undefined {
  const require = module.createRequire(import.meta.url)
  for (const from of [import.meta.url, () => require.resolve('tsx')]) {
    try {
      const base = typeof from === 'string' ? from : from()
      return module.createRequire(base)('esbuild') as { transformSync: (code: string, options: object) => unknown }
    } catch {
      // next place
    }
  }
  return undefined
}

/**
 * A TypeScript or JavaScript module (config or plugin) that failed to import because it does not
 * parse, as a ConfigSyntaxError naming the file, line and column; undefined for any other error.
 * `filepath`/`content` are the module that was imported; the error may be in a module it imports.
 */
export function moduleSyntaxError(err: unknown, filepath: string, content?: string): ConfigSyntaxError | undefined {
  if (err instanceof ConfigSyntaxError) return err
  const e = err as { errors?: EsbuildMessage[]; message?: unknown; name?: unknown } | null
  if (!e || typeof e !== 'object') return undefined
  const same = (f: string) => path.resolve(f) === path.resolve(filepath)
  // tsx hands esbuild an .mts/.cts file under a .ts name: name the file that is really there.
  const real = (f: string) => {
    if (!f.endsWith('.ts')) return f
    if (/\.[mc]ts$/.test(filepath) && path.resolve(filepath.replace(/\.[mc]ts$/, '.ts')) === f) return path.resolve(filepath)
    if (fs.existsSync(f)) return f
    return ['.mts', '.cts'].map((ext) => f.replace(/\.ts$/, ext)).find((g) => fs.existsSync(g)) ?? f
  }
  // tsx/esbuild: the error names the file, line and column (esbuild counts columns from 0).
  const first = Array.isArray(e.errors) ? e.errors.find((m) => m?.location?.file && m.location.line) : undefined
  if (first?.location?.file && first.location.line) {
    const file = real(path.resolve(first.location.file))
    return syntaxError(file, first.location.line, (first.location.column ?? 0) + 1, first.text ?? 'syntax error', same(file) ? content : undefined)
  }
  const message = typeof e.message === 'string' ? e.message : ''
  const m = /^Transform failed with \d+ errors?:/.test(message) ? ESBUILD_LINE.exec(message) : null
  if (m) {
    const file = real(m[1]!.startsWith('file:') ? fileURLToPath(m[1]!) : path.resolve(m[1]!))
    return syntaxError(file, Number(m[2]), Number(m[3]) + 1, m[4]!.trim(), same(file) ? content : undefined)
  }
  // Node's own SyntaxError for a .js/.mjs module carries no position: esbuild finds it in the text.
  if (e.name === 'SyntaxError' && !/\.[cm]?tsx?$/.test(filepath)) {
    const text = content ?? readText(filepath)
    const build = text === undefined ? undefined : esbuild()
    if (text === undefined || !build) return undefined
    try {
      build.transformSync(text, { loader: 'js', format: 'esm', sourcefile: filepath, logLevel: 'silent' })
    } catch (found) {
      const loc = (found as { errors?: EsbuildMessage[] }).errors?.[0]?.location
      if (loc?.line) return syntaxError(filepath, loc.line, (loc.column ?? 0) + 1, message || 'syntax error', text)
    }
    return undefined
  }
  return undefined
}
