/**
 * blkcheck's data: bytes that say where on the disk they belong and which
 * round wrote them, so a read that returns another place's data, another
 * round's, or noise is told apart from the right bytes.
 */
import { BLKIF_SECTOR_SIZE } from '../../wire/blkif.js';

/** Fills `buf` with bytes that say where they belong: each 512-byte sector carries its disk offset and the round's seed, then noise from both. */
export function fill(buf: Uint8Array, offset: number, seed: number): Uint8Array {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let s = 0; s < buf.byteLength; s += BLKIF_SECTOR_SIZE) {
    const at = offset + s;
    v.setUint32(s, at % 0x100000000, true);
    v.setUint32(s + 4, Math.floor(at / 0x100000000), true);
    v.setUint32(s + 8, seed, true);
    let x = (at / BLKIF_SECTOR_SIZE) ^ (seed * 0x9e3779b1) ^ 0x5bd1e995;
    for (let i = 12; i < BLKIF_SECTOR_SIZE; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      v.setUint32(s + i, x >>> 0, true);
    }
  }
  return buf;
}

/** Where `buf` differs from what {@link fill} put there, as "byte N", or null. */
export function differs(buf: Uint8Array, offset: number, seed: number): string | null {
  const want = fill(new Uint8Array(buf.byteLength), offset, seed);
  for (let i = 0; i < buf.byteLength; i++) if (buf[i] !== want[i]) return `byte ${offset + i} differs`;
  return null;
}
