// A usage error (unknown verb or option, a missing argument) exited 1, the code the queue verbs
// give for "not found or failed": a script could not tell a typo from a missing message. Usage
// errors exit 2 now, with commander's message and the help; --help and --version exit 0.
import { describe, expect, it } from 'vitest'
import { runCliAsync } from '../harness/relay.js'

describe('CLI usage errors', () => {
  it.each([
    ['an unknown verb', ['bogus'], /unknown command 'bogus'/],
    ['an unknown option', ['queue', 'list', '--bogus'], /unknown option '--bogus'/],
    ['an unknown option of a core verb', ['check-config', '--bogus'], /unknown option '--bogus'/],
    ['a missing argument', ['queue', 'show'], /missing required argument 'id'/],
    ['an option without its value', ['queue', 'list', '--limit'], /option '--limit <n>' argument missing/],
    ['too many arguments', ['queue', 'show', 'A', 'B'], /too many arguments/],
    ['a group without its verb', ['queue'], /Usage: relay queue/],
  ])('%s: exit 2 and says what is wrong', async (_, args, said) => {
    const r = await runCliAsync(args)
    expect([r.code, r.stdout]).toEqual([2, ''])
    expect(r.stderr).toMatch(said)
  })

  it.each([[['--help']], [['queue', '--help']], [['queue', 'list', '--help']], [['--version']], [['help', 'queue']]])('%j exits 0', async (args) => {
    const r = await runCliAsync(args)
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).not.toBe('')
  })
})
