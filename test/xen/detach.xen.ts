/**
 * The backend going away under the driver: dom0 runs `xl block-detach` while
 * reads are in flight. Every call must settle with BLKIF_ENODEV (or succeed,
 * if it finished first); none may hang.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlkifError, openBlockDevice } from '../../src/index.js';
import { XVDB, askDom0, platform } from './env.js';

test('detach: xl block-detach under load gives BLKIF_ENODEV, not a hang', { timeout: 180_000 }, async () => {
  const p = await platform();
  const dev = await openBlockDevice({ platform: p, vdev: XVDB, queues: 2, reconnectTimeoutMs: 60_000 });
  try {
    let gone: unknown;
    dev.on('gone', (e: unknown) => {
      gone = e;
    });
    let ok = 0;
    const failures = new Map<string, number>();
    let stop = false;
    const reader = async (k: number) => {
      for (let i = 0; !stop; i++) {
        try {
          await dev.read(((k * 97 + i * 13) % 4096) * 4096, 4096);
          ok++;
        } catch (e) {
          const c = e instanceof BlkifError ? e.code : String(e);
          failures.set(c, (failures.get(c) ?? 0) + 1);
          if (c === 'BLKIF_ENODEV' || c === 'BLKIF_CLOSED') return;
        }
      }
    };
    const readers = Array.from({ length: 4 }, (_, k) => reader(k));
    while (ok < 200) await new Promise((r) => setTimeout(r, 10));
    const t0 = Date.now();
    assert.equal(await askDom0(p.xenstore, 'detach', 'xvdb'), 'started');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(readers),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('readers still waiting 120 s after the detach')), 120_000);
      }),
    ]).finally(() => clearTimeout(timer));
    const took = Date.now() - t0;
    stop = true;
    console.log(`# detach: ${ok} reads completed, then ${JSON.stringify(Object.fromEntries(failures))} within ${took} ms`);
    assert.equal(failures.get('BLKIF_ENODEV') ?? 0, 4, 'each reader ended with BLKIF_ENODEV');
    assert.deepEqual([...failures.keys()], ['BLKIF_ENODEV']);
    assert.ok(gone instanceof BlkifError && gone.code === 'BLKIF_ENODEV', `'gone' was emitted (${String(gone)})`);
    await assert.rejects(dev.read(0, 4096), (e) => e instanceof BlkifError && (e.code === 'BLKIF_ENODEV' || e.code === 'BLKIF_CLOSED'));
    // The toolstack removed the frontend's directory once blkback let go.
    const deadline = Date.now() + 30_000;
    while (await p.xenstore.exists(`device/vbd/${XVDB}`)) {
      assert.ok(Date.now() < deadline, 'the vbd is still in xenstore 30 s later');
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await dev.close();
    await p.close();
  }
});
