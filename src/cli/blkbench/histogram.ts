/**
 * Latency histogram with fixed memory: exact below 64 ns, then 32 buckets
 * per power of two (about 3% wide), as HdrHistogram and fio's log-linear
 * buckets do. Recording is a few arithmetic operations and no allocation,
 * so a million-request run costs nothing more than a short one.
 */
const SUB_BITS = 5;
const SUB = 1 << SUB_BITS;
const LINEAR = 2 * SUB; // values below this have a bucket each
const MAX_EXP = 44; // about 4.9 hours in ns; anything longer is clamped
const BUCKETS = LINEAR + (MAX_EXP - SUB_BITS - 1) * SUB;

/** A histogram as plain data. */
export interface HistogramData {
  counts: Float64Array;
  count: number;
  sum: number;
  min: number;
  max: number;
}

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  count = 0;
  sum = 0;
  min = Infinity;
  max = 0;

  record(ns: number): void {
    const v = ns < 0 ? 0 : Math.round(ns);
    this.count++;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
    this.counts[Histogram.bucket(v)]!++;
  }

  /** Bucket index of value `v` (a non-negative integer). */
  static bucket(v: number): number {
    if (v < LINEAR) return v;
    const e = v < 0x100000000 ? 31 - Math.clz32(v) : Math.floor(Math.log2(v));
    if (e >= MAX_EXP) return BUCKETS - 1;
    const sub = Math.floor(v / 2 ** (e - SUB_BITS)) - SUB;
    return LINEAR + (e - SUB_BITS - 1) * SUB + sub;
  }

  /** [lowest, highest] values that land in bucket `i`. */
  static range(i: number): [number, number] {
    if (i < LINEAR) return [i, i];
    const e = Math.floor((i - LINEAR) / SUB) + SUB_BITS + 1;
    const sub = (i - LINEAR) % SUB;
    const width = 2 ** (e - SUB_BITS);
    const lo = (SUB + sub) * width;
    return [lo, lo + width - 1];
  }

  get mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }

  /** The value at quantile q (0..1): the middle of its bucket, kept within the exact min and max. */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        const [lo, hi] = Histogram.range(i);
        return Math.min(this.max, Math.max(this.min, Math.round((lo + hi) / 2)));
      }
    }
    return this.max;
  }

  /** Plain data for another thread (postMessage); {@link Histogram.from} makes it a histogram again. */
  snapshot(): HistogramData {
    return { counts: this.counts.slice(), count: this.count, sum: this.sum, min: this.min, max: this.max };
  }

  static from(d: HistogramData): Histogram {
    const h = new Histogram();
    h.counts.set(d.counts);
    h.count = d.count;
    h.sum = d.sum;
    h.min = d.min;
    h.max = d.max;
    return h;
  }

  /** Adds every value `other` recorded (another job's latencies). */
  add(other: Histogram): void {
    for (let i = 0; i < BUCKETS; i++) this.counts[i]! += other.counts[i]!;
    this.count += other.count;
    this.sum += other.sum;
    this.min = Math.min(this.min, other.min);
    this.max = Math.max(this.max, other.max);
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.min = Infinity;
    this.max = 0;
  }
}
