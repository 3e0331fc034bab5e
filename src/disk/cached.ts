/**
 * A read cache in front of a disk, as a kernel's page cache works for a
 * reader that asks for one small block at a time and awaits each: a small
 * read fetches the whole window around it and keeps it (the least recently
 * used dropped past `cacheBytes`), and a reader that keeps on where it left
 * off gets the next windows fetched ahead of it (readahead), more as its
 * sequential run grows, up to `ahead`, so a large file streams at the
 * ring's depth rather than one block per round trip, while a small file
 * (a run shorter than a window) fetches nothing it will not read, as the
 * kernel's on-demand readahead starts small and grows. Writes
 * go through at once and drop every window they touch, fetches under way
 * included, so a read after a write sees the write. Any byte range may be
 * asked for: the sectors around it are read whole (disk/range.ts).
 *
 * A streaming reader's batches are read into the target's own buffers
 * (`allocBuffer`: on a virtual disk, pages granted to the backend once,
 * which it fills in place), so the driver copies nothing out of its grant
 * pool for them. Those are a shared resource (gntalloc's limit, the
 * backend's persistent grants), so the cache holds a few of them at most
 * and takes back the one of a batch the reader has passed, as the kernel
 * lets a streaming reader's pages go first; where the target has none to
 * give, batches go into ordinary memory as before.
 */
import type { BlockTarget } from '../blkfront/target.js';
import { freeBufferQuietly, readRangeInto, writeRange } from './range.js';

export interface CacheOptions {
  /** Window in bytes, rounded up to whole sectors (default 64 KiB; 0: no cache, every read goes to the disk). */
  window?: number;
  /** Most windows fetched ahead of a sequential reader (default 32: 2 MiB). */
  ahead?: number;
  /** Bytes of windows kept (default 16 MiB). */
  cacheBytes?: number;
}

/**
 * Full readahead batches in the target's own buffers at most: the one being
 * read, the one after it, the one on its way and one to spare. With the
 * defaults 4 MiB, 1,024 pages: one queue's share of the backend's
 * persistent grants (blkfront/buffers.ts).
 */
export const DEVICE_BATCHES = 4;

export interface CacheStats {
  /** Reads answered wholly from windows already there (or on their way). */
  hits: number;
  /** Windows fetched from the disk. */
  windows: number;
}

interface Window {
  /** Its bytes (a view of its run's buffer), valid once the run's read has succeeded. */
  part: Uint8Array;
  run: Run;
}

/**
 * One fetch's buffer, shared by the windows it holds. It goes back to the
 * free list once no window of it is kept, no read is copying out of it and
 * the disk has finished writing into it: reused memory is already paged in,
 * where a fresh megabyte costs 256 page faults on the thread that first
 * writes it (on a virtual disk the event loop's, copying out of the grant
 * pages) and garbage to collect afterwards.
 */
interface Run {
  /** The whole buffer, of its size class (the fetch reads the start of it). */
  whole: Uint8Array;
  /** The target's own buffer (allocBuffer), one of the few the cache holds; else ordinary memory. */
  device: boolean;
  /** Its first and last window. */
  first: number;
  last: number;
  /** The disk's read into it. */
  read: Promise<void>;
  /** Windows of it in the cache (-1 once its buffer is back on the free list). */
  kept: number;
  /** Reads copying out of it. */
  readers: number;
  /** The disk's read into it has not settled. */
  filling: boolean;
  /** The disk's read into it succeeded: its windows' bytes can be read without waiting. */
  filled: boolean;
}

export class CachedTarget {
  /** Window size in bytes (0: no cache). */
  readonly window: number;
  private readonly ahead: number;
  /** Windows kept (least recently used dropped first). */
  private readonly kept: number;
  /** By window index; Map order is the LRU order (most recent last). */
  private readonly cache = new Map<number, Window>();
  /** Spare run buffers by size class, and their bytes (at most `spareMax`). */
  private readonly spare = new Map<number, Uint8Array[]>();
  private spareBytes = 0;
  private readonly spareMax: number;
  /** Size of a full readahead batch's buffer: the batches that go into the target's own buffers. */
  private readonly batchClass: number;
  /** The target's buffers held: in runs (oldest fetch first), and spare. */
  private readonly deviceRuns: Run[] = [];
  private readonly deviceSpare: Uint8Array[] = [];
  /** The target refused a buffer (none left to share): ordinary memory from then on. */
  private deviceRefused = false;
  private closed = false;
  private lastEnd = -1;
  /** Bytes read in the current sequential run. */
  private run = 0;
  /**
   * The run's window last read, and the window up to which every one after
   * it is known to be held (or on its way): the readahead looks for what is
   * missing only once the reader comes within half the distance of it, not
   * on every small read (the kernel's readahead marker, PG_readahead, does
   * the same: one check per batch, not per page).
   */
  private at = -1;
  private frontier = -1;
  readonly stats: CacheStats = { hits: 0, windows: 0 };

  constructor(
    readonly target: BlockTarget,
    opts: CacheOptions = {},
  ) {
    const ss = target.sectorSize;
    const w = opts.window ?? 64 << 10;
    this.window = w <= 0 ? 0 : Math.ceil(w / ss) * ss;
    this.ahead = opts.ahead ?? 32;
    this.kept = Math.max(1, Math.ceil((opts.cacheBytes ?? 16 << 20) / Math.max(this.window, 1)));
    // Enough spare for the windows a streaming reader has ahead of it, twice over.
    this.spareMax = 2 * (this.ahead + 1) * this.window;
    this.batchClass = this.ahead > 0 && this.window > 0 ? this.sizeClass(Math.ceil(this.ahead / 2) * this.window) : 0;
  }

  /** Buffers of the target's own the cache holds now (in windows, on their way, or spare). */
  get deviceBuffers(): number {
    return this.deviceRuns.length + this.deviceSpare.length;
  }

  /** Windows held now (fetched or on their way). */
  get size(): number {
    return this.cache.size;
  }

  /** Reads `dst.byteLength` bytes at `offset`: through windows when smaller than one, else straight from the disk. */
  async readRange(offset: number, dst: Uint8Array): Promise<void> {
    const length = dst.byteLength;
    const sequential = offset === this.lastEnd;
    this.run = sequential ? this.run + length : length;
    this.lastEnd = offset + length;
    if (this.window === 0 || length >= this.window) {
      await readRangeInto(this.target, offset, dst);
      return;
    }
    const W = this.window;
    const first = Math.floor(offset / W);
    const last = Math.floor((offset + length - 1) / W);
    let hit = true;
    for (let i = first; i <= last; i++) {
      let w = this.cache.get(i);
      if (w === undefined) {
        hit = false;
        w = this.fetchAlone(i);
      } else this.touch(i, w);
      // There already (most reads of a run): copied at once, no await, nothing can drop it meanwhile.
      if (w.run.filled) this.copyOut(w, i, offset, dst);
      else await this.waitAndCopy(w, i, offset, dst);
    }
    if (hit) this.stats.hits++;
    // One window ahead per window's worth of sequential run, up to `ahead`: a run shorter than a window fetches none.
    const n = Math.min(this.ahead, Math.floor(this.run / W));
    this.at = last;
    if (!sequential) this.frontier = last;
    if (sequential && n > 0) {
      // As the kernel's asynchronous readahead: once fewer than half of the windows wanted ahead
      // are there (or on their way), the next half are fetched by one request. A streaming reader
      // then costs a request per n/2 windows, all of one size (with the defaults 1 MiB, a ring
      // request's most: a batch a window over it would go to the disk as two requests, on two
      // queues, each waking its backend), a random one a window per miss.
      const half = Math.ceil(n / 2);
      if (this.frontier - last < half) this.readAhead(last, n, half);
    }
  }

  /** Copies the part of window `i` that `dst` (read at `offset`) covers. */
  private copyOut(w: Window, i: number, offset: number, dst: Uint8Array): void {
    const start = i * this.window;
    const from = Math.max(offset, start);
    const to = Math.min(offset + dst.byteLength, start + w.part.length);
    dst.set(w.part.subarray(from - start, to - start), from - offset);
  }

  /**
   * Waits for a window on its way, then copies out of it. Counted while it
   * waits and copies: a write may drop the window meanwhile, and its run
   * must not be reused under this copy.
   */
  private async waitAndCopy(w: Window, i: number, offset: number, dst: Uint8Array): Promise<void> {
    const run = w.run;
    run.readers++;
    try {
      await run.read;
      this.copyOut(w, i, offset, dst);
    } finally {
      run.readers--;
      this.release(run);
    }
  }

  /** Fetches the next `half` windows after `last` unless at least that many are held: the readahead's look, once per batch. */
  private readAhead(last: number, n: number, half: number): void {
    const lastWindow = Math.ceil(this.target.size / this.window) - 1;
    const to = Math.min(last + n, lastWindow);
    // Every window up to the frontier is held: the first missing one lies past it.
    let have = Math.max(last, this.frontier) + 1;
    while (have <= to && this.cache.has(have)) have++;
    if (have <= to && have - (last + 1) < half) {
      const end = Math.min(to, have + half - 1);
      this.fetchRun(have, end, true);
      this.frontier = end;
    } else this.frontier = have - 1;
  }

  /** Writes `src` at `offset` through to the disk, and drops the windows it touches. */
  async writeRange(offset: number, src: Uint8Array): Promise<void> {
    try {
      await writeRange(this.target, offset, src);
    } finally {
      this.drop(offset, src.byteLength);
    }
  }

  /** Forgets the windows over `offset`..`offset+length` (fetches under way included). */
  drop(offset: number, length: number): void {
    if (this.window === 0 || length <= 0) return;
    const first = Math.floor(offset / this.window);
    const last = Math.floor((offset + length - 1) / this.window);
    for (let i = first; i <= last; i++) this.forget(i);
  }

  /**
   * Fetches windows `from`..`to` (none of them held) with one read, each
   * window a view of its buffer: a full readahead batch into one of the
   * target's own buffers where the cache can have one.
   */
  private fetchRun(from: number, to: number, ahead = false): void {
    const W = this.window;
    const at = from * W;
    const n = Math.min((to - from + 1) * W, this.target.size - at);
    const dev = ahead && this.sizeClass(n) === this.batchClass ? this.takeDevice() : null;
    const whole = dev ?? this.take(n);
    const buf = whole.subarray(0, n);
    const read = this.target.readInto(at, buf);
    const run: Run = { whole, device: dev !== null, first: from, last: to, read, kept: 0, readers: 0, filling: true, filled: false };
    if (run.device) this.deviceRuns.push(run);
    for (let i = from; i <= to; i++) {
      const part = buf.subarray((i - from) * W, Math.min((i - from + 1) * W, buf.length));
      this.stats.windows++;
      this.forget(i);
      this.cache.set(i, { part, run });
      run.kept++;
    }
    const settled = (): void => {
      run.filling = false;
      this.release(run);
    };
    read.then(
      () => {
        run.filled = true;
        settled();
      },
      () => {
        // A failed fetch is not kept: the next read asks the disk again.
        for (let i = from; i <= to; i++) if (this.cache.get(i)?.run === run) this.forget(i);
        settled();
      },
    );
    this.evict();
  }

  private evict(): void {
    // Room for the windows being read and those fetched ahead, whatever the budget.
    const max = Math.max(this.ahead * 2 + 2, this.kept);
    while (this.cache.size > max) this.forget(this.cache.keys().next().value!);
  }

  /** Drops window `idx` from the cache, its run's buffer going back once nothing uses it. */
  private forget(idx: number): void {
    const w = this.cache.get(idx);
    if (w === undefined) return;
    // A window ahead of the reader gone (a write, the budget): the next look starts before it.
    if (idx > this.at && idx <= this.frontier) this.frontier = idx - 1;
    this.cache.delete(idx);
    w.run.kept--;
    this.release(w.run);
  }

  /** Keeps a run's buffer for reuse once no window, reader or fetch uses it (and there is room). */
  private release(run: Run): void {
    if (run.kept !== 0 || run.readers > 0 || run.filling) return;
    const whole = run.whole;
    if (run.device) {
      run.kept = -1;
      this.deviceRuns.splice(this.deviceRuns.indexOf(run), 1);
      if (this.closed) freeBufferQuietly(this.target, whole);
      else this.deviceSpare.push(whole);
      return;
    }
    const n = whole.byteLength;
    if (this.spareBytes + n > this.spareMax) return;
    run.kept = -1; // given back: never again
    const list = this.spare.get(n);
    if (list === undefined) this.spare.set(n, [whole]);
    else list.push(whole);
    this.spareBytes += n;
  }

  /**
   * A buffer of `n` bytes' size class (a power of two windows, so runs of
   * every length find a spare one): a spare one, else a new one. Its old
   * bytes are overwritten by the read.
   */
  private take(n: number): Uint8Array {
    const cls = this.sizeClass(n);
    const buf = this.spare.get(cls)?.pop();
    if (buf !== undefined) {
      this.spareBytes -= cls;
      return buf;
    }
    return new Uint8Array(cls);
  }

  /** A power of two windows, at least `n` bytes. */
  private sizeClass(n: number): number {
    let cls = this.window;
    while (cls < n) cls *= 2;
    return cls;
  }

  /**
   * One of the target's buffers for a full batch: a spare one, a new one
   * while the cache holds fewer than {@link DEVICE_BATCHES}, else the one of
   * a batch the reader is done with (its windows dropped, as the kernel drops
   * a streaming reader's pages first); null when there is none to have.
   */
  private takeDevice(): Uint8Array | null {
    if (this.closed) return null; // nothing would give it back
    const spare = this.deviceSpare.pop();
    if (spare !== undefined) return spare;
    if (this.deviceRuns.length < DEVICE_BATCHES && !this.deviceRefused) {
      try {
        return this.target.allocBuffer(this.batchClass);
      } catch {
        // None left to share (gntalloc's limit, on a real guest): ordinary memory, as before.
        this.deviceRefused = true;
        return null;
      }
    }
    for (const r of this.deviceRuns) {
      // Passed by the reader, or out beyond where it is reading ahead; settled and not being copied from.
      if (r.filling || r.readers > 0 || (r.last >= this.at && r.first <= this.frontier)) continue;
      for (let i = r.first; i <= r.last; i++) if (this.cache.get(i)?.run === r) this.forget(i);
      return this.deviceSpare.pop() ?? null;
    }
    return null;
  }

  /**
   * Gives the target's buffers back once the fetches into them have
   * settled, and forgets every window. The cache is not used afterwards.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const i of [...this.cache.keys()]) this.forget(i);
    for (const b of this.deviceSpare.splice(0)) freeBufferQuietly(this.target, b);
    // Runs still filling (or read from) free their buffers as they settle (release).
    await Promise.allSettled(this.deviceRuns.map((r) => r.read));
  }

  /** Window `idx`, not held: a fetch of it alone. */
  private fetchAlone(idx: number): Window {
    this.fetchRun(idx, idx);
    return this.cache.get(idx)!;
  }

  /** Makes a held window the most recently used (Map order is the LRU order). */
  private touch(idx: number, w: Window): void {
    this.cache.delete(idx);
    this.cache.set(idx, w);
  }
}
