/**
 * The Xen suite: run inside the testbed's domU (scripts/xen/test-xen.sh) as
 * `node --test-reporter=tap dist/test/xen/suite.js`. node:test runs the
 * files' tests in the order of FILES, which matters: the kernel's xen-blkfront is
 * loaded only after the driver's own tests (with autoprobe off, so the disk the
 * files test plugs in later stays the driver's); blkcheck, whose scratch vbds are
 * plugged in and out again before the comparisons, runs before the kernel's
 * driver is matched to ours, which then holds about 260 MiB of the guest's
 * memory for the rest of the run (its persistent-grant pages for every request
 * of two 128-entry rings) while blkcheck needs more than 100 MiB of its own; the
 * save/restore changes the domain's id (dom0 follows it), and the detach comes
 * last.
 */
import { liveTimers, runningPolls, testStarted } from './leaks.js';

/** The files, in order. `profile` (a CPU profile of the driver on real Xen) runs only when named. */
const FILES = ['xenstore', 'gnttab', 'blkfront', 'blkcheck', 'bench', 'ownership', 'qdisk', 'files', 'restore', 'detach'];
// XEN_SUITE_ONLY (from suite= on the domU's command line: XEN_SUITE_ARGS="suite=bench,profile") runs some alone.
const only = process.env.XEN_SUITE_ONLY;
for (const f of only ? only.split(',') : FILES) await import(`./${f}.xen.js`);

import { after, afterEach, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

/** The domU's available memory and this process's resident size, in MiB: the guest is small, and a test that runs it out is killed. */
function memory(): string {
  const avail = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
  const mib = (n: number) => (n / 1024).toFixed(0);
  return `available ${avail === undefined ? '?' : mib(Number(avail))} MiB, suite rss ${mib(process.memoryUsage().rss / 1024)} MiB`;
}

beforeEach((t) => testStarted(t.name));
// A test that closed what it opened leaves no event-channel poll behind.
afterEach(async (t) => {
  const deadline = Date.now() + 2000;
  while (runningPolls().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(runningPolls(), [], `${t.name}: event-channel polls still running`);
  console.log(`# memory after "${t.name}": ${memory()}`);
});

// Everything the suite opened was closed: nothing may keep the process
// alive. If something does, say what, and fail.
after(() => {
  setTimeout(() => {
    const p = process as unknown as { _getActiveHandles(): object[]; _getActiveRequests(): object[] };
    const describe = (o: object) => {
      const t = o as { constructor: { name: string }; hasRef?: () => boolean; _idleTimeout?: number; fd?: number };
      return `${t.constructor.name}${t.hasRef ? (t.hasRef() ? '(ref)' : '(unref)') : ''}${t._idleTimeout !== undefined ? `[${t._idleTimeout} ms]` : ''}${t.fd !== undefined ? `[fd ${t.fd}]` : ''}`;
    };
    console.log(
      `# XEN-SUITE: still alive 5 s after the last test, held by: ${process.getActiveResourcesInfo().join(', ')}; polls started in ${JSON.stringify(runningPolls())}; timers ${JSON.stringify(liveTimers())}; ` +
        `handles ${p._getActiveHandles().map(describe).join(', ')}; requests ${p._getActiveRequests().map(describe).join(', ')}`,
    );
    process.exit(1);
  }, 5000).unref();
});
