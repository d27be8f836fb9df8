import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'examples/**/*.test.ts'],
    setupFiles: ['reflect-metadata'],
    testTimeout: 30_000,
    hookTimeout: 90_000,
    pool: 'forks',
    // Files run one after another in each fork instead of a new fork per file: a new fork costs
    // 0.5 s of CPU (Node, vitest, the harness compiled again), 70 s over the suite on 2 cores.
    // Every file cleans up in afterAll (relays, DNS, receivers, spies), which that sharing needs.
    isolate: false,
    // Each file starts its own relays, DNS and receivers on free ports; two at a time fits 2 cores.
    maxWorkers: 2,
  },
})
