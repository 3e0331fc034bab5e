/**
 * The driver against Linux's xen-blkback in dom0, on loop devices over
 * dom0's tmpfs files: negotiation, dom0's marker, a whole-disk write-verify
 * that dom0 then checks by checksum, flush, discard, a read-only vbd, and
 * close then open again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { BlkifError, XenError, openBlockDevice, type BlockDevice, type XenPlatform } from '../../src/index.js';
import { GNTALLOC_LIMIT } from '../../src/gnttab/gntshr.js';
import { MARKER, MiB, XVDB, XVDC, askDom0, platform } from './env.js';

function code(err: unknown): string {
  return err instanceof BlkifError ? err.code : `not a BlkifError: ${String(err)}`;
}

/** Deterministic bytes for [offset, offset+len) of generation `gen`. */
function pattern(offset: number, len: number, gen: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i += 8) {
    const v = offset + i;
    b.writeUInt32LE((v ^ Math.imul(gen, 0x9e3779b1)) >>> 0, i);
    b.writeUInt32LE((Math.imul(v >>> 3, 2654435761) + gen) >>> 0, i + 4);
  }
  return b;
}

/** A read, as a Buffer for comparisons. */
async function rd(dev: BlockDevice, offset: number, length: number): Promise<Buffer> {
  const u = await dev.read(offset, length);
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

async function open(p: XenPlatform, vdev: number): Promise<BlockDevice> {
  return openBlockDevice({ platform: p, vdev, queues: 2, ringPages: 4, maxIndirectSegments: 256, timeoutMs: 30_000 });
}

/** Runs `fn` on a fresh platform and device, and closes both whatever happens. */
async function withDevice(vdev: number, fn: (dev: BlockDevice, p: XenPlatform) => Promise<void>): Promise<void> {
  const p = await platform();
  try {
    const dev = await open(p, vdev);
    try {
      await fn(dev, p);
    } finally {
      await dev.close();
    }
  } finally {
    await p.close();
  }
}

test('blkfront: connects to xen-blkback and negotiates everything it offers', async () => {
  await withDevice(XVDB, async (dev, p) => {
    const f = dev.info.features;
    console.log(`# xvdb: ${JSON.stringify(dev.info)}`);
    assert.equal(dev.info.size, 64 * MiB);
    assert.equal(dev.info.sectorSize, 512);
    assert.equal(dev.info.readOnly, false);
    assert.equal(f.persistentGrants, true);
    assert.equal(f.indirectSegments, 256);
    assert.equal(f.ringPages, 4);
    assert.equal(f.queues, 2, 'blkback offers one queue per dom0 vCPU (2)');
    assert.equal(f.flush, true);
    assert.equal(f.barrier, true);
    assert.ok(f.discard !== null && f.discard.granularity > 0, 'discard offered');
    // What we wrote is what blkback read: its state and our keys in xenstore.
    const fe = `device/vbd/${XVDB}`;
    const be = await p.xenstore.read(`${fe}/backend`);
    assert.equal(await p.xenstore.read(`${be}/state`), '4');
    assert.equal(await p.xenstore.read(`${fe}/state`), '4');
    assert.equal(await p.xenstore.read(`${fe}/multi-queue-num-queues`), '2');
    assert.equal(await p.xenstore.read(`${fe}/ring-page-order`), '2');
    assert.equal(await p.xenstore.read(`${fe}/feature-persistent`), '1');
    assert.deepEqual((await p.xenstore.directory(`${fe}/queue-1`)).sort(), [
      'event-channel',
      'ring-ref0',
      'ring-ref1',
      'ring-ref2',
      'ring-ref3',
    ]);
  });
});

test('blkfront: reads the marker dom0 wrote at both ends of the disk', async () => {
  assert.match(MARKER, /^[0-9a-f]{16}$/, 'the marker came in on the kernel command line');
  await withDevice(XVDB, async (dev) => {
    const head = await rd(dev, 0, 4096);
    const tail = await rd(dev, dev.info.size - 512, 512);
    const h = `XEN-BLKFRONT-MARKER ${MARKER} head`;
    const t = `XEN-BLKFRONT-MARKER ${MARKER} tail`;
    assert.equal(head.subarray(0, h.length).toString('latin1'), h);
    assert.equal(tail.subarray(0, t.length).toString('latin1'), t);
    assert.ok(
      head.subarray(h.length, 512).every((b) => b === 0),
      'the rest of the marker sector is zeros',
    );
  });
});

test('blkfront: whole-disk write-verify, then dom0 finds the same bytes in the backing file', async () => {
  await withDevice(XVDB, async (dev, p) => {
    const size = dev.info.size;
    // Write every byte once in pieces of 4 KiB to 1 MiB (direct and indirect
    // requests), 8 at a time, in a shuffled order.
    const pieces: Array<[number, number]> = [];
    const sizes = [4096, 12288, 45056, 49152, 262144, 1048576, 8192, 65536];
    for (let off = 0, i = 0; off < size; i++) {
      const len = Math.min(sizes[i % sizes.length]!, size - off);
      pieces.push([off, len]);
      off += len;
    }
    for (let i = pieces.length - 1; i > 0; i--) {
      const j = (i * 7919) % (i + 1);
      [pieces[i], pieces[j]] = [pieces[j]!, pieces[i]!];
    }
    let next = 0;
    const writer = async () => {
      while (next < pieces.length) {
        const [off, len] = pieces[next++]!;
        await dev.write(off, pattern(off, len, 1));
      }
    };
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 8 }, writer));
    const wrote = Date.now() - t0;
    await dev.flush();

    // Read it all back in 256 KiB pieces, 4 at a time, and hash it.
    const hash = createHash('sha256');
    const chunk = 256 * 1024;
    let bad = -1;
    for (let off = 0; off < size; off += 4 * chunk) {
      const parts = await Promise.all([0, 1, 2, 3].map((k) => rd(dev, off + k * chunk, chunk)));
      parts.forEach((buf, k) => {
        if (bad < 0 && !buf.equals(pattern(off + k * chunk, chunk, 1))) bad = off + k * chunk;
        hash.update(buf);
      });
    }
    assert.equal(bad, -1, `read back differs from what was written at ${bad}`);
    const ours = hash.digest('hex');
    const s = dev.stats();
    console.log(
      `# write-verify: ${pieces.length} writes in ${wrote} ms, ${s.requests} ring requests (${s.indirectRequests} indirect), ` +
        `${s.notifications} notifications, ${s.responsesPerInterrupt.toFixed(1)} responses per interrupt, pool fallbacks ${s.pool.fallbacks}`,
    );
    assert.ok(s.indirectRequests > 0, 'indirect requests were used');

    const dom0 = await askDom0(p.xenstore, 'checksum', 'xvdb');
    assert.equal(dom0, ours, 'dom0 reads the backing file as the domU wrote it');
  });
});

test('blkfront: flush and discard succeed; the discarded range reads back as zeros; nothing else moves', async () => {
  await withDevice(XVDB, async (dev) => {
    await dev.flush();
    const g = dev.info.features.discard!.granularity;
    const at = 8 * MiB;
    const before = await rd(dev, at - g, g);
    const after = await rd(dev, at + 2 * MiB, g);
    await dev.discard(at, 2 * MiB);
    // blkback discards a loop device by punching a hole in dom0's tmpfs file.
    assert.ok(
      (await rd(dev, at, 2 * MiB)).every((b) => b === 0),
      'discarded range reads as zeros',
    );
    assert.ok((await rd(dev, at - g, g)).equals(before));
    assert.ok((await rd(dev, at + 2 * MiB, g)).equals(after));
    await dev.write(at, pattern(at, 2 * MiB, 1)); // as it was, for later tests
    await dev.flush();
    const s = dev.stats();
    assert.ok(s.flushes >= 2 && s.discards === 1 && s.errors === 0, JSON.stringify(s));
  });
});

test('blkfront: a read-only vbd reads and refuses writes with BLKIF_EROFS', async () => {
  await withDevice(XVDC, async (dev) => {
    assert.equal(dev.info.readOnly, true);
    const marker = `XEN-BLKFRONT-MARKER ${MARKER} ro`;
    assert.equal((await rd(dev, 0, 512)).subarray(0, marker.length).toString('latin1'), marker);
    await assert.rejects(dev.write(0, Buffer.alloc(4096)), (e) => code(e) === 'BLKIF_EROFS');
    await assert.rejects(dev.discard(0, 4096), (e) => code(e) === 'BLKIF_EROFS' || code(e) === 'BLKIF_EOPNOTSUPP');
    assert.equal((await rd(dev, 0, 512)).subarray(0, marker.length).toString('latin1'), marker);
  });
});

test('blkfront: bad calls get typed errors before anything reaches the backend', async () => {
  await withDevice(XVDB, async (dev) => {
    const sent = dev.stats().requests;
    await assert.rejects(dev.read(100, 512), (e) => code(e) === 'BLKIF_EINVAL');
    await assert.rejects(dev.read(dev.info.size, 512), (e) => code(e) === 'BLKIF_ERANGE');
    await assert.rejects(dev.write(dev.info.size - 512, Buffer.alloc(1024)), (e) => code(e) === 'BLKIF_ERANGE');
    assert.equal(dev.stats().requests, sent);
  });
});

test('blkfront: close() then open again, on one platform and on a new one', async () => {
  const p = await platform();
  try {
    for (let round = 0; round < 3; round++) {
      const dev = await open(p, XVDB);
      const at = (5 + round) * MiB;
      assert.ok((await rd(dev, at, 65536)).equals(pattern(at, 65536, 1)), `round ${round}: data still there`);
      await dev.write(at, pattern(at, 65536, 1));
      await dev.close();
      assert.equal(await p.xenstore.read(`device/vbd/${XVDB}/state`), '6', 'Closed after close()');
      await assert.rejects(dev.read(0, 512), (e) => code(e) === 'BLKIF_CLOSED');
    }
    assert.equal(p.grants.stats().sharedPages, 0, 'every grant ended');
    assert.equal(p.evtchn.stats().openPorts, 0, 'every channel unbound');
  } finally {
    await p.close();
  }
});

test("blkfront: an open that fails (gntalloc's limit lowered) leaves the vbd ready for the next; three close() calls settle together", async () => {
  const p = await platform();
  try {
    const saved = readFileSync(GNTALLOC_LIMIT, 'utf8').trim();
    try {
      writeFileSync(GNTALLOC_LIMIT, '30');
      await assert.rejects(open(p, XVDB), (e) => e instanceof XenError && e.code === 'XEN_ENOSPC');
    } finally {
      writeFileSync(GNTALLOC_LIMIT, saved);
    }
    assert.equal(await p.xenstore.read(`device/vbd/${XVDB}/state`), '6', 'frontend Closed after the failed open');
    assert.equal(p.grants.stats().sharedPages, 0, 'nothing left shared');
    assert.equal(p.evtchn.stats().openPorts, 0, 'no channel left bound');
    const dev = await open(p, XVDB);
    const at = 9 * MiB;
    await dev.write(at, pattern(at, 1 << 20, 7));
    assert.ok((await rd(dev, at, 1 << 20)).equals(pattern(at, 1 << 20, 7)), 'the next open reads and writes');
    const writes = Array.from({ length: 32 }, (_, i) => dev.write(at + i * 65536, pattern(at + i * 65536, 65536, 8)));
    const t0 = Date.now();
    const times = await Promise.all([dev.close(), dev.close(), dev.close()].map((c) => c.then(() => Date.now() - t0)));
    await Promise.all(writes);
    console.log(`# three close() calls settled after ${times.join(', ')} ms`);
    assert.ok(Math.max(...times) - Math.min(...times) < 100, 'every close() settles with the one close');
    assert.equal(await p.xenstore.read(`device/vbd/${XVDB}/state`), '6');
  } finally {
    await p.close();
  }
});
