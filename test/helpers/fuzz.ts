/**
 * Seeded randomness for the property suites: every run prints its seed, and
 * FUZZ_SEED=<n> replays one. Each suite bounds itself by case count and time.
 */
import { rng } from './blk.js';

export interface Fuzz {
  readonly seed: number;
  /** A whole number in [0, n). */
  int(n: number): number;
  /** One of `items`. */
  pick<T>(items: readonly T[]): T;
  /** True with probability `p`. */
  chance(p: number): boolean;
  bytes(n: number): Uint8Array;
}

/** A generator for `suite`, seeded from FUZZ_SEED or the clock; the seed is printed so a failure can be replayed. */
export function fuzz(suite: string): Fuzz {
  const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : (Date.now() ^ (process.pid << 8)) >>> 0;
  console.log(`fuzz ${suite}: seed ${seed} (replay with FUZZ_SEED=${seed})`);
  const next = rng(seed);
  const int = (n: number): number => next() % n;
  return {
    seed,
    int,
    pick: <T>(items: readonly T[]): T => items[int(items.length)]!,
    chance: (p) => next() / 0x100000000 < p,
    bytes: (n) => {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = next() & 0xff;
      return b;
    },
  };
}

/** Counts what a suite tried and how each case ended. */
export class Tally {
  readonly counts = new Map<string, number>();
  add(what: string): void {
    this.counts.set(what, (this.counts.get(what) ?? 0) + 1);
  }
  get(what: string): number {
    return this.counts.get(what) ?? 0;
  }
  toString(): string {
    return [...this.counts].map(([k, v]) => `${k} ${v}`).join(', ');
  }
}
