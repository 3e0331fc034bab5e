/**
 * The simulated blkback's storage: one vectored transfer per request on an
 * image file (preadv/pwritev), finished piece by piece when the kernel stops
 * short, with what is past the end of a sparse image reading as zeros; and
 * the same results from a memory disk.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDisk, type DiskIo } from '../../src/sim/blkback/disk.js';

let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function fill(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Buffers at scattered places in one memory block, as mapped grant pages are. */
function scattered(sizes: number[]): Uint8Array[] {
  const mem = new Uint8Array(sizes.reduce((a, b) => a + b + 512, 0));
  let at = 0;
  return sizes.map((n) => {
    const b = mem.subarray(at + 512, at + 512 + n);
    at += n + 512;
    return b;
  });
}

function exercise(disk: DiskIo, size: number): void {
  const parts = [fill(4096, 1), fill(512, 2), fill(3584, 3), fill(4096, 4)];
  const bufs = scattered(parts.map((p) => p.byteLength));
  bufs.forEach((b, i) => b.set(parts[i]!));
  disk.writev(8192, bufs, bufs.length);
  // Only the first n buffers take part.
  const back = scattered([4096, 512, 3584, 4096]);
  disk.readv(8192, back, 3);
  for (let i = 0; i < 3; i++) expect(Buffer.compare(back[i]!, parts[i]!), String(i)).toBe(0);
  expect(back[3]!.every((x) => x === 0)).toBe(true);
  const one = new Uint8Array(12288);
  disk.read(8192, one);
  expect(Buffer.compare(one.subarray(0, 4096 + 512 + 3584), Buffer.concat(parts.slice(0, 3)))).toBe(0);
  expect(size).toBeGreaterThanOrEqual(8192 + 12288);
}

describe('blkback storage', () => {
  it('an image file: one preadv/pwritev per request, the bytes where they belong', () => {
    dir = mkdtempSync(join(tmpdir(), 'blkdisk-'));
    const path = join(dir, 'disk.img');
    writeFileSync(path, new Uint8Array(64 << 10));
    const disk = openDisk({ kind: 'file', path, readOnly: false });
    exercise(disk, 64 << 10);
    disk.close();
    const file = readFileSync(path);
    expect(file[8192]).toBe(fill(1, 1)[0]);
    expect(file.byteLength).toBe(64 << 10);
  });

  it('an image file: a vectored read that runs past the end finishes with zeros, piece by piece', () => {
    dir = mkdtempSync(join(tmpdir(), 'blkdisk-'));
    const path = join(dir, 'disk.img');
    const data = fill(6144, 9);
    writeFileSync(path, data); // the file ends 2 KiB into the second buffer
    const disk = openDisk({ kind: 'file', path, readOnly: true });
    const bufs = scattered([4096, 4096, 4096]);
    for (const b of bufs) b.fill(0xee);
    disk.readv(0, bufs, 3);
    expect(Buffer.compare(bufs[0]!, data.subarray(0, 4096))).toBe(0);
    expect(Buffer.compare(bufs[1]!.subarray(0, 2048), data.subarray(4096))).toBe(0);
    expect(bufs[1]!.subarray(2048).every((x) => x === 0)).toBe(true);
    expect(bufs[2]!.every((x) => x === 0)).toBe(true);
    disk.close();
  });

  it('a memory disk gives the same results', () => {
    const disk = openDisk({ kind: 'memory', buffer: new SharedArrayBuffer(64 << 10) });
    exercise(disk, 64 << 10);
  });
});
