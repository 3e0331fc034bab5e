/**
 * Seeded randomness for the property suites: every run prints its seed, and
 * FUZZ_SEED=<n> replays one. Each suite bounds itself by case count and time.
 */
import { expect } from 'vitest';
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
  /** Case numbers 1, 2, … up to `max`, or until `ms` have passed: the suite's bound. */
  cases(max: number, ms: number): Iterable<number>;
  /** Cases run so far by {@link cases}. */
  readonly ran: number;
  /** How the cases ended. */
  readonly tally: Tally;
  /**
   * Prints what the suite tried (`what`: the cases, named) and how they
   * ended, and expects each outcome in `seen` at least once: a suite that
   * never reached them proved nothing.
   */
  report(what: string, ...seen: string[]): void;
}

/** A generator for `suite`, seeded from FUZZ_SEED or the clock; the seed is printed so a failure can be replayed. */
export function fuzz(suite: string): Fuzz {
  const seed = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : (Date.now() ^ (process.pid << 8)) >>> 0;
  console.log(`fuzz ${suite}: seed ${seed} (replay with FUZZ_SEED=${seed})`);
  const next = rng(seed);
  const int = (n: number): number => next() % n;
  let ran = 0;
  const tally = new Tally();
  return {
    seed,
    tally,
    report(what, ...seen) {
      console.log(`fuzz ${suite}: ${ran} ${what}; ${String(tally)}`);
      for (const outcome of seen) expect(tally.get(outcome), `fuzz ${suite}: no case ended "${outcome}" (seed ${seed})`).toBeGreaterThan(0);
    },
    get ran() {
      return ran;
    },
    int,
    pick: <T>(items: readonly T[]): T => items[int(items.length)]!,
    chance: (p) => next() / 0x100000000 < p,
    *cases(max, ms) {
      const deadline = Date.now() + ms;
      for (let c = 1; c <= max && Date.now() < deadline; c++) {
        ran = c;
        yield c;
      }
    },
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
