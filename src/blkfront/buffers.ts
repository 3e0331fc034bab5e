/**
 * Device buffers: caller memory that is itself granted to the backend, so
 * I/O on it needs no bounce page and no copy (the zero-copy path, as
 * MirageOS grants its Io_pages and Linux grants bio pages directly). Each
 * buffer is a run of pages shared once, when it is allocated; with
 * persistent grants the backend maps them once and keeps them.
 *
 * A freed buffer's pages are kept for the next allocation of the same size
 * rather than unshared: unsharing unmaps them on a real guest, and a view
 * the caller still holds would then point at nothing.
 */
import { BlkifError, PlatformError } from '../errors.js';
import { type GrantSharer, type SharedPages } from '../gnttab/types.js';
import { PAGE_SIZE } from '../wire/page.js';
import { grantsLeft } from './budget.js';

export interface BufferRegion {
  readonly shared: SharedPages;
  /** byteOffset of its first page in `shared.bytes.buffer`. */
  readonly start: number;
  readonly end: number;
  /** Calls in flight on it; it cannot be freed meanwhile. */
  inflight: number;
  free: boolean;
  /** Its grants died with a restored domain: its memory is still the owner's, its I/O is bounced. */
  stale: boolean;
  /**
   * Its queue, with persistent grants: the backend keeps a bounded set of
   * persistent grants per queue (Linux: 1056), so a buffer used on every
   * queue would take a slot in each and push the working set past the bound.
   * Buffers fill one queue's share ({@link HOME_PAGES}) before the next, as
   * the submitter fills one ring before spreading: small buffers share one
   * ring and its event channel, large sets still spread over every queue.
   */
  readonly home: number;
}

/** Pages of device buffers homed on one queue before the next: 4 MiB, under blkback's 1056 persistent grants per queue. */
export const HOME_PAGES = 1024;

export class DeviceBuffers {
  /** Regions per underlying ArrayBuffer, sorted by start. */
  private readonly byBuffer = new Map<ArrayBufferLike, BufferRegion[]>();
  private readonly spare = new Map<number, BufferRegion[]>();
  private pagesShared = 0;
  /** Plain memory handed out instead while the backend is not trusted. */
  private readonly plain = new WeakSet<ArrayBufferLike>();
  private inPlace = true;

  constructor(
    private readonly grants: GrantSharer,
    private readonly domid: number,
  ) {}

  get pages(): number {
    return this.pagesShared;
  }

  /** Whether buffers are granted in place (true), or plain memory bounced through the pool (an untrusted backend). */
  get granted(): boolean {
    return this.inPlace;
  }

  /**
   * The toolstack says the backend is not trusted (`trusted` = 0, XSA-403):
   * nothing of the caller's memory is granted from now on. Buffers shared
   * before become stale (bounced) and new ones are plain memory.
   */
  distrust(): void {
    if (!this.inPlace) return;
    this.inPlace = false;
    this.invalidate();
  }

  /** A buffer of at least `length` bytes (whole pages), granted to the backend read-write. */
  alloc(length: number): Uint8Array {
    if (!Number.isSafeInteger(length) || length <= 0) throw new BlkifError('BLKIF_EINVAL', `allocBuffer: bad length ${length}`);
    const pages = Math.ceil(length / PAGE_SIZE);
    if (!this.inPlace) {
      const mem = new Uint8Array(pages * PAGE_SIZE);
      this.plain.add(mem.buffer);
      return mem.subarray(0, length);
    }
    const reuse = this.spare.get(pages)?.pop();
    if (reuse !== undefined) {
      reuse.free = false;
      return reuse.shared.bytes.subarray(0, length);
    }
    // gntalloc's limit covers every user on the guest. Where this process alone would pass it the
    // share would fail as surely, and libxengnttab would print its own error on stderr first.
    const left = grantsLeft(this.grants);
    if (pages > left) {
      throw new PlatformError(
        'XEN_ENOSPC',
        `allocBuffer: ${pages} pages would pass gntalloc's limit (${left} left to this process); ` +
          'raise /sys/module/xen_gntalloc/parameters/limit',
      );
    }
    const shared = this.grants.share(this.domid, pages, true);
    const bytes = shared.bytes;
    const r: BufferRegion = {
      shared,
      start: bytes.byteOffset,
      end: bytes.byteOffset + pages * PAGE_SIZE,
      inflight: 0,
      free: false,
      stale: false,
      home: Math.floor(this.pagesShared / HOME_PAGES),
    };
    const list = this.byBuffer.get(bytes.buffer) ?? [];
    list.splice(this.search(list, r.start), 0, r);
    this.byBuffer.set(bytes.buffer, list);
    this.pagesShared += pages;
    return bytes.subarray(0, length);
  }

  /** Gives a buffer back (the one alloc returned, not a part of it). */
  free(buf: Uint8Array): void {
    if (!(buf instanceof Uint8Array)) throw new BlkifError('BLKIF_EINVAL', 'freeBuffer: not a buffer this device allocated');
    if (this.plain.has(buf.buffer) && buf.byteOffset === 0) {
      this.plain.delete(buf.buffer);
      return;
    }
    const r = this.region(buf);
    if (r === null || r.start !== buf.byteOffset || r.free)
      throw new BlkifError('BLKIF_EINVAL', 'freeBuffer: not a buffer this device allocated, or already freed');
    if (r.inflight > 0) throw new BlkifError('BLKIF_EINVAL', `freeBuffer: ${r.inflight} call(s) still use it`);
    r.free = true;
    if (r.stale) {
      // Nothing to keep it for: its grants are dead.
      this.drop(r);
      return;
    }
    const pages = (r.end - r.start) / PAGE_SIZE;
    const list = this.spare.get(pages) ?? [];
    list.push(r);
    this.spare.set(pages, list);
  }

  /**
   * The region `view` lies in and the index of the page it starts on, when
   * it can go to the backend as it is: inside one live buffer and starting
   * on a page boundary (segments are filled from sector 0). Else null, and
   * the I/O is bounced through the pool.
   */
  find(view: Uint8Array): { region: BufferRegion; page: number } | null {
    const r = this.region(view);
    if (r === null || r.free || r.stale) return null;
    const rel = view.byteOffset - r.start;
    if (rel % PAGE_SIZE !== 0 || view.byteOffset + view.byteLength > r.end) return null;
    return { region: r, page: rel / PAGE_SIZE };
  }

  private region(view: Uint8Array): BufferRegion | null {
    if (this.pagesShared === 0) return null;
    const list = this.byBuffer.get(view.buffer);
    if (list === undefined) return null;
    const i = this.search(list, view.byteOffset + 1) - 1;
    const r = list[i];
    return r !== undefined && view.byteOffset < r.end ? r : null;
  }

  /** First index whose start is at least `at`. */
  private search(list: BufferRegion[], at: number): number {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.start < at) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * After a restore: every buffer's grants are dead. Buffers kept for reuse
   * are unshared; buffers their owners hold stay mapped (unsharing would
   * unmap memory in use) and their I/O goes through the pool from now on,
   * until they are freed.
   */
  invalidate(): void {
    for (const list of this.spare.values()) for (const r of list) this.drop(r);
    this.spare.clear();
    for (const list of this.byBuffer.values()) for (const r of list) r.stale = true;
  }

  private drop(r: BufferRegion): void {
    const list = this.byBuffer.get(r.shared.bytes.buffer);
    const i = list?.indexOf(r) ?? -1;
    if (list !== undefined && i >= 0) list.splice(i, 1);
    this.grants.unshare(r.shared);
    this.pagesShared -= (r.end - r.start) / PAGE_SIZE;
  }

  /** Unshares every buffer (the device is closed and the backend disconnected). */
  close(): void {
    for (const list of this.byBuffer.values()) for (const r of list) this.grants.unshare(r.shared);
    this.byBuffer.clear();
    this.spare.clear();
    this.pagesShared = 0;
  }
}
