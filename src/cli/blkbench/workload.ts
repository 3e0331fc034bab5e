/**
 * The access pattern, shared by the driver run and the Node fs baseline so
 * both see the same offsets in the same order: sequential sweeps that wrap,
 * or uniform random blocks from a seeded generator, with a seeded read/write
 * mix. And the --verify pattern: every 512-byte sector of a block says which
 * byte offset it belongs to and which write (generation) put it there.
 */
import type { RwMode } from './options.js';

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }

  u32(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, n), for n up to 2^53. */
  below(n: number): number {
    if (n <= 0x100000000) return Math.floor((this.u32() / 0x100000000) * n);
    return Math.floor(((this.u32() * 0x200000 + (this.u32() >>> 11)) / 2 ** 53) * n);
  }
}

export class Workload {
  /** Blocks of `bs` bytes in the region. */
  readonly blocks: number;
  /** Whether the I/O {@link next} chose is a write. */
  write = false;
  private readonly random: boolean;
  private readonly mix: number;
  private seq = 0;
  private readonly pick: Rng;
  private readonly dir: Rng;

  constructor(
    readonly rw: RwMode,
    rwmixread: number,
    readonly bs: number,
    regionBytes: number,
    seed: number,
  ) {
    this.blocks = Math.floor(regionBytes / bs);
    this.random = rw.startsWith('rand');
    // randrw mixes; the others are all reads or all writes.
    this.mix = rw === 'randrw' ? rwmixread : rw === 'read' || rw === 'randread' ? 100 : 0;
    this.pick = new Rng(seed);
    this.dir = new Rng(seed ^ 0x9e3779b9);
  }

  /** The next I/O: returns its block index and sets {@link write}. No allocation. */
  next(): number {
    this.write = this.mix === 100 ? false : this.mix === 0 ? true : this.dir.below(100) >= this.mix;
    if (this.random) return this.pick.below(this.blocks);
    const b = this.seq;
    this.seq = b + 1 === this.blocks ? 0 : b + 1;
    return b;
  }
}

const SECTOR = 512;
const MAGIC = 0x626c6b62; // "bklb"

/** Fills `buf` with the pattern for byte `offset`, generation `gen` (buf's length a multiple of 512). */
export function fillPattern(buf: Uint8Array, offset: number, gen: number, seed: number): void {
  const w = new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
  for (let s = 0; s < buf.byteLength / SECTOR; s++) {
    const pos = offset + s * SECTOR;
    const base = s * (SECTOR / 4);
    w[base] = pos >>> 0;
    w[base + 1] = Math.floor(pos / 0x100000000);
    w[base + 2] = gen;
    w[base + 3] = (seed ^ MAGIC) >>> 0;
    let x = (pos ^ Math.imul(gen, 0x9e3779b1) ^ seed) | 1;
    for (let i = 4; i < SECTOR / 4; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      w[base + i] = x >>> 0;
    }
  }
}

/** What a mismatching block held: the offset, generation and seed its first bad sector claims. */
export interface Mismatch {
  offset: number;
  expectedGeneration: number;
  /** Byte offset of the first sector that differs. */
  sectorOffset: number;
  found: { offset: number; generation: number; seedOk: boolean };
}

/**
 * Checks `buf` against the pattern for (`offset`, `gen`): null when every
 * byte matches, else what the first differing sector holds, which tells a
 * stale block (old generation), a misdirected one (another offset) and
 * garbage apart.
 */
export function checkPattern(buf: Uint8Array, offset: number, gen: number, seed: number, scratch: Uint8Array): Mismatch | null {
  const want = scratch.subarray(0, buf.byteLength);
  fillPattern(want, offset, gen, seed);
  const a = new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength >>> 2);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.byteLength >>> 2);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      const base = i - (i % (SECTOR / 4));
      return {
        offset,
        expectedGeneration: gen,
        sectorOffset: offset + base * 4,
        found: { offset: a[base]! + a[base + 1]! * 0x100000000, generation: a[base + 2]!, seedOk: a[base + 3] === (seed ^ MAGIC) >>> 0 },
      };
    }
  }
  return null;
}
