/**
 * What every grant sharer does the same way, whatever shares the pages:
 * argument checks, the set of live shares, the counters, unshare-after-close
 * as a no-op, and close() unsharing what is left. Implementations supply the
 * two operations that differ: sharing pages and ending a share.
 */
import { PlatformError } from '../errors.js';
import type { GrantSharer, GrantSharerStats, SharedPages } from './types.js';

export abstract class GrantSharerBase<P extends SharedPages> implements GrantSharer {
  private readonly live = new Set<P>();
  private closed = false;
  protected readonly counts: GrantSharerStats = { sharedPages: 0, shareCalls: 0, unshareCalls: 0, deferredEnds: 0 };

  /** Shares `count` zeroed pages with `domid`; arguments are already checked. */
  protected abstract sharePages(domid: number, count: number, writable: boolean): P;
  /** Ends a live share. */
  protected abstract unsharePages(pages: P): void;
  /** Releases the implementation's own resources, after every share has ended. */
  protected abstract release(): void;

  share(domid: number, count: number, writable: boolean): SharedPages {
    if (this.closed) throw new PlatformError('XEN_CLOSED', 'grant sharer closed');
    if (!Number.isInteger(count) || count < 1) throw new PlatformError('XEN_EINVAL', `bad page count ${count}`);
    if (!Number.isInteger(domid) || domid < 0 || domid > 0xffff) throw new PlatformError('XEN_EINVAL', `bad domid ${domid}`);
    const pages = this.sharePages(domid, count, writable);
    this.live.add(pages);
    this.counts.shareCalls++;
    this.counts.sharedPages += count;
    return pages;
  }

  unshare(shared: SharedPages): void {
    // After close() everything was unshared already: a late release (a pool torn down after its platform) is a no-op.
    if (this.closed) return;
    const pages = shared as P;
    if (!this.live.delete(pages)) throw new PlatformError('XEN_EINVAL', 'these pages are not shared by this sharer');
    this.counts.unshareCalls++;
    this.counts.sharedPages -= pages.refs.length;
    this.unsharePages(pages);
  }

  stats(): GrantSharerStats {
    return { ...this.counts };
  }

  close(): void {
    if (this.closed) return;
    for (const p of [...this.live]) this.unshare(p);
    this.closed = true;
    this.release();
  }
}
