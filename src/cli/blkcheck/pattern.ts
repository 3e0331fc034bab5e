/**
 * blkcheck's data: bytes that say where on the disk they belong and which
 * round wrote them, so a read that returns another place's data, another
 * round's, or noise is told apart from the right bytes.
 */
import { fillPattern } from '../blkbench/workload.js';

/**
 * Fills `buf` with bytes that say where they belong: blkbench's verify
 * pattern (each 512-byte sector carries its disk offset and the round, as
 * blkbench's generation, then noise from both). `buf` starts on a 4-byte
 * boundary and is whole sectors.
 */
export function fill(buf: Uint8Array, offset: number, seed: number): Uint8Array {
  fillPattern(buf, offset, seed, 0);
  return buf;
}

/** Where `buf` differs from what {@link fill} put there, as "byte N", or null. */
export function differs(buf: Uint8Array, offset: number, seed: number): string | null {
  const want = fill(new Uint8Array(buf.byteLength), offset, seed);
  for (let i = 0; i < buf.byteLength; i++) if (buf[i] !== want[i]) return `byte ${offset + i} differs`;
  return null;
}
