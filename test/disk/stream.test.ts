import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createReadStream as fileReadStream, createWriteStream as fileWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createReadStream, createWriteStream, openPartition, readChunks, type BlockTarget } from '../../src/index.js';
import { diskFixture } from '../helpers/blk.js';
import { blankImage, run, scratch, sha } from '../helpers/images.js';

/** A target that passes everything to `inner` (its prototype) and counts the reads in flight. */
function counting(inner: BlockTarget): BlockTarget & { inFlight: number; most: number } {
  const t = Object.create(inner) as BlockTarget & { inFlight: number; most: number };
  t.inFlight = 0;
  t.most = 0;
  t.readInto = async (o: number, d: Uint8Array) => {
    t.inFlight++;
    t.most = Math.max(t.most, t.inFlight);
    try {
      await inner.readInto(o, d);
    } finally {
      t.inFlight--;
    }
  };
  return t;
}

const collect = (): { sink: Writable; bytes: () => Buffer } => {
  const chunks: Buffer[] = [];
  return {
    sink: new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    }),
    bytes: () => Buffer.concat(chunks),
  };
};

describe('streams on a vbd', () => {
  it('pipeline from a file to the vbd at an unaligned offset and back to a file: same bytes, the bytes around them kept', async () => {
    const tmp = scratch();
    const fx = await diskFixture({ size: 16 << 20 });
    try {
      const mem = fx.disk.memory!;
      mem.set(randomBytes(mem.length)); // the disk's bytes before: what must survive around the write
      const around = Buffer.from(mem);
      const src = join(tmp.dir, 'in.bin');
      const data = randomBytes((5 << 20) + 123);
      writeFileSync(src, data);
      const start = 1000;
      const ws = createWriteStream(fx.dev, { start, chunkSize: 256 << 10, depth: 4 });
      await pipeline(fileReadStream(src, { highWaterMark: 100_000 }), ws);
      expect((ws as unknown as { bytesWritten: number }).bytesWritten).toBe(data.length);
      expect(sha(mem.subarray(start, start + data.length))).toBe(sha(data));
      expect(Buffer.compare(mem.subarray(0, start), around.subarray(0, start))).toBe(0);
      expect(Buffer.compare(mem.subarray(start + data.length), around.subarray(start + data.length))).toBe(0);
      const out = join(tmp.dir, 'out.bin');
      await pipeline(
        createReadStream(fx.dev, { start, end: start + data.length - 1, chunkSize: 64 << 10, depth: 8 }),
        fileWriteStream(out),
      );
      expect(sha(readFileSync(out))).toBe(sha(data));
      expect(fx.dev.stats().flushes).toBeGreaterThan(0);
    } finally {
      await fx.close();
      tmp.remove();
    }
  });

  it('keeps `depth` requests in flight, no more, and follows a slow consumer (backpressure)', async () => {
    const fx = await diskFixture({ size: 8 << 20 });
    try {
      fx.disk.setDelay(300);
      const t = counting(fx.dev);
      const rs = createReadStream(t, { chunkSize: 64 << 10, depth: 3 });
      let got = 0;
      for await (const c of rs) {
        got += (c as Buffer).length;
        if (got < 1 << 20) await sleep(5); // slow at first: the stream must wait, not read ahead without bound
        expect(rs.readableLength).toBeLessThanOrEqual((64 << 10) * 4);
      }
      expect(got).toBe(8 << 20);
      expect(t.most).toBe(3);
    } finally {
      await fx.close();
    }
  });

  it('errors end the stream, typed: a failing read (BLKIF_EIO), past the end (BLKIF_ERANGE, nothing written past it), a read-only disk (BLKIF_EROFS)', async () => {
    const fx = await diskFixture({ size: 1 << 20 });
    try {
      fx.disk.inject({ kind: 'error', ops: ['read'], count: 1 });
      const c = collect();
      await expect(pipeline(createReadStream(fx.dev, { chunkSize: 64 << 10 }), c.sink)).rejects.toMatchObject({ code: 'BLKIF_EIO' });
      const mem = fx.disk.memory!;
      mem.fill(7);
      const ws = createWriteStream(fx.dev, { start: (1 << 20) - 4096, chunkSize: 4096 });
      await expect(
        pipeline(async function* () {
          yield Buffer.alloc(4096, 1);
          yield Buffer.alloc(4096, 2);
        }, ws),
      ).rejects.toMatchObject({ code: 'BLKIF_ERANGE' });
      expect(mem.subarray(0, (1 << 20) - 4096).every((b) => b === 7)).toBe(true);
      expect(() => createReadStream(fx.dev, { start: 0, end: 1 << 20 })).toThrow(expect.objectContaining({ code: 'BLKIF_ERANGE' }));
      // A stream destroyed mid-way gives its device buffers back once its reads settle.
      const t = counting(fx.dev);
      const rs = createReadStream(t, { chunkSize: 4096, depth: 8 });
      rs.once('data', () => rs.destroy());
      await new Promise((r) => rs.once('close', r));
      expect(t.inFlight).toBe(0);
    } finally {
      await fx.close();
    }
    const ro = await diskFixture({ size: 1 << 20, readOnly: true });
    try {
      expect(() => createWriteStream(ro.dev)).toThrow(expect.objectContaining({ code: 'BLKIF_EROFS' }));
    } finally {
      await ro.close();
    }
  });

  it('on a partition: bounded by it, offsets relative to it', async () => {
    const tmp = scratch();
    const img = join(tmp.dir, 'p.img');
    blankImage(img, 8 << 20);
    run('sgdisk', ['-n', '1:2048:+1M', '-n', '2:0:+1M', img]);
    const fx = await diskFixture({ image: img });
    try {
      const p1 = await openPartition(fx.dev, 1);
      const data = randomBytes(p1.size - 100);
      await pipeline(
        async function* () {
          yield data;
        },
        createWriteStream(p1, { start: 50 }),
      );
      const c = collect();
      await pipeline(createReadStream(p1, { start: 50, end: 50 + data.length - 1 }), c.sink);
      expect(sha(c.bytes())).toBe(sha(data));
      await expect(
        pipeline(
          async function* () {
            yield Buffer.alloc(200);
          },
          createWriteStream(p1, { start: p1.size - 100 }),
        ),
      ).rejects.toMatchObject({ code: 'BLKIF_ERANGE' });
      expect(
        readFileSync(img)
          .subarray(2048 * 512 + (1 << 20), 2048 * 512 + (1 << 20) + 4096)
          .every((b) => b === 0),
      ).toBe(true);
    } finally {
      await fx.close();
      tmp.remove();
    }
  });
});

describe('readChunks: chunks read in place, lent until the next step', () => {
  it('any byte range, in order, the same bytes as the disk; depth in flight while the caller holds a chunk', async () => {
    const fx = await diskFixture({ size: 8 << 20 });
    try {
      const mem = fx.disk.memory!;
      mem.set(randomBytes(8 << 20));
      const t = counting(fx.dev);
      for (const [start, end] of [
        [0, (8 << 20) - 1],
        [777, (3 << 20) + 12_345],
        [4096, 4096],
        [100, 99],
      ] as const) {
        const parts: Buffer[] = [];
        for await (const c of readChunks(t, { start, end, chunkSize: 256 << 10, depth: 3 })) {
          expect(c.byteLength).toBeLessThanOrEqual(256 << 10);
          parts.push(Buffer.from(c)); // a copy: the view is lent only until the next step
          expect(t.inFlight).toBeLessThanOrEqual(3);
        }
        expect(sha(Buffer.concat(parts)), `${start}..${end}`).toBe(sha(mem.subarray(start, end + 1)));
      }
      expect(t.most).toBe(3);
      // Device buffers: depth + the one lent (4 × 64 pages), given back after each loop and taken again by the next.
      expect(fx.dev.stats().bufferPages).toBe(4 * 64);
    } finally {
      await fx.close();
    }
  });

  it('a failed read ends the loop with its typed error; leaving early gives the buffers back once their reads settle', async () => {
    const fx = await diskFixture({ size: 4 << 20 });
    try {
      fx.disk.inject({ kind: 'error', ops: ['read'], count: 1 });
      const loop = async (): Promise<void> => {
        for await (const _ of readChunks(fx.dev, { chunkSize: 64 << 10 })) {
          /* consume */
        }
      };
      await expect(loop()).rejects.toMatchObject({ code: 'BLKIF_EIO' });
      fx.disk.setDelay(200);
      const t = counting(fx.dev);
      let n = 0;
      for await (const _ of readChunks(t, { chunkSize: 64 << 10, depth: 6 })) if (++n === 2) break;
      expect(t.inFlight).toBe(0);
      // Given back: a second loop takes the same buffers again rather than sharing more pages.
      const pages = fx.dev.stats().bufferPages;
      for await (const _ of readChunks(t, { chunkSize: 64 << 10, depth: 6 })) if (++n === 4) break;
      expect(fx.dev.stats().bufferPages).toBe(pages);
      await expect(readChunks(fx.dev, { end: 4 << 20 }).next()).rejects.toMatchObject({ code: 'BLKIF_ERANGE' });
    } finally {
      await fx.close();
    }
  });
});
