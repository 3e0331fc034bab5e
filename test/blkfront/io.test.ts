/**
 * Block I/O end to end through the public API, against the simulated blkback
 * (worker threads mapping the guest's grants): data integrity over the whole
 * disk, every negotiated feature on and off, sector sizes, read-only disks,
 * and calls rejected before anything reaches the ring.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BlkifError, isXenError, openBlockDevice } from '../../src/index.js';
import { createSimHost } from '../../src/sim/index.js';
import { diskFixture, expectBytes, pattern, rng, type DiskFixture } from '../helpers/blk.js';

let fx: DiskFixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

/** Random writes (sizes 1 sector to 300 KiB) until every byte was written, then the whole disk read back. */
async function writeThenVerify(f: DiskFixture, seed: number, ss = 512): Promise<void> {
  const { dev } = f;
  const size = dev.info.size;
  const model = new Uint8Array(size);
  const next = rng(seed);
  let gen = 0;
  const jobs: Array<Promise<void>> = [];
  // Cover the disk in order first (random lengths), then overwrite random places, all at once.
  for (let off = 0; off < size;) {
    const len = Math.min(size - off, (1 + (next() % 600)) * ss);
    const data = pattern(off, len, ++gen);
    model.set(data, off);
    jobs.push(dev.write(off, data));
    off += len;
  }
  await Promise.all(jobs);
  jobs.length = 0;
  // Writes in flight together may land in any order (several queues), so a batch never overlaps itself.
  let batch: Array<[number, number]> = [];
  for (let i = 0; i < 200; i++) {
    const len = (1 + (next() % 64)) * ss;
    const off = (next() % ((size - len) / ss + 1)) * ss;
    if (batch.some(([o, l]) => off < o + l && o < off + len) || batch.length === 16) {
      await Promise.all(jobs.splice(0));
      batch = [];
    }
    batch.push([off, len]);
    const data = pattern(off, len, ++gen);
    model.set(data, off);
    jobs.push(dev.write(off, data));
  }
  await Promise.all(jobs);
  const whole = await dev.read(0, size);
  expectBytes(whole, model);
  // Small random reads agree too, many in flight.
  const reads = Array.from({ length: 64 }, () => {
    const len = (1 + (next() % 16)) * ss;
    const off = (next() % ((size - len) / ss + 1)) * ss;
    return dev.read(off, len).then((b) => expectBytes(b, model.subarray(off, off + len)));
  });
  await Promise.all(reads);
  const mem = f.disk.memory;
  if (mem !== undefined) expectBytes(mem, model);
}

describe('blkfront I/O', () => {
  it('writes at random then reads the whole disk back byte for byte (memory disk, all features)', async () => {
    fx = await diskFixture({ size: 4 << 20 });
    const f = fx.dev.info.features;
    expect(f).toMatchObject({ persistentGrants: true, indirectSegments: 256, ringPages: 4, queues: 2, flush: true, barrier: true });
    await writeThenVerify(fx, 1);
    const s = fx.dev.stats();
    expect(s.indirectRequests).toBeGreaterThan(0);
    expect(s.errors).toBe(0);
    expect(fx.disk.stats().errors).toBe(0);
  });

  it('serves an image file, and what the guest wrote is in the file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blk-'));
    const image = join(dir, 'disk.img');
    const initial = pattern(0, 2 << 20, 99);
    writeFileSync(image, initial);
    try {
      fx = await diskFixture({ image });
      expect(fx.dev.info.size).toBe(2 << 20);
      const first = await fx.dev.read(0, 65536);
      expectBytes(first, initial.subarray(0, 65536));
      await writeThenVerify(fx, 2);
      await fx.dev.flush();
      const whole = await fx.dev.read(0, 2 << 20);
      expectBytes(readFileSync(image), whole);
    } finally {
      await fx?.close();
      fx = undefined;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ['no persistent grants', { persistent: false }, {}],
    ['no indirect descriptors', { maxIndirectSegments: 0 }, {}],
    ['one-page rings, one queue', { maxRingPageOrder: 0, maxQueues: 1 }, {}],
    ['16-page rings, 4 queues', {}, { ringPages: 16, queues: 4 }],
    ['frontend declines persistent grants and indirect', {}, { persistentGrants: false, maxIndirectSegments: 11 }],
    ['no pool (a fresh grant per page)', {}, { pool: false }],
    ['32 indirect segments at most', { maxIndirectSegments: 32 }, {}],
  ] as const)('%s: negotiates it and keeps data intact', async (_name, disk, dev) => {
    fx = await diskFixture({ size: 2 << 20, ...disk }, dev);
    const f = fx.dev.info.features;
    if ('persistent' in disk || 'persistentGrants' in dev) expect(f.persistentGrants).toBe(false);
    if ('maxIndirectSegments' in disk && disk.maxIndirectSegments === 0) expect(f.indirectSegments).toBe(0);
    if ('maxIndirectSegments' in dev) expect(f.indirectSegments).toBe(0);
    if ('maxIndirectSegments' in disk && disk.maxIndirectSegments === 32) expect(f.indirectSegments).toBe(32);
    if ('maxRingPageOrder' in disk) expect([f.ringPages, f.queues]).toEqual([1, 1]);
    if ('ringPages' in dev) expect([f.ringPages, f.queues]).toEqual([16, 4]);
    await writeThenVerify(fx, 3);
    const b = fx.disk.stats();
    // Without a pool every page is a fresh grant with a new ref: the backend's persistent set fills and it maps the rest per request.
    if (f.persistentGrants) {
      if (!('pool' in dev)) expect(b.transientMaps).toBe(0);
    } else {
      expect(b.persistentMaps).toBe(0);
      expect(b.unmaps).toBe(b.transientMaps); // every map undone after its request
    }
    if (f.indirectSegments === 0) expect(b.indirectRequests).toBe(0);
    else expect(b.indirectRequests).toBeGreaterThan(0);
    if ('pool' in dev) expect(fx.dev.stats().pool).toMatchObject({ size: 0, hits: 0 });
  });

  it('flush, barrier-only flush, no flush at all; discard zeroes and is refused when not offered', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    await fx.dev.write(0, pattern(0, 65536, 1));
    await fx.dev.flush();
    await fx.dev.discard(4096, 8192);
    const b = await fx.dev.read(0, 16384);
    expect(b.subarray(4096, 12288).every((x) => x === 0)).toBe(true);
    expectBytes(b.subarray(0, 4096), pattern(0, 4096, 1));
    expect(fx.dev.stats()).toMatchObject({ flushes: 1, discards: 1 });
    await fx.close();

    fx = await diskFixture({ size: 1 << 20, flush: false, discard: false });
    expect(fx.dev.info.features).toMatchObject({ flush: false, barrier: true, discard: null });
    const before = fx.disk.stats().requests;
    await fx.dev.flush(); // sent as a WRITE_BARRIER
    expect(fx.disk.stats().requests).toBe(before + 1);
    await expect(fx.dev.discard(0, 4096)).rejects.toMatchObject({ code: 'BLKIF_EOPNOTSUPP' });
    expect(fx.disk.stats().requests).toBe(before + 1);
    await fx.close();

    fx = await diskFixture({ size: 1 << 20, flush: false, barrier: false });
    const n = fx.disk.stats().requests;
    await fx.dev.flush(); // nothing to flush: resolves without a request
    expect(fx.disk.stats().requests).toBe(n);
  });

  it('4096-byte sectors: aligned I/O works, 512-byte alignment is refused before the ring', async () => {
    fx = await diskFixture({ size: 2 << 20, sectorSize: 4096 });
    expect(fx.dev.info).toMatchObject({ sectorSize: 4096, sectors: (2 << 20) / 512 });
    await writeThenVerify(fx, 4, 4096);
    const before = fx.disk.stats().requests;
    await expect(fx.dev.read(512, 4096)).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
    await expect(fx.dev.write(0, new Uint8Array(512))).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
    await expect(fx.dev.discard(4096, 1024)).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
    expect(fx.disk.stats().requests).toBe(before);
  });

  it('a read-only disk reads, and refuses writes and discards with BLKIF_EROFS before the ring', async () => {
    fx = await diskFixture({ size: 1 << 20, readOnly: true });
    expect(fx.dev.info.readOnly).toBe(true);
    const mem = fx.disk.memory!;
    mem.set(pattern(0, 8192, 5));
    expectBytes(await fx.dev.read(0, 8192), pattern(0, 8192, 5));
    const before = fx.disk.stats().requests;
    const err = await fx.dev.write(0, new Uint8Array(4096)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlkifError);
    expect(err).toMatchObject({ code: 'BLKIF_EROFS' });
    await expect(fx.dev.discard(0, 4096)).rejects.toMatchObject({ code: 'BLKIF_EROFS' });
    expect(fx.disk.stats().requests).toBe(before);
  });

  it('rejects bad calls before queueing anything', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    const dev = fx.dev;
    const before = fx.disk.stats().requests;
    const cases: Array<[Promise<unknown>, string]> = [
      [dev.read(0, 0), 'BLKIF_EINVAL'],
      [dev.read(100, 512), 'BLKIF_EINVAL'],
      [dev.read(0, 1000), 'BLKIF_EINVAL'],
      [dev.read(-512, 512), 'BLKIF_EINVAL'],
      [dev.read(1.5, 512), 'BLKIF_EINVAL'],
      [dev.read(1 << 20, 512), 'BLKIF_ERANGE'],
      [dev.read((1 << 20) - 512, 1024), 'BLKIF_ERANGE'],
      [dev.write(0, new Uint8Array(0)), 'BLKIF_EINVAL'],
      [dev.write(1 << 20, new Uint8Array(512)), 'BLKIF_ERANGE'],
      [dev.write(0, 'text' as unknown as Uint8Array), 'BLKIF_EINVAL'],
      [dev.discard(0, 0), 'BLKIF_EINVAL'],
      [dev.discard(0, 2 << 20), 'BLKIF_ERANGE'],
      [dev.discard(0, 4096, { secure: true }), 'BLKIF_EOPNOTSUPP'],
    ];
    for (const [p, code] of cases) await expect(p).rejects.toMatchObject({ code });
    expect(fx.disk.stats().requests).toBe(before);
    // The device still works after all that.
    await dev.write(0, pattern(0, 4096, 1));
    expectBytes(await dev.read(0, 4096), pattern(0, 4096, 1));
  });

  it('persistent grants: the backend stops mapping after warm-up; the pool never falls back for 11 segments', async () => {
    fx = await diskFixture({ size: 4 << 20 }, { queues: 1, ringPages: 1 });
    const { dev } = fx;
    const maps = (): number => fx!.host.grantCounters().maps;
    const io = async (n: number): Promise<void> => {
      const next = rng(7);
      let i = 0;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (i++ < n) {
            const off = (next() % 300) * 4096;
            if (i % 2) await dev.write(off, pattern(off, 11 * 4096, i));
            else await dev.read(off, 11 * 4096);
          }
        }),
      );
    };
    await io(400); // warm-up: every pooled page mapped once
    const warm = maps();
    await io(2000);
    expect(maps()).toBe(warm);
    const s = dev.stats();
    expect(s.pool.fallbacks).toBe(0);
    expect(s.pool.hits).toBeGreaterThan(2400 * 11 - 1);
    expect(fx.disk.stats()).toMatchObject({ transientMaps: 0 });
    // Ring-full backpressure happened (32 in flight on a 32-slot ring) without failures.
    expect(s.errors).toBe(0);
  });

  it('11 segments go direct, 12 go indirect (and, without indirect, 12 pages take two requests)', async () => {
    fx = await diskFixture({ size: 1 << 20 }, { queues: 1 });
    const before = fx.disk.stats();
    await fx.dev.write(0, pattern(0, 11 * 4096, 1));
    expect(fx.disk.stats().indirectRequests).toBe(before.indirectRequests);
    expect(fx.disk.stats().requests).toBe(before.requests + 1);
    await fx.dev.write(0, pattern(0, 12 * 4096, 2));
    expect(fx.disk.stats().indirectRequests).toBe(before.indirectRequests + 1);
    expect(fx.disk.stats().requests).toBe(before.requests + 2);
    await fx.close();
    fx = await diskFixture({ size: 1 << 20, maxIndirectSegments: 0 }, { queues: 1 });
    const n = fx.disk.stats().requests;
    await fx.dev.write(0, pattern(0, 12 * 4096, 3));
    expect(fx.disk.stats().requests).toBe(n + 2);
    expectBytes(await fx.dev.read(0, 12 * 4096), pattern(0, 12 * 4096, 3));
  });

  it('without persistent grants the map count grows with the requests, and every map is undone', async () => {
    fx = await diskFixture({ size: 1 << 20, persistent: false }, { queues: 1 });
    for (let i = 0; i < 20; i++) await fx.dev.read(0, 8 * 4096);
    const b = fx.disk.stats();
    expect(b.transientMaps).toBe(20 * 8);
    expect(b.unmaps).toBe(20 * 8);
    expect(fx.dev.stats().pool.fallbacks).toBe(0);
  });

  it('more I/O than ring slots and pool pages waits instead of failing', async () => {
    fx = await diskFixture(
      { size: 4 << 20, maxIndirectSegments: 0, maxRingPageOrder: 0, maxQueues: 1 },
      { poolPages: 16, persistentGrants: false, queues: 1 },
    );
    fx.disk.setDelay(200);
    const jobs = Array.from({ length: 300 }, (_, i) => fx!.dev.write((i % 64) * 65536, pattern((i % 64) * 65536, 65536, i)));
    await Promise.all(jobs);
    const s = fx.dev.stats();
    expect(s.writes).toBe(300);
    expect(s.errors).toBe(0);
    expect(s.pool.fallbacks).toBeGreaterThan(0); // pool of 16 pages, 16-page writes: fresh grants filled in
    expect(fx.host.guest.grants.stats().sharedPages).toBeLessThan(2000);
  });

  it('opening a device that does not exist is BLKIF_ENODEV', async () => {
    const host = await createSimHost();
    try {
      const err = await openBlockDevice({ platform: host.guest, vdev: 51728 }).catch((e: unknown) => e);
      expect(isXenError(err, 'BLKIF_ENODEV')).toBe(true);
    } finally {
      await host.close();
    }
  });

  it('close() drains, ends every grant and unbinds; later calls get BLKIF_CLOSED; it can be opened again', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    const { host, disk } = fx;
    const grantsBefore = host.guest.grants.stats().sharedPages;
    expect(grantsBefore).toBeGreaterThan(0);
    const pending = fx.dev.write(0, pattern(0, 65536, 1));
    await fx.dev.close();
    await pending; // drained, not dropped
    await expect(fx.dev.read(0, 512)).rejects.toMatchObject({ code: 'BLKIF_CLOSED' });
    expect(host.guest.grants.stats().sharedPages).toBe(0);
    expect(host.guest.evtchn.stats().openPorts).toBe(0); // the xenstore ring's channel is the guest kernel's, not the platform's
    const g = host.grantCounters();
    expect(g.maps - g.unmaps).toBe(1); // only xenstored's map of the xenstore ring is left
    const again = await openBlockDevice({ platform: host.guest, vdev: disk.vdev });
    expectBytes(await again.read(0, 65536), pattern(0, 65536, 1));
    expect(disk.stats().connections).toBe(2);
    fx = { ...fx, dev: again };
  });
});
