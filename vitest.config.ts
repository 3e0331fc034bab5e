import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The suite starts daemons and compiles C probes: give slow CI machines room.
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Builds dist/ first, every run: workers and spawned tools load compiled code.
    globalSetup: ['./test/helpers/build.ts'],
    reporters: ['default', './test/helpers/summary-reporter.ts'],
  },
});
