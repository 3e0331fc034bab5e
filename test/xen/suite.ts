import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openXenPlatform } from '../../src/index.js';

test('smoke: open the platform', async () => {
  const p = await openXenPlatform();
  assert.ok(p.domid > 0);
  console.log('# domid', p.domid, 'vbds', await p.xenstore.directory('device/vbd'));
  await p.close();
});
