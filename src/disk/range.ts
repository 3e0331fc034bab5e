/**
 * Byte ranges on a sector-addressed disk. A target takes whole sectors
 * only; what lies in part of a sector (a 1 KiB file-system block on 4 KiB
 * sectors, a stream that starts mid-sector) is read whole, and on a write
 * the bytes around the range are read and written back unchanged. Aligned
 * ranges go straight through with no copy.
 */
import type { BlockTarget } from '../blkfront/target.js';

/**
 * Gives a buffer from `target.allocBuffer` back. A closed device has ended
 * its buffers' grants already and refuses: nothing is left to do then.
 */
export function freeBufferQuietly(target: BlockTarget, buf: Uint8Array): void {
  try {
    target.freeBuffer(buf);
  } catch {
    // closed device
  }
}

/** Reads `dst.byteLength` bytes at byte `offset` of `target`, wherever they fall. */
export async function readRangeInto(target: BlockTarget, offset: number, dst: Uint8Array): Promise<void> {
  const ss = target.sectorSize;
  if (offset % ss === 0 && dst.byteLength % ss === 0) {
    await target.readInto(offset, dst);
    return;
  }
  const start = Math.floor(offset / ss) * ss;
  const end = Math.ceil((offset + dst.byteLength) / ss) * ss;
  const tmp = new Uint8Array(end - start);
  await target.readInto(start, tmp);
  dst.set(tmp.subarray(offset - start, offset - start + dst.byteLength));
}

/**
 * Copies bytes `from`..`to` of the disk's sector at `sectorAt` into `buf`,
 * where `bufAt` is the place of that sector's first byte in `buf`: the part
 * of an edge sector that a write must leave as it is.
 */
export async function mergeSector(
  target: BlockTarget,
  sectorAt: number,
  buf: Uint8Array,
  bufAt: number,
  from: number,
  to: number,
): Promise<void> {
  if (to <= from) return;
  const old = new Uint8Array(target.sectorSize);
  await target.readInto(sectorAt, old);
  buf.set(old.subarray(from, to), bufAt + from);
}

/**
 * Writes `src` at byte `offset` of `target`, wherever it falls: the
 * partial sectors at either end are merged with what the disk holds (one
 * read each, one when both ends share a sector) and the whole sectors
 * written in one call.
 */
export async function writeRange(target: BlockTarget, offset: number, src: Uint8Array): Promise<void> {
  const ss = target.sectorSize;
  const length = src.byteLength;
  if (offset % ss === 0 && length % ss === 0) {
    await target.write(offset, src);
    return;
  }
  const start = Math.floor(offset / ss) * ss;
  const end = Math.ceil((offset + length) / ss) * ss;
  const buf = new Uint8Array(end - start);
  const head = offset - start;
  const tailFrom = offset + length - (end - ss); // first byte after the data in the last sector
  if (end - start === ss) {
    // One sector holds both edges: read it once.
    const old = new Uint8Array(ss);
    await target.readInto(start, old);
    buf.set(old);
  } else {
    await mergeSector(target, start, buf, 0, 0, head);
    if (tailFrom < ss) await mergeSector(target, end - ss, buf, end - ss - start, tailFrom, ss);
  }
  buf.set(src, head);
  await target.write(start, buf);
}
