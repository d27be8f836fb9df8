import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'examples/**/*.test.ts'],
    setupFiles: ['reflect-metadata'],
    testTimeout: 30_000,
    hookTimeout: 90_000,
    pool: 'forks',
    // Each file starts its own relays, DNS and receivers on free ports; two at a time fits 2 cores.
    maxWorkers: 2,
  },
})
