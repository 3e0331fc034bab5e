/**
 * Grant tables on the simulated host.
 *
 * The guest side ({@link SimGrantSharer}) writes grant_entry_v1 entries into
 * its own table, flags last, as a guest kernel does. The backend side
 * ({@link SimGrantMapper}) maps them by checking what Xen's map_grant_ref
 * checks, with the same compare-and-swap on the entry's first word (flags and
 * domid together): the grant is in use, it is for the mapping domain, and it
 * is writable when mapped for writing. A mapped grant carries GTF_reading /
 * GTF_writing, so the guest cannot end it until the backend unmaps, which is
 * how Xen keeps a page from being reused under a backend's feet.
 */
import { GrantError, PlatformError } from '../../errors.js';
import {
  GNTST_bad_domain,
  GNTST_bad_gntref,
  GNTST_bad_handle,
  GNTST_bad_virt_addr,
  GNTST_general_error,
  GNTTAB_NR_RESERVED_ENTRIES,
  GTF_permit_access,
  GTF_reading,
  GTF_readonly,
  GTF_type_mask,
  GTF_writing,
  grantCombo,
} from '../../wire/grant_table.js';
import type { SharedPages } from '../../gnttab/types.js';
import { GrantSharerBase } from '../../gnttab/sharer_base.js';
import { ACTIVE_WORDS, ActiveWord, Counter, lockWord, unlockWord, type SimDomain, type SimHypervisor } from './hypervisor.js';

/** First-fit allocator of contiguous frame runs over a bitmap. */
export class FrameAllocator {
  private readonly used: Uint8Array;
  private hint = 1;
  free: number;

  /** `range`: only frames [first, first + count) are handed out (a thread's share of the domain's memory). */
  constructor(
    readonly pages: number,
    range?: { first: number; count: number },
  ) {
    this.used = new Uint8Array(pages);
    // Frame 0 is never handed out, so a zero frame number is always a bug.
    this.used[0] = 1;
    this.free = pages - 1;
    if (range !== undefined) {
      this.used.fill(1);
      this.used.fill(0, range.first, range.first + range.count);
      this.free = range.count;
      this.hint = range.first;
    }
  }

  alloc(count: number): number {
    for (const start of [this.hint, 1]) {
      let run = 0;
      for (let f = start; f < this.pages; f++) {
        run = this.used[f] ? 0 : run + 1;
        if (run === count) {
          const first = f - count + 1;
          this.used.fill(1, first, f + 1);
          this.free -= count;
          this.hint = f + 1;
          return first;
        }
      }
    }
    return -1;
  }

  release(first: number, count: number): void {
    this.used.fill(0, first, first + count);
    this.free += count;
    if (first < this.hint) this.hint = first;
  }
}

/** Pages the simulated guest shared: their refs and a view of its memory. */
export class SimSharedPages implements SharedPages {
  /** Refs not yet ended; the frames go back only when this reaches 0. */
  live: number;
  constructor(
    readonly refs: number[],
    readonly bytes: Uint8Array,
    readonly domid: number,
    readonly writable: boolean,
    readonly frame: number,
  ) {
    this.live = refs.length;
  }
}

/**
 * A share of a domain's grant refs and memory set apart for another thread
 * of the same guest ({@link SimGrantSharer.carve}): plain data, posted to the
 * thread, which shares from it alone.
 */
export interface SimGrantShare {
  refs: number[];
  frame: number;
  frames: number;
}

/**
 * Shares pages of one domain's memory. Owned by one thread (the guest's):
 * the free lists of refs and frames are plain JS state, so another thread
 * that shares pages of the same domain gets refs and frames of its own
 * ({@link carve}), as each of a real guest's gntalloc files does.
 */
export class SimGrantSharer extends GrantSharerBase<SimSharedPages> {
  private readonly dom: SimDomain;
  readonly frames: FrameAllocator;
  private readonly freeRefs: number[] = [];
  private readonly deferred: Array<{ pages: SimSharedPages; ref: number }> = [];
  private retryTimer: NodeJS.Timeout | undefined;

  /** @param share only these refs and frames (a thread's share, from another sharer's {@link carve}) */
  constructor(
    hv: SimHypervisor,
    readonly domid: number,
    share?: SimGrantShare,
  ) {
    super();
    this.dom = hv.domain(domid);
    if (share === undefined) {
      this.frames = new FrameAllocator(this.dom.pages);
      // Highest first, so pop() hands out low refs first, as Linux's free list does.
      for (let r = this.dom.nrGrants - 1; r >= GNTTAB_NR_RESERVED_ENTRIES; r--) this.freeRefs.push(r);
    } else {
      this.frames = new FrameAllocator(this.dom.pages, { first: share.frame, count: share.frames });
      for (let i = share.refs.length - 1; i >= 0; i--) this.freeRefs.push(share.refs[i]!);
      this.shareLimit = Math.min(share.refs.length, share.frames);
    }
  }

  private readonly shareLimit: number | undefined;

  /** A thread's sharer may share no more than its share (devices size their pools by it). */
  limit(): number | undefined {
    return this.shareLimit;
  }

  /**
   * Sets apart `refs` grant refs and a run of `frames` pages for another
   * thread, which builds its own sharer over them. XEN_ENOSPC when there
   * are not that many free.
   */
  carve(refs: number, frames: number): SimGrantShare {
    this.retryDeferred();
    if (this.freeRefs.length < refs)
      throw new PlatformError('XEN_ENOSPC', `domain ${this.domid}: ${refs} grant refs wanted, ${this.freeRefs.length} free`);
    const frame = this.frames.alloc(frames);
    if (frame < 0) throw new PlatformError('XEN_ENOSPC', `domain ${this.domid}: no run of ${frames} free pages`);
    return { refs: this.freeRefs.splice(this.freeRefs.length - refs, refs).reverse(), frame, frames };
  }

  /**
   * Takes back a share once the thread that used it has ended every grant
   * in it (refs still granted would be handed out twice, so a share with
   * any left is not taken back).
   */
  giveBack(share: SimGrantShare): boolean {
    const w = this.dom.grantWords;
    if (share.refs.some((r) => Atomics.load(w, 2 * r) !== 0)) return false;
    for (let i = share.refs.length - 1; i >= 0; i--) this.freeRefs.push(share.refs[i]!);
    this.frames.release(share.frame, share.frames);
    return true;
  }

  protected sharePages(domid: number, count: number, writable: boolean): SimSharedPages {
    this.retryDeferred();
    if (this.freeRefs.length < count) {
      throw new PlatformError('XEN_ENOSPC', `domain ${this.domid}: ${count} grant refs wanted, ${this.freeRefs.length} free`);
    }
    const frame = this.frames.alloc(count);
    if (frame < 0) throw new PlatformError('XEN_ENOSPC', `domain ${this.domid}: no run of ${count} free pages`);
    const bytes = this.dom.frames(frame, count);
    bytes.fill(0); // gntalloc hands out zeroed pages; a reused frame must not leak old data
    const refs = this.freeRefs.splice(this.freeRefs.length - count, count).reverse();
    const flags = GTF_permit_access | (writable ? 0 : GTF_readonly);
    for (let i = 0; i < count; i++) this.grantAccess(refs[i]!, domid, frame + i, flags);
    return new SimSharedPages(refs, bytes, domid, writable, frame);
  }

  protected unsharePages(pages: SimSharedPages): void {
    for (const ref of pages.refs) {
      if (this.endAccess(ref)) this.ended(pages, ref);
      else {
        this.deferred.push({ pages, ref });
        this.counts.deferredEnds++;
      }
    }
    if (this.deferred.length > 0) this.scheduleRetry();
  }

  protected release(): void {
    // Nothing of ours to close: deferred ends finish on their timer.
  }

  /** A view of one of this domain's frames. */
  page(frame: number): Uint8Array {
    return this.dom.frames(frame);
  }

  /**
   * Writes one grant entry for a frame the caller already owns (the host uses
   * it for the reserved xenstore grant).
   */
  grantAccess(ref: number, domid: number, frame: number, flags: number): void {
    const w = this.dom.grantWords;
    Atomics.store(w, 2 * ref + 1, frame);
    // Flags last: the entry is live from this store on (grant_table.h).
    Atomics.store(w, 2 * ref, grantCombo(flags, domid));
  }

  /**
   * gnttab_end_foreign_access_ref for v1: clears the entry unless the other
   * side has it mapped. Returns false when it is still in use.
   */
  endAccess(ref: number): boolean {
    const w = this.dom.grantWords;
    for (;;) {
      const combo = Atomics.load(w, 2 * ref);
      if (combo & (GTF_reading | GTF_writing)) return false;
      if (Atomics.compareExchange(w, 2 * ref, combo, 0) === combo) return true;
    }
  }

  /** Grants whose end is still waiting for the other side to unmap. */
  get pendingEnds(): number {
    return this.deferred.length;
  }

  private ended(pages: SimSharedPages, ref: number): void {
    this.freeRefs.push(ref);
    if (--pages.live === 0) this.frames.release(pages.frame, pages.refs.length);
  }

  private retryDeferred(): void {
    for (let i = 0; i < this.deferred.length;) {
      const d = this.deferred[i]!;
      if (this.endAccess(d.ref)) {
        this.ended(d.pages, d.ref);
        this.deferred.splice(i, 1);
      } else i++;
    }
  }

  private scheduleRetry(): void {
    if (this.retryTimer !== undefined) return;
    // Linux retries deferred ends from a timer; so do we, without keeping the process up.
    this.retryTimer = setInterval(() => {
      this.retryDeferred();
      if (this.deferred.length === 0) {
        clearInterval(this.retryTimer);
        this.retryTimer = undefined;
      }
    }, 10);
    this.retryTimer.unref();
  }
}

/** A grant mapped by a backend. */
export interface GrantMapping {
  readonly domid: number;
  readonly ref: number;
  readonly writable: boolean;
  /** The granted page itself (4096 bytes), shared with the granting domain. */
  readonly bytes: Uint8Array;
}

class Mapping implements GrantMapping {
  mapped = true;
  constructor(
    readonly domid: number,
    readonly ref: number,
    readonly writable: boolean,
    readonly bytes: Uint8Array,
  ) {}
}

/**
 * Maps other domains' grants, as a backend does with GNTTABOP_map_grant_ref.
 * Usable from any thread; maps and unmaps are counted in the mapping domain's
 * counters, where the host can read them.
 */
export class SimGrantMapper {
  private readonly self: SimDomain;

  constructor(
    private readonly hv: SimHypervisor,
    readonly domid: number,
  ) {
    this.self = hv.domain(domid);
  }

  /** Maps grant `ref` of domain `domid`; throws {@link GrantError} where Xen would refuse. */
  map(domid: number, ref: number, writable: boolean): GrantMapping {
    const g = this.hv.find(domid);
    if (g === undefined) return this.refuse(GNTST_bad_domain, domid, ref, 'no such domain');
    if (!Number.isInteger(ref) || ref < 0 || ref >= g.nrGrants) {
      return this.refuse(GNTST_bad_gntref, domid, ref, `ref out of range (table has ${g.nrGrants})`);
    }
    const w = g.grantWords;
    const a = ref * ACTIVE_WORDS;
    lockWord(g.active, a + ActiveWord.lock);
    try {
      let frame: number;
      for (;;) {
        const combo = Atomics.load(w, 2 * ref);
        const flags = combo & 0xffff;
        const to = (combo >>> 16) & 0xffff;
        if ((flags & GTF_type_mask) !== GTF_permit_access) {
          return this.refuse(GNTST_general_error, domid, ref, 'not in use (never granted, or ended)');
        }
        if (to !== this.domid) return this.refuse(GNTST_general_error, domid, ref, `granted to domain ${to}, not ${this.domid}`);
        if (writable && flags & GTF_readonly) {
          return this.refuse(GNTST_general_error, domid, ref, 'read-only grant mapped for writing');
        }
        frame = Atomics.load(w, 2 * ref + 1) >>> 0;
        const next = grantCombo(flags | GTF_reading | (writable ? GTF_writing : 0), to);
        // The guest may end the grant at this very moment; its CAS or ours wins, never both.
        if (Atomics.compareExchange(w, 2 * ref, combo, next) === combo) break;
      }
      if (frame === 0 || frame >= g.pages) {
        this.unpin(g, ref, writable, false);
        return this.refuse(GNTST_bad_virt_addr, domid, ref, `frame ${frame} is not guest memory`);
      }
      Atomics.add(g.active, a + (writable ? ActiveWord.writePins : ActiveWord.readPins), 1);
      this.self.count(Counter.maps);
      return new Mapping(domid, ref, writable, g.frames(frame));
    } finally {
      unlockWord(g.active, a + ActiveWord.lock);
    }
  }

  /** GNTTABOP_unmap_grant_ref. A mapping is unmapped once; a second time is GNTST_bad_handle. */
  unmap(mapping: GrantMapping): void {
    const m = mapping as Mapping;
    if (!(m instanceof Mapping) || !m.mapped) return this.refuse(GNTST_bad_handle, mapping.domid, mapping.ref, 'not mapped');
    m.mapped = false;
    const g = this.hv.domain(m.domid);
    const a = m.ref * ACTIVE_WORDS;
    lockWord(g.active, a + ActiveWord.lock);
    try {
      this.unpin(g, m.ref, m.writable, true);
    } finally {
      unlockWord(g.active, a + ActiveWord.lock);
    }
    this.self.count(Counter.unmaps);
  }

  /** Drops one pin and clears GTF_reading / GTF_writing when none is left; the entry lock is held. */
  private unpin(g: SimDomain, ref: number, writable: boolean, pinned: boolean): void {
    const a = ref * ACTIVE_WORDS;
    if (pinned) Atomics.sub(g.active, a + (writable ? ActiveWord.writePins : ActiveWord.readPins), 1);
    const writers = Atomics.load(g.active, a + ActiveWord.writePins);
    const readers = Atomics.load(g.active, a + ActiveWord.readPins);
    let clear = 0;
    if (writers === 0) clear |= GTF_writing;
    if (writers + readers === 0) clear |= GTF_reading;
    const w = g.grantWords;
    for (;;) {
      const combo = Atomics.load(w, 2 * ref);
      const next = combo & ~clear;
      if (next === combo || Atomics.compareExchange(w, 2 * ref, combo, next) === combo) return;
    }
  }

  private refuse(status: number, domid: number, ref: number, reason: string): never {
    this.self.count(Counter.mapFailures);
    throw new GrantError(status, domid, ref, reason);
  }
}
