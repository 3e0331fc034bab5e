/**
 * The read cache in front of a disk (src/disk/cached.ts), at every window
 * edge: reads that start, end or straddle a window boundary by a byte or a
 * sector return exactly the disk's bytes; a second read of a cached window
 * costs no disk read; a write at any edge is seen by the next read (the
 * windows it touches are dropped); a sequential reader gets the next
 * windows fetched ahead, in batches, as its run grows, and a reader that
 * jumps about gets none; the number of windows kept stays within its
 * budget; a failed fetch is not kept; a fetch's buffer is reused once
 * nothing can read it any more, never while a read still copies out of it
 * or the disk still fills it; a streaming reader's batches go into the
 * target's own buffers, a few at most, given back once the disk is done
 * with them, and into ordinary memory where the target has none to give.
 */
import { describe, expect, it } from 'vitest';
import { CachedTarget, DEVICE_BATCHES } from '../../src/disk/cached.js';
import { MemoryTarget } from '../helpers/images.js';

function filled(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 13 + seed * 101 + (i >> 9)) & 0xff;
  return b;
}

/** A memory disk that counts the reads it serves and can be made to fail. */
class CountingTarget extends MemoryTarget {
  reads: Array<{ offset: number; length: number; buffer: ArrayBufferLike }> = [];
  /** While set, each read waits here until released (and copies the disk's bytes then). */
  gate: Array<() => void> | null = null;
  failNext = false;
  override async readInto(offset: number, dst: Uint8Array): Promise<void> {
    if (this.failNext) {
      this.failNext = false;
      throw new Error('injected read failure');
    }
    this.reads.push({ offset, length: dst.byteLength, buffer: dst.buffer });
    const gate = this.gate;
    if (gate !== null) await new Promise<void>((resolve) => gate.push(resolve));
    return super.readInto(offset, dst);
  }
}

/** A disk that lends buffers of its own (as a device's granted ones) and checks they come back once, unused. */
class LendingTarget extends CountingTarget {
  lent = new Set<ArrayBufferLike>();
  everLent = new Set<ArrayBufferLike>();
  freed: ArrayBufferLike[] = [];
  /** Reads under way, by buffer. */
  filling = new Set<ArrayBufferLike>();
  mostLent = 0;
  allocs = 0;
  refuse = false;
  override allocBuffer(length: number): Uint8Array {
    this.allocs++;
    if (this.refuse) throw new Error('no grant refs left');
    const b = new Uint8Array(length);
    this.lent.add(b.buffer);
    this.everLent.add(b.buffer);
    this.mostLent = Math.max(this.mostLent, this.lent.size);
    return b;
  }
  override freeBuffer(buf: Uint8Array): void {
    if (!this.lent.has(buf.buffer)) throw new Error('freed a buffer not lent, or twice');
    if (this.filling.has(buf.buffer)) throw new Error('freed a buffer the disk still fills');
    this.lent.delete(buf.buffer);
    this.freed.push(buf.buffer);
  }
  override async readInto(offset: number, dst: Uint8Array): Promise<void> {
    this.filling.add(dst.buffer);
    try {
      await super.readInto(offset, dst);
    } finally {
      this.filling.delete(dst.buffer);
    }
  }
}

describe.each([512, 4096])('a cache over %i-byte sectors', (ss) => {
  const W = 4 * ss; // the window
  const size = 16 * W;
  const edges: number[] = [];
  for (let k = 1; k <= 3; k++) for (const d of [-ss - 1, -ss, -1, 0, 1, ss, ss + 1]) edges.push(k * W + d);
  const lengths = [1, ss - 1, ss, ss + 1, W - 1];

  it(`every read around the first window edges (${edges.length} starts × ${lengths.length} lengths) returns the disk's bytes`, async () => {
    const disk = new CountingTarget(filled(size, 1), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 0 });
    for (const off of edges) {
      for (const len of lengths) {
        const dst = new Uint8Array(len);
        await c.readRange(off, dst);
        expect(Buffer.compare(dst, disk.bytes.subarray(off, off + len)), `${off}+${len}`).toBe(0);
      }
    }
    // Every read went to the disk as whole windows.
    for (const r of disk.reads) expect([r.offset % W, r.length]).toEqual([0, W]);
  });

  it('a cached window is read from the disk once; a read as large as a window goes straight to it', async () => {
    const disk = new CountingTarget(filled(size, 2), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 0 });
    await c.readRange(W - 1, new Uint8Array(2)); // straddles windows 0 and 1
    expect(disk.reads.map(({ offset, length }) => ({ offset, length }))).toEqual([
      { offset: 0, length: W },
      { offset: W, length: W },
    ]);
    await c.readRange(5, new Uint8Array(10));
    await c.readRange(W + 7, new Uint8Array(ss));
    expect(disk.reads.length).toBe(2);
    expect(c.stats).toEqual({ hits: 2, windows: 2 });
    const big = new Uint8Array(W);
    await c.readRange(3 * W, big);
    expect(disk.reads.at(-1)).toMatchObject({ offset: 3 * W, length: W, buffer: big.buffer });
    expect(c.stats.windows).toBe(2);
  });

  it('a write at any window edge is seen by the next read', async () => {
    for (const off of edges) {
      for (const len of [1, ss + 1, 2 * W]) {
        const disk = new CountingTarget(filled(size, 3), ss);
        const c = new CachedTarget(disk, { window: W, ahead: 0 });
        const probe = new Uint8Array(3 * W);
        await c.readRange(off - W > 0 ? off - W : 0, probe.subarray(0, W - 1)); // fill the cache around it
        await c.readRange(off, probe.subarray(0, Math.min(W - 1, size - off)));
        const data = filled(len, 9);
        await c.writeRange(off, data);
        const back = new Uint8Array(len);
        // Read back in window-sized-or-smaller pieces, through the cache.
        for (let at = 0; at < len; at += W - 1) await c.readRange(off + at, back.subarray(at, Math.min(len, at + W - 1)));
        expect(Buffer.compare(back, data), `${off}+${len}`).toBe(0);
      }
    }
  });

  it('a sequential reader gets windows fetched ahead, more as its run grows, in batches, within the budget', async () => {
    const disk = new CountingTarget(filled(size, 4), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 4, cacheBytes: 4 * W });
    const dst = new Uint8Array(ss);
    for (let at = 0; at < W - ss; at += ss) await c.readRange(at, dst);
    expect(disk.reads.map((r) => r.offset / W)).toEqual([0]); // a run shorter than a window fetches nothing ahead
    await c.readRange(W - ss, dst); // the run reaches a window: one ahead
    expect(disk.reads.map((r) => r.offset / W)).toEqual([0, 1]);
    for (let at = W; at < size; at += ss) {
      await c.readRange(at, dst);
      expect(Buffer.compare(dst, disk.bytes.subarray(at, at + ss)), `${at}`).toBe(0);
    }
    // Windows kept: at most max(2 × ahead + 2, budget) = 10.
    expect(c.size).toBeLessThanOrEqual(10);
    // Every window was fetched exactly once, whole, and the later ones several to a request.
    const fetched = disk.reads.flatMap((r) => {
      expect(r.offset % W).toBe(0);
      return Array.from({ length: Math.ceil(r.length / W) }, (_, k) => r.offset / W + k);
    });
    expect(fetched).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expect(Math.max(...disk.reads.map((r) => r.length))).toBeGreaterThanOrEqual(2 * W);
    expect(disk.reads.length).toBeLessThan(16);
  });

  it('a long sequential run is fetched in batches of half the windows ahead, each one request', async () => {
    const disk = new CountingTarget(filled(128 * W, 8), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 8 });
    const dst = new Uint8Array(ss);
    for (let at = 0; at < 128 * W; at += ss) await c.readRange(at, dst);
    // Once the run is 8 windows long, every batch is 4 windows: the same size, never one over.
    const sizes = disk.reads.map((r) => r.length / W);
    const steady = sizes.slice(sizes.indexOf(4));
    expect(steady.length).toBeGreaterThan(20);
    expect(new Set(steady.slice(0, -1))).toEqual(new Set([4]));
    const fetched = disk.reads.flatMap((r) => Array.from({ length: Math.ceil(r.length / W) }, (_, k) => r.offset / W + k));
    expect(fetched).toEqual(Array.from({ length: 128 }, (_, i) => i));
  });

  it('the readahead looks for missing windows once per batch, not on every small read', async () => {
    const disk = new CountingTarget(filled(128 * W, 9), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 8 });
    // Count the lookups the cache makes in its window map.
    const map = (c as unknown as { cache: Map<number, unknown> }).cache;
    let lookups = 0;
    const has = map.has.bind(map);
    map.has = (k: number): boolean => {
      lookups++;
      return has(k);
    };
    const dst = new Uint8Array(ss);
    let reads = 0;
    for (let at = 0; at < 128 * W; at += ss, reads++) await c.readRange(at, dst);
    // One lookup per read for the window it reads, and a look ahead per batch (scanning from the
    // frontier, not from the reader): scanning the windows ahead on every read made it n/2 more.
    expect(lookups).toBeLessThan(reads * 1.5);
    const fetched = disk.reads.flatMap((r) => Array.from({ length: Math.ceil(r.length / W) }, (_, k) => r.offset / W + k));
    expect(fetched).toEqual(Array.from({ length: 128 }, (_, i) => i));
  });

  it('a window ahead dropped by a write is fetched again ahead of the reader; a jump starts a new run', async () => {
    const disk = new CountingTarget(filled(128 * W, 10), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 8 });
    const dst = new Uint8Array(ss);
    const read = async (from: number, to: number): Promise<void> => {
      for (let at = from; at < to; at += ss) {
        await c.readRange(at, dst);
        expect(Buffer.compare(dst, disk.bytes.subarray(at, at + ss)), `${at}`).toBe(0);
      }
    };
    await read(0, 21 * W);
    // Windows up to 24 are held or on their way; a write drops 23.
    await c.writeRange(23 * W, new Uint8Array(ss).fill(0xab));
    disk.reads = [];
    await read(21 * W, 30 * W);
    // 23 came back in a batch that the readahead sent before the reader got there, not alone on demand.
    const refetch = disk.reads.find((r) => r.offset === 23 * W);
    expect(refetch?.length).toBeGreaterThan(W);
    // A jump back into windows already held fetches nothing; a jump forward runs ahead from there.
    disk.reads = [];
    await read(25 * W, 27 * W);
    expect(disk.reads).toEqual([]);
    await read(90 * W, 100 * W);
    const from = disk.reads.map((r) => r.offset / W);
    expect(from[0]).toBe(90);
    expect(Math.max(...disk.reads.map((r) => r.length))).toBe(4 * W);
    const fetched = disk.reads.flatMap((r) => Array.from({ length: Math.ceil(r.length / W) }, (_, k) => r.offset / W + k));
    expect(fetched.filter((w) => w < 100)).toEqual(Array.from({ length: 10 }, (_, i) => 90 + i));
  });

  it('a reader that jumps about (small files, metadata) fetches only the windows it reads', async () => {
    const disk = new CountingTarget(filled(size, 6), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 4 });
    for (const w of [5, 1, 9, 3, 12]) {
      const dst = new Uint8Array(2 * ss);
      await c.readRange(w * W + ss, dst); // two sectors inside window w, after a jump
      await c.readRange(w * W + 3 * ss, dst.subarray(0, ss)); // continues it, but the run is shorter than a window
      expect(Buffer.compare(dst.subarray(0, ss), disk.bytes.subarray(w * W + 3 * ss, w * W + 4 * ss))).toBe(0);
    }
    expect(disk.reads.map((r) => r.offset / W)).toEqual([5, 1, 9, 3, 12]);
  });

  it('a failed fetch fails its read and is not kept', async () => {
    const disk = new CountingTarget(filled(size, 5), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 0 });
    disk.failNext = true;
    await expect(c.readRange(10, new Uint8Array(4))).rejects.toThrow('injected read failure');
    const dst = new Uint8Array(4);
    await c.readRange(10, dst);
    expect(Buffer.compare(dst, disk.bytes.subarray(10, 14))).toBe(0);
  });

  it('a fetch reuses the buffer of windows dropped earlier, never one a read or the disk still uses', async () => {
    const disk = new CountingTarget(filled(size, 7), ss);
    // One window kept: every new window drops the one before.
    const c = new CachedTarget(disk, { window: W, ahead: 0, cacheBytes: W });
    disk.gate = [];
    const a = new Uint8Array(ss);
    const pa = c.readRange(0, a); // window 0, its fetch held
    c.drop(0, W); // dropped while its fetch fills it and a read waits on it
    const b = new Uint8Array(ss);
    const pb = c.readRange(W, b);
    expect(disk.reads[1]!.buffer).not.toBe(disk.reads[0]!.buffer);
    for (const release of disk.gate.splice(0)) release();
    await Promise.all([pa, pb]);
    expect(Buffer.compare(a, disk.bytes.subarray(0, ss))).toBe(0);
    expect(Buffer.compare(b, disk.bytes.subarray(W, W + ss))).toBe(0);
    disk.gate = null;
    // Window 0's buffer is free now: the next fetch takes it (and window 1's, dropped by it, the one after).
    for (let w = 2; w < 8; w++) {
      await c.readRange(w * W, b);
      expect(Buffer.compare(b, disk.bytes.subarray(w * W, w * W + ss)), `window ${w}`).toBe(0);
    }
    expect(disk.reads[2]!.buffer).toBe(disk.reads[0]!.buffer);
    expect(new Set(disk.reads.map((r) => r.buffer)).size).toBeLessThanOrEqual(3);
    // A read that waits on a window outlives the window: its buffer is not reused under it.
    disk.gate = [];
    const d = new Uint8Array(ss);
    const pd = c.readRange(9 * W, d);
    const e = new Uint8Array(ss);
    const pe = c.readRange(10 * W, e); // drops window 9 (one kept)
    const pf = c.readRange(11 * W, new Uint8Array(ss));
    const held = disk.reads.slice(-3).map((r) => r.buffer);
    expect(new Set(held).size).toBe(3);
    for (const release of disk.gate.splice(0)) release();
    await Promise.all([pd, pe, pf]);
    expect(Buffer.compare(d, disk.bytes.subarray(9 * W, 9 * W + ss))).toBe(0);
    expect(Buffer.compare(e, disk.bytes.subarray(10 * W, 10 * W + ss))).toBe(0);
  });

  it("a streaming reader's batches go into the disk's own buffers, a few at most, each given back once the disk is done", async () => {
    const total = 128 * W;
    const disk = new LendingTarget(filled(total, 11), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 8 });
    const dst = new Uint8Array(ss);
    for (let at = 0; at < total; at += ss) {
      await c.readRange(at, dst);
      expect(Buffer.compare(dst, disk.bytes.subarray(at, at + ss)), `${at}`).toBe(0);
    }
    // Every full batch (4 windows) after the first few went into a lent buffer: the disk fills it in place.
    const full = disk.reads.filter((r) => r.length === 4 * W);
    expect(full.length).toBeGreaterThan(20);
    expect(full.slice(DEVICE_BATCHES).every((r) => disk.everLent.has(r.buffer))).toBe(true);
    // The growing batches before them, of a smaller size class, in ordinary memory.
    expect(disk.reads.filter((r) => r.length <= 2 * W).some((r) => disk.everLent.has(r.buffer))).toBe(false);
    expect(disk.mostLent).toBeLessThanOrEqual(DEVICE_BATCHES);
    expect(disk.allocs).toBe(DEVICE_BATCHES);
    // Batches the reader passed were taken back for the next ones: read again, they come from the disk again, right.
    const again = disk.reads.length;
    for (let at = 40 * W; at < 48 * W; at += ss) {
      await c.readRange(at, dst);
      expect(Buffer.compare(dst, disk.bytes.subarray(at, at + ss)), `again ${at}`).toBe(0);
    }
    expect(disk.reads.length).toBeGreaterThan(again);
    await c.close();
    expect(disk.lent.size).toBe(0);
    expect(disk.freed.length).toBe(DEVICE_BATCHES);
    expect(c.deviceBuffers).toBe(0);
  });

  it('close waits for a fetch under way before giving its buffer back', async () => {
    const total = 64 * W;
    const disk = new LendingTarget(filled(total, 12), ss);
    const c = new CachedTarget(disk, { window: W, ahead: 8 });
    const dst = new Uint8Array(ss);
    let at = 0;
    // Read on until a batch fills a lent buffer, and hold the fetches from then on.
    while (disk.lent.size === 0) await c.readRange((at += ss) - ss, dst);
    disk.gate = [];
    while (disk.gate.length === 0) await c.readRange((at += ss) - ss, dst);
    const held = disk.reads.at(-1)!.buffer;
    expect(disk.lent.has(held)).toBe(true);
    const closing = c.close();
    await new Promise((r) => setTimeout(r, 5));
    expect(disk.lent.has(held)).toBe(true); // still the disk's
    for (const release of disk.gate.splice(0)) release();
    await closing;
    expect(disk.lent.size).toBe(0);
    expect(disk.freed).toContain(held);
  });

  it('a disk with no buffers to lend gets ordinary memory, asked once', async () => {
    const total = 64 * W;
    const disk = new LendingTarget(filled(total, 13), ss);
    disk.refuse = true;
    const c = new CachedTarget(disk, { window: W, ahead: 8 });
    const dst = new Uint8Array(ss);
    for (let at = 0; at < total; at += ss) {
      await c.readRange(at, dst);
      expect(Buffer.compare(dst, disk.bytes.subarray(at, at + ss)), `${at}`).toBe(0);
    }
    expect(disk.allocs).toBe(1);
    await c.close();
    expect(disk.freed.length).toBe(0);
  });
});
