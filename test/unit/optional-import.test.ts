// core/optional.ts: a feature whose optional package is missing says which feature and what to install.
import { describe, expect, it } from 'vitest'
import { importOptional } from '../../core/index.js'

describe('importOptional', () => {
  it('names the feature and the npm install when the package is not installed', async () => {
    const err = await importOptional('relay-no-such-package', "queue: { driver: 'postgres' }", () => import('relay-no-such-package' as string)).catch((e: Error) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toBe(
      "queue: { driver: 'postgres' } needs the optional package 'relay-no-such-package', which is not installed: run `npm install relay-no-such-package` in the project that installs relay-mta",
    )
  })

  it('passes through an installed package and other errors unchanged', async () => {
    const pg = await importOptional('pg', 'test', () => import('pg'))
    expect(typeof pg.default.Pool).toBe('function')
    const broken = await importOptional('pg', 'test', () => Promise.reject(new TypeError('boom'))).catch((e: Error) => e)
    expect((broken as Error).message).toBe('boom')
  })
})
