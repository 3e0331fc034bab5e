/**
 * What the frontend needs from a grant table: share pages of its own memory
 * with another domain, and take the access back. Implemented over
 * libxengnttab's xengntshr_* on a real guest and by the simulated host.
 */

/** Pages shared with one domain by one {@link GrantSharer.share} call. */
export interface SharedPages {
  /** One grant ref per page, in page order. */
  readonly refs: readonly number[];
  /** All pages, contiguous: `refs.length * PAGE_SIZE` bytes of plain memory, no copy. */
  readonly bytes: Uint8Array;
  /** The domain the pages are shared with. */
  readonly domid: number;
  /** Whether the other domain may write them. */
  readonly writable: boolean;
}

export interface GrantSharerStats {
  /** Pages shared and not yet unshared. */
  sharedPages: number;
  /** Share calls made (each one call into the library, whatever the page count). */
  shareCalls: number;
  /** Unshare calls made. */
  unshareCalls: number;
  /**
   * Grants whose end was deferred because the other domain still had them
   * mapped; their pages are released once it unmaps.
   */
  deferredEnds: number;
}

export interface GrantSharer {
  /**
   * Shares `count` fresh zeroed pages with `domid`. One call however many pages,
   * so callers share in batches. Throws `XEN_ENOSPC` when grant refs or pages
   * run out, `XEN_EINVAL` for a bad count, `XEN_CLOSED` after close.
   */
  share(domid: number, count: number, writable: boolean): SharedPages;
  /**
   * Ends the grants and releases the pages. The view must not be used after.
   * A grant the other domain still maps is ended later, when it unmaps, as
   * Linux's gnttab does; the call itself never fails for that. After
   * close() (which unshared everything) it does nothing.
   */
  unshare(pages: SharedPages): void;
  stats(): GrantSharerStats;
  /**
   * The most pages that may be shared at once by everything on this guest
   * using the same mechanism, when the platform sets one (Linux's gntalloc
   * `limit` parameter, 1024 by default); undefined when there is none.
   */
  limit?(): number | undefined;
  /** Unshares what is left and releases the library handle. */
  close(): void;
}
