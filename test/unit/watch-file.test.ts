// core/hooks/watch-file.ts (ctx.watchFile) on a real file system, edited the ways editors and
// deploy tools do: in place, or a new file renamed over the old one. A bad copy keeps the last good
// one and a later fix is still seen; a plugin's onChange that throws or rejects is logged and the
// watch goes on.
import fs from 'node:fs'
import path from 'node:path'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { watchFile } from '../../core/hooks/watch-file.js'
import type { WatchedFile } from '../../core/hooks/types.js'
import { tempDir } from '../harness/relay.js'

const watched: WatchedFile<unknown>[] = []
afterEach(() => watched.splice(0).forEach((w) => w.close()))

/** As `mv new file`, vim's and most deploy tools' way: a new inode under the same name. */
const renameOver = (file: string, text: string) => {
  fs.writeFileSync(`${file}.new`, text)
  fs.renameSync(`${file}.new`, file)
}
const until = async (ok: () => boolean, ms = 5_000) => {
  for (const end = Date.now() + ms; !ok() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50))
  return ok()
}
const logged = () => {
  const lines: { msg: string }[] = []
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as { msg: string }) })
  return { log, lines }
}
function watch(text: string, onChange?: (v: number[]) => unknown) {
  const file = path.join(tempDir(), 'list.json')
  fs.writeFileSync(file, text)
  const { log, lines } = logged()
  const w = watchFile(file, (t) => JSON.parse(t) as number[], log, onChange as (v: number[]) => void)
  watched.push(w)
  return { file, w, lines }
}

describe('ctx.watchFile', () => {
  it('a copy that does not parse, renamed over the file, keeps the last good one; the fix renamed over it is read', async () => {
    const { file, w, lines } = watch('[1]')
    renameOver(file, '[1,')
    expect(await until(() => lines.some((l) => l.msg.startsWith('watched file does not parse')))).toBe(true)
    expect(w.current).toEqual([1])
    renameOver(file, '[2]')
    expect(await until(() => w.current[0] === 2)).toBe(true)
  })

  it('the same, written in place', async () => {
    const { file, w, lines } = watch('[1]')
    fs.writeFileSync(file, '{')
    expect(await until(() => lines.some((l) => l.msg.startsWith('watched file does not parse')))).toBe(true)
    fs.writeFileSync(file, '[3]')
    expect(await until(() => w.current[0] === 3)).toBe(true)
  })

  it("an onChange that throws or rejects is logged, and later changes are still read", async () => {
    let calls = 0
    const { file, w, lines } = watch('[1]', (v) => {
      calls++
      if (v[0] === 2) throw new Error('cannot rebuild the index')
      if (v[0] === 3) return Promise.reject(null)
    })
    renameOver(file, '[2]')
    expect(await until(() => lines.some((l) => l.msg.includes("onChange failed: cannot rebuild the index")))).toBe(true)
    renameOver(file, '[3]')
    expect(await until(() => lines.some((l) => l.msg.includes('onChange failed: null (not an Error)')))).toBe(true)
    renameOver(file, '[4]')
    expect(await until(() => w.current[0] === 4 && calls === 3)).toBe(true)
  })
})
