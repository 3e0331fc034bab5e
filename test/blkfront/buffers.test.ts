/**
 * Device buffers (allocBuffer): I/O on granted caller memory with no bounce
 * page, the fall-back to bouncing for memory that cannot go as it is, the
 * buffer's lifetime rules, the persistent-grant working set they keep, and
 * replay across a reconnect.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BlkifError } from '../../src/index.js';
import { diskFixture, pattern, type DiskFixture } from '../helpers/blk.js';

let fx: DiskFixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

describe('device buffers', () => {
  it('reads and writes in place: no pool pages, no copies, the same bytes as the bounced path', async () => {
    fx = await diskFixture({ size: 8 << 20 });
    const { dev, disk } = fx;
    const buf = dev.allocBuffer(256 << 10);
    expect(buf.byteLength).toBe(256 << 10);
    buf.set(pattern(4096, 256 << 10, 1));
    const before = dev.stats();
    await dev.write(4096, buf);
    expect(Buffer.compare(disk.memory!.subarray(4096, 4096 + (256 << 10)), buf)).toBe(0);
    buf.fill(0);
    await dev.readInto(4096, buf);
    expect(Buffer.compare(buf, pattern(4096, 256 << 10, 1))).toBe(0);
    const after = dev.stats();
    expect(after.zeroCopy - before.zeroCopy).toBe(2);
    // No bounce pages: the only pool pages are the indirect descriptor pages (64 segments > 11: one each).
    expect(after.pool.hits - before.pool.hits).toBe(2);
    expect(after.bufferPages).toBe(64);
    // The bounced path reads the same bytes.
    expect(Buffer.compare(await dev.read(4096, 256 << 10), buf)).toBe(0);
  });

  it('a part of a buffer starting on a page boundary goes in place; one that does not is bounced, and both are right', async () => {
    fx = await diskFixture({ size: 8 << 20 });
    const { dev, disk } = fx;
    const buf = dev.allocBuffer(3 << 20); // more than one ring request's worth (256 segments = 1 MiB)
    buf.set(pattern(0, 3 << 20, 2));
    let s = dev.stats();
    await dev.write(1 << 20, buf.subarray(4096, 4096 + (2 << 20) + 512)); // page-aligned start, odd length: in place, 3 pieces
    expect(dev.stats().zeroCopy - s.zeroCopy).toBe(1);
    expect(Buffer.compare(disk.memory!.subarray(1 << 20, (3 << 20) + 512), buf.subarray(4096, 4096 + (2 << 20) + 512))).toBe(0);
    s = dev.stats();
    await dev.write(5 << 20, buf.subarray(512, 512 + 65536)); // not page-aligned: bounced
    expect(dev.stats().zeroCopy - s.zeroCopy).toBe(0);
    expect(dev.stats().pool.hits - s.pool.hits).toBe(16 + 1); // 16 bounce pages and an indirect page
    expect(Buffer.compare(disk.memory!.subarray(5 << 20, (5 << 20) + 65536), buf.subarray(512, 512 + 65536))).toBe(0);
    const back = dev.allocBuffer(65536);
    await dev.readInto(5 << 20, back);
    expect(Buffer.compare(back, buf.subarray(512, 512 + 65536))).toBe(0);
  });

  it('lifetime: not freed while in use, freed once, reused for the next buffer of that size, ended at close', async () => {
    fx = await diskFixture({ size: 4 << 20 });
    const { dev, disk, host } = fx;
    const guestShared = (): number => host.guest.grants.stats().sharedPages;
    const base = guestShared();
    const a = dev.allocBuffer(65536);
    expect(guestShared() - base).toBe(16);
    disk.setDelay(20000);
    const w = dev.write(0, a);
    expect(() => dev.freeBuffer(a)).toThrow(/1 call\(s\) still use it/);
    await w;
    disk.setDelay(0);
    dev.freeBuffer(a);
    expect(() => dev.freeBuffer(a)).toThrow(BlkifError);
    expect(() => dev.freeBuffer(new Uint8Array(4096))).toThrow(/not a buffer this device allocated/);
    const b = dev.allocBuffer(65000); // same page count: a's pages again
    expect(b.buffer).toBe(a.buffer);
    expect(b.byteOffset).toBe(a.byteOffset);
    expect(guestShared() - base).toBe(16);
    // A freed buffer goes back to being ordinary memory to the driver: bounced, still correct.
    const s = dev.stats();
    await dev.readInto(0, b.subarray(0, 4096));
    expect(dev.stats().zeroCopy - s.zeroCopy).toBe(1);
    expect(() => dev.allocBuffer(0)).toThrow(BlkifError);
    await dev.close();
    expect(guestShared()).toBe(0); // pool, rings and buffers all ended
    expect(() => dev.allocBuffer(4096)).toThrow(/closed/);
  });

  it('with persistent grants the backend maps each buffer page once: no per-request maps however often buffers are reused', async () => {
    fx = await diskFixture({ size: 8 << 20 }, { queues: 2 });
    const { dev, disk } = fx;
    const bufs = Array.from({ length: 8 }, () => dev.allocBuffer(128 << 10));
    const round = async (gen: number): Promise<void> => {
      await Promise.all(
        bufs.map(async (b, i) => {
          b.set(pattern(i * (128 << 10), 128 << 10, gen));
          await dev.write(i * (128 << 10), b);
          await dev.readInto(i * (128 << 10), b);
          expect(Buffer.compare(b, pattern(i * (128 << 10), 128 << 10, gen))).toBe(0);
        }),
      );
    };
    await round(1);
    const warm = disk.stats();
    for (let g = 2; g < 40; g++) await round(g);
    const s = disk.stats();
    expect(s.persistentMaps).toBe(warm.persistentMaps);
    expect(s.transientMaps).toBe(0);
    expect(s.requests - warm.requests).toBe(38 * 16);
  });

  it('writes from device buffers in flight when the backend closes are replayed and land', async () => {
    fx = await diskFixture({ size: 4 << 20 });
    const { dev, disk } = fx;
    const bufs = Array.from({ length: 12 }, (_, i) => {
      const b = dev.allocBuffer(65536);
      b.set(pattern(i * 65536, 65536, 3));
      return b;
    });
    disk.stall(true);
    const writes = bufs.map((b, i) => dev.write(i * 65536, b));
    await new Promise((r) => setTimeout(r, 30));
    const reconnected = new Promise<{ replayed: number }>((r) => dev.once('reconnect', r));
    await disk.goClosing();
    expect((await reconnected).replayed).toBe(12);
    await Promise.all(writes);
    for (let i = 0; i < 12; i++) {
      expect(Buffer.compare(disk.memory!.subarray(i * 65536, (i + 1) * 65536), pattern(i * 65536, 65536, 3)), String(i)).toBe(0);
    }
  });
});
