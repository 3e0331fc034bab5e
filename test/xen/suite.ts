/**
 * The Xen suite: run inside the testbed's domU (scripts/xen/test-xen.sh) as
 * `node --test-reporter=tap dist/test/xen/suite.js`. node:test runs the
 * files' tests in this order, which matters: the kernel's xen-blkfront is
 * loaded only after the driver's own tests, and the detach comes last.
 */
import './xenstore.xen.js';
import './gnttab.xen.js';
import './blkfront.xen.js';
import './bench.xen.js';
import './detach.xen.js';

import { after } from 'node:test';

// Everything the suite opened was closed: nothing may keep the process
// alive. If something does, say what, and fail.
after(() => {
  setTimeout(() => {
    console.log(`# XEN-SUITE: still alive 5 s after the last test, held by: ${process.getActiveResourcesInfo().join(', ')}`);
    process.exit(1);
  }, 5000).unref();
});
