/**
 * A per-queue pool of pages shared with the backend up front, as Unikraft's
 * blkfront keeps its grant-ref pool. A request takes its pages from the pool;
 * when the pool is empty it falls back to freshly shared pages, unshared when
 * the request completes, while pooled pages go back to the pool. With
 * persistent grants negotiated the backend maps each pooled grant once and
 * keeps it, so a warm pool means no grant operations at all per request.
 *
 * An async FIFO semaphore counts the free pooled pages. Taking never jumps the
 * queue of those waiting for pooled pages; waiting happens only when fallback
 * is off or capped, which is how a queue applies backpressure instead of
 * failing.
 */
import { PlatformError, XenError, isXenError } from '../errors.js';
import { Semaphore } from './semaphore.js';
import { type GrantSharer, type SharedPages } from './types.js';
import { PAGE_SIZE } from '../wire/page.js';

export interface GrantPoolOptions {
  /** Pages shared up front (0: every page is a fresh grant, as without a pool). */
  pages: number;
  /** Whether the backend may write pooled pages (default true: reads need it). */
  writable?: boolean;
  /** Fall back to fresh grants when the pool is empty (default true). */
  fallback?: boolean;
  /** Most fresh pages outstanding at once before takers wait for pooled ones (default unlimited). */
  maxFallbackPages?: number;
  /**
   * Keep fresh pages in the pool when they come back instead of unsharing
   * them, up to `maxPages` in all. With persistent grants the backend keeps
   * the grants it mapped, so ending them would only defer; Linux's blkfront
   * likewise adds such grants to its free list. Fresh pages are then taken
   * only while they can be kept: at `maxPages` takers wait for pooled pages
   * rather than share and unshare pages on every request. Default false.
   */
  keepFresh?: boolean;
  /** Largest the pool may grow to by keeping fresh pages (default unlimited). */
  maxPages?: number;
  /**
   * Zero every page when it is shared, before any ref of it reaches a
   * request (default false): for a backend the toolstack does not trust,
   * which must never see what memory held before.
   */
  zero?: boolean;
}

export interface GrantPoolStats {
  /** Pages handed out from the pool. */
  hits: number;
  /** Pages freshly shared because the pool had none free. */
  fallbacks: number;
  /** Pooled pages in use now. */
  inUse: number;
  /** Fresh pages in use now. */
  freshInUse: number;
  /** Most pooled pages in use at once. */
  highWater: number;
  /** Takes that had to wait for pooled pages. */
  waits: number;
  /** Pool size. */
  size: number;
  /** Fresh pages kept in the pool instead of unshared. */
  kept: number;
}

/** Pages lent to one request. Pooled pages come first. */
export interface GrantLease {
  /** Grant ref of each page, in order. */
  readonly refs: readonly number[];
  /** Each page (PAGE_SIZE bytes), in order. */
  readonly pages: readonly Uint8Array[];
  /** How many of them came from the pool. */
  readonly pooled: number;
}

class Lease implements GrantLease {
  released = false;
  constructor(
    readonly refs: number[],
    readonly pages: Uint8Array[],
    readonly pooled: number,
    readonly slots: number[],
    readonly fresh: SharedPages | null,
  ) {}
}

export class GrantPool {
  /** Every block of pages the pool owns: the first share, then kept fresh ones. */
  private readonly blocks: SharedPages[] = [];
  private readonly slotRefs: number[] = [];
  private readonly pageViews: Uint8Array[] = [];
  /** Free pool slots, used as a stack: the most recently returned page is the warmest. */
  private readonly free: number[] = [];
  private readonly sem: Semaphore;
  private readonly fallback: boolean;
  private readonly maxFallback: number;
  private readonly keepFresh: boolean;
  private readonly maxPages: number;
  private closedErr: XenError | null = null;
  private closeDone: (() => void) | null = null;
  private readonly closePromise: Promise<void>;
  private readonly zero: boolean;
  private counts = { hits: 0, fallbacks: 0, inUse: 0, freshInUse: 0, highWater: 0, waits: 0, kept: 0 };

  constructor(
    private readonly sharer: GrantSharer,
    readonly domid: number,
    opts: GrantPoolOptions,
  ) {
    const n = opts.pages;
    if (!Number.isInteger(n) || n < 0) throw new PlatformError('XEN_EINVAL', `bad pool size ${n}`);
    this.fallback = opts.fallback ?? true;
    this.maxFallback = opts.maxFallbackPages ?? Infinity;
    this.keepFresh = opts.keepFresh ?? false;
    this.maxPages = opts.maxPages ?? Infinity;
    this.zero = opts.zero ?? false;
    this.sem = new Semaphore(0);
    if (n > 0) this.adopt(this.shareZeroed(n, opts.writable ?? true));
    this.closePromise = new Promise((r) => (this.closeDone = r));
  }

  get size(): number {
    return this.pageViews.length;
  }

  /**
   * Lends `n` pages without waiting: pooled ones while there are free ones
   * (and nobody is queued for them), fresh ones for the rest. Returns null
   * when fresh grants are not allowed (fallback off, capped, or the grant
   * table is full); then {@link acquire} waits. `writable` applies to fresh
   * pages (pooled ones are shared as the pool was).
   */
  take(n: number, writable = true): GrantLease | null {
    this.checkOpen(n);
    const k = this.sem.tryAcquireUpTo(n);
    const fresh = n - k;
    let freshPages: SharedPages | null = null;
    if (fresh > 0) {
      // A pool that keeps fresh pages but is at its largest would share and unshare them on every request
      // (system calls here, a map and unmap in the backend): waiting for pooled pages is cheaper.
      const churn = this.keepFresh && this.size + this.counts.freshInUse + fresh > this.maxPages;
      if (!this.fallback || churn || this.counts.freshInUse + fresh > this.maxFallback) {
        this.sem.release(k);
        return null;
      }
      try {
        freshPages = this.shareZeroed(fresh, writable);
      } catch (err) {
        this.sem.release(k);
        if (isXenError(err, 'XEN_ENOSPC')) return null;
        throw err;
      }
    }
    return this.lend(k, freshPages);
  }

  /** Lends `n` pages, waiting (FIFO) for pooled pages when {@link take} cannot. */
  async acquire(n: number, signal?: AbortSignal): Promise<GrantLease> {
    const now = this.take(n);
    if (now !== null) return now;
    if (n > this.size) throw new PlatformError('XEN_EINVAL', `${n} pages wanted from a pool of ${this.size} without fallback`);
    this.counts.waits++;
    await this.sem.acquire(n, signal);
    return this.lend(n, null);
  }

  /** Gives the pages back: pooled ones to the pool, fresh ones unshared. Once per lease. */
  release(lease: GrantLease): void {
    const l = lease as Lease;
    if (!(l instanceof Lease) || l.released) throw new PlatformError('XEN_EINVAL', 'lease already released');
    l.released = true;
    for (const s of l.slots) this.free.push(s);
    this.counts.inUse -= l.slots.length;
    if (this.closedErr === null) this.sem.release(l.slots.length);
    if (l.fresh !== null) {
      this.counts.freshInUse -= l.fresh.refs.length;
      const keep = this.keepFresh && this.closedErr === null && this.size + l.fresh.refs.length <= this.maxPages;
      if (keep) {
        this.counts.kept += l.fresh.refs.length;
        this.adopt(l.fresh);
      } else this.sharer.unshare(l.fresh);
    }
    if (this.closedErr !== null) this.finishClose();
  }

  private shareZeroed(n: number, writable: boolean): SharedPages {
    const pages = this.sharer.share(this.domid, n, writable);
    if (this.zero) pages.bytes.fill(0);
    return pages;
  }

  /** Makes a block of shared pages part of the pool, free. */
  private adopt(block: SharedPages): void {
    this.blocks.push(block);
    const first = this.pageViews.length;
    const n = block.refs.length;
    for (let i = 0; i < n; i++) {
      this.pageViews.push(block.bytes.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
      this.slotRefs.push(block.refs[i]!);
    }
    for (let i = n - 1; i >= 0; i--) this.free.push(first + i);
    this.sem.release(n);
  }

  stats(): GrantPoolStats {
    return { ...this.counts, size: this.size };
  }

  /**
   * Tears the pool down: waiters are rejected with XEN_CLOSED, and the pooled
   * pages are unshared once every lease is back. Resolves when they are.
   */
  close(): Promise<void> {
    if (this.closedErr === null) {
      this.closedErr = new PlatformError('XEN_CLOSED', 'grant pool closed');
      this.sem.close(this.closedErr);
      this.finishClose();
    }
    return this.closePromise;
  }

  private lend(k: number, fresh: SharedPages | null): Lease {
    const n = k + (fresh?.refs.length ?? 0);
    const refs = new Array<number>(n);
    const pages = new Array<Uint8Array>(n);
    const slots = new Array<number>(k);
    for (let i = 0; i < k; i++) {
      const s = this.free.pop()!;
      slots[i] = s;
      refs[i] = this.slotRefs[s]!;
      pages[i] = this.pageViews[s]!;
    }
    if (fresh !== null) {
      for (let i = k; i < n; i++) {
        refs[i] = fresh.refs[i - k]!;
        pages[i] = fresh.bytes.subarray((i - k) * PAGE_SIZE, (i - k + 1) * PAGE_SIZE);
      }
      this.counts.fallbacks += n - k;
      this.counts.freshInUse += n - k;
    }
    this.counts.hits += k;
    this.counts.inUse += k;
    if (this.counts.inUse > this.counts.highWater) this.counts.highWater = this.counts.inUse;
    return new Lease(refs, pages, k, slots, fresh);
  }

  private finishClose(): void {
    if (this.counts.inUse > 0 || this.closeDone === null) return;
    for (const b of this.blocks) this.sharer.unshare(b);
    this.blocks.length = 0;
    this.closeDone();
    this.closeDone = null;
  }

  private checkOpen(n: number): void {
    if (this.closedErr !== null) throw this.closedErr;
    if (!Number.isInteger(n) || n < 1) throw new PlatformError('XEN_EINVAL', `bad page count ${n}`);
  }
}
