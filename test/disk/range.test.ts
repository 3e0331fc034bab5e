/**
 * Byte ranges on a sector-addressed disk (src/disk/range.ts), fed at every
 * split point: every start offset across three sectors and every length up
 * to three sectors, on 512- and 4096-byte sectors, against a plain byte
 * array as the reference. The bytes around a write are kept; aligned
 * ranges go straight through as one call; every call the disk sees is
 * whole sectors (the memory target refuses anything else).
 */
import { describe, expect, it } from 'vitest';
import { mergeSector, readRangeInto, writeRange } from '../../src/disk/range.js';
import { MemoryTarget } from '../helpers/images.js';

function filled(size: number, seed: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

describe.each([512, 4096])('byte ranges on %i-byte sectors', (ss) => {
  const size = 8 * ss;
  // Every offset in the first three sectors (stepping 1 near edges, else coarser to keep it quick) and lengths up to 3 sectors.
  const points = (limit: number): number[] => {
    const out = new Set<number>();
    for (let k = 0; k <= limit; k += ss) for (const d of [-2, -1, 0, 1, 2]) if (k + d >= 0 && k + d <= limit) out.add(k + d);
    for (let x = 0; x <= limit; x += Math.max(1, ss / 16)) out.add(x);
    return [...out].sort((a, b) => a - b);
  };
  const offsets = points(3 * ss);
  const lengths = points(3 * ss).filter((l) => l > 0);

  it(`readRangeInto: ${offsets.length} offsets × ${lengths.length} lengths read exactly their bytes`, async () => {
    const t = new MemoryTarget(filled(size, 1), ss);
    for (const off of offsets) {
      for (const len of lengths) {
        const dst = new Uint8Array(len);
        await readRangeInto(t, off, dst);
        expect(Buffer.compare(dst, t.bytes.subarray(off, off + len)), `${off}+${len}`).toBe(0);
      }
    }
  });

  it('writeRange: every split point writes its bytes and keeps the ones around them', async () => {
    let checked = 0;
    for (const off of offsets) {
      for (const len of lengths) {
        const before = filled(size, 2);
        const t = new MemoryTarget(before.slice(), ss);
        const src = filled(len, 9 + off);
        await writeRange(t, off, src);
        const want = before.slice();
        want.set(src, off);
        expect(Buffer.compare(t.bytes, want), `${off}+${len}`).toBe(0);
        // One write call, of the whole sectors the range touches.
        const start = Math.floor(off / ss) * ss;
        const end = Math.ceil((off + len) / ss) * ss;
        expect(t.writes, `${off}+${len}`).toEqual([{ offset: start, length: end - start }]);
        checked++;
      }
    }
    expect(checked).toBe(offsets.length * lengths.length);
  });

  it("aligned ranges go straight through: the caller's own buffer, no copy", async () => {
    const t = new MemoryTarget(size, ss);
    const seen: Uint8Array[] = [];
    const spy = {
      ...t,
      sectorSize: ss,
      size,
      readInto: (o: number, d: Uint8Array) => (seen.push(d), t.readInto(o, d)),
      write: (o: number, d: Uint8Array) => (seen.push(d), t.write(o, d)),
    };
    const buf = new Uint8Array(2 * ss);
    await readRangeInto(spy as unknown as MemoryTarget, ss, buf);
    await writeRange(spy as unknown as MemoryTarget, ss, buf);
    expect(seen).toEqual([buf, buf]);
    expect(seen[0]).toBe(buf);
    expect(seen[1]).toBe(buf);
  });

  it('mergeSector copies just the asked part of one sector', async () => {
    const t = new MemoryTarget(filled(size, 3), ss);
    const buf = new Uint8Array(2 * ss).fill(0xee);
    await mergeSector(t, ss, buf, ss, 5, 17);
    expect(Buffer.compare(buf.subarray(ss + 5, ss + 17), t.bytes.subarray(ss + 5, ss + 17))).toBe(0);
    expect(buf.subarray(0, ss + 5).every((x) => x === 0xee)).toBe(true);
    expect(buf.subarray(ss + 17).every((x) => x === 0xee)).toBe(true);
    await mergeSector(t, 0, buf, 0, 7, 7); // nothing to keep: no read
  });
});
