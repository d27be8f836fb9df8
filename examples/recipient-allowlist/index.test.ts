import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { eventually, startTestRelay, tempDir, type TestRelay } from 'relay-mta/testing'

const list = path.join(tempDir('allowlist-'), 'allowed.txt')
let t: TestRelay
beforeAll(async () => {
  fs.writeFileSync(list, '# who may receive\nbob@example.test\n@partner.test\n')
  t = await startTestRelay({ plugins: [[new URL('./index.ts', import.meta.url), { file: list }]] })
})
afterAll(() => t?.close())

it('takes listed addresses and domains, refuses the rest with 550 5.1.1, and rereads the file', async () => {
  const r = await t.send({ from: 'alice@sender.test', to: ['bob@example.test', 'Anyone@Partner.test', 'eve@example.test'] })
  expect(r.rcpt).toEqual([250, 250, 550])
  expect(r.replies).toContain('550 5.1.1 no such recipient here')
  expect(r.data).toBe(250)
  const [msg] = await t.receiver.waitForMessages(1, 10_000)
  expect(msg!.to).toEqual(['bob@example.test'])

  // The change is seen within a moment (the file is watched), without a restart.
  fs.appendFileSync(list, 'eve@example.test\n')
  await eventually(async () => (await t.send({ from: 'alice@sender.test', to: 'eve@example.test' })).rcpt[0] === 250 || undefined, 5000, 'eve allowed after the edit')
})

it('a relative file is taken from the config file\'s directory, not the working directory', async () => {
  const dir = tempDir('allowlist-rel-')
  fs.writeFileSync(path.join(dir, 'allowed.txt'), 'carol@example.test\n')
  // Started from the package's directory: allowed.txt is found beside the config all the same.
  const rel = await startTestRelay({ plugins: [[new URL('./index.ts', import.meta.url), { file: 'allowed.txt' }]], dir })
  try {
    expect((await rel.send({ from: 'alice@sender.test', to: ['carol@example.test', 'dave@example.test'] })).rcpt).toEqual([250, 550])
  } finally {
    await rel.close()
  }
})
