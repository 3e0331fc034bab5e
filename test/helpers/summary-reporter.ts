/**
 * Prints one plain closing line, `tests: N passed, N failed, N skipped`, that
 * CI and people can read without knowing vitest's own format.
 */
import { writeSync } from 'node:fs';
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>, errors: ReadonlyArray<unknown>): void {
    let passed = 0,
      failed = 0,
      skipped = 0;
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const s = t.result().state;
        if (s === 'passed') passed++;
        else if (s === 'failed') failed++;
        else skipped++;
      }
      // A file that failed to load has no tests to count: it still failed.
      if (m.state() === 'failed' && [...m.children.allTests()].length === 0) failed++;
    }
    failed += errors.length;
    const line = `tests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`;
    // Last, after vitest's own summary; 'exit' also fires when a failing run calls process.exit.
    process.once('exit', () => writeSync(1, line));
  }
}
