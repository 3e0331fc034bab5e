/**
 * One piece of caller I/O as the data path carries it: an operation on a
 * sector range, the pooled pages its data is bounced through, and the
 * completion it reports to. A caller's read or write becomes one or more of
 * these, each at most one ring request's worth when it is first queued; after
 * a reconnect to a backend with smaller limits, the queue splits one over
 * several ring requests.
 */
import { BlkifError } from '../errors.js';
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_SECTOR_SIZE,
  BlkifOp,
  BlkifRsp,
  SECTORS_PER_PAGE,
  SEGS_PER_INDIRECT_FRAME,
} from '../wire/blkif.js';
import type { GrantLease, GrantPool } from '../gnttab/pool.js';
import { PAGE_SIZE } from '../wire/page.js';
import type { BufferRegion } from './buffers.js';

/**
 * Settles one caller-level call once all its pieces are done. The device
 * reuses these (and IoOps) once a call has settled normally, so the hot
 * path allocates little more than the caller's promise.
 */
export class Completion {
  remaining = 0;
  /** Pieces the call was split into when submitted. */
  pieces = 0;
  error: Error | null = null;
  /** The device buffer the call's data lives in, when it has one (counted busy until the call settles). */
  region: BufferRegion | null = null;
  /** What the call was (the device counts calls by kind). */
  kind = 0;
  constructor(
    public resolve: () => void,
    public reject: (err: Error) => void,
    private readonly settled?: (c: Completion) => void,
  ) {}

  /** One piece finished (with its error, if any); the first error is the call's. */
  pieceDone(err: Error | null): void {
    if (err !== null && this.error === null) this.error = err;
    if (--this.remaining === 0) {
      this.settled?.(this);
      if (this.error === null) this.resolve();
      else this.reject(this.error);
    }
  }
}

export class IoOp {
  /** Data pages (bounce buffers), from `pool`. */
  lease: GrantLease | null = null;
  pool: GrantPool | null = null;
  /**
   * Grant refs of the data pages, from refBase on: the lease's, or a device
   * buffer's when the caller's memory is itself granted (no bounce, no copy).
   */
  refs: readonly number[] | null = null;
  refBase = 0;
  /** Indirect descriptor pages for the ring requests of the current submission. */
  indirect: GrantLease | null = null;
  indirectPool: GrantPool | null = null;
  /** The queue holding it (null between a queue's detach and the replay). */
  queue: { pump(): void; abandon(op: IoOp, err: BlkifError): void } | null = null;
  /** A pool acquire for it is under way. */
  acquiring = false;
  /** Failed while its acquire was under way: the acquire's pages go straight back. */
  orphaned: BlkifError | null = null;
  /** Ring requests of the current submission not yet answered. */
  parts = 0;
  /** The first failing response status (BLKIF_RSP_*). */
  status: number = BlkifRsp.Okay;
  /** Held by the device for a replay after a restore: a pool closing under it does not fail it. */
  keep = false;

  constructor(
    /** BLKIF_OP_*: Read, Write, FlushDiskcache, WriteBarrier, Discard. */
    public op: number,
    /** First sector, in 512-byte units. */
    public sector: number,
    /** Sectors covered, in 512-byte units (0 for a flush). */
    public sectors: number,
    /** Read: where the data goes. Write: where it comes from. Else null. */
    public data: Uint8Array | null,
    public done: Completion,
    /** Discard: BLKIF_DISCARD_SECURE or 0. */
    public flag = 0,
  ) {}

  /** Makes a finished op (one no list holds any more) a new one. */
  reuse(op: number, sector: number, sectors: number, data: Uint8Array | null, done: Completion, flag: number): this {
    this.op = op;
    this.sector = sector;
    this.sectors = sectors;
    this.data = data;
    this.done = done;
    this.flag = flag;
    this.lease = null;
    this.pool = null;
    this.refs = null;
    this.refBase = 0;
    this.indirect = null;
    this.indirectPool = null;
    this.queue = null;
    this.acquiring = false;
    this.orphaned = null;
    this.parts = 0;
    this.status = BlkifRsp.Okay;
    this.keep = false;
    return this;
  }

  /**
   * A write's data into its bounce pages (before it goes on the ring). False
   * when the caller's buffer no longer holds the data (it was detached,
   * transferred to another thread, while the write waited): nothing is sent.
   */
  copyIn(): boolean {
    const src = this.data!;
    const n = src.byteLength;
    if (n !== this.sectors * BLKIF_SECTOR_SIZE) return false;
    const pages = this.lease!.pages;
    // A one-page write (the common small one) copies without making a view.
    if (n <= PAGE_SIZE) pages[0]!.set(src);
    else {
      for (let i = 0, off = 0; off < n; i++, off += PAGE_SIZE) pages[i]!.set(src.subarray(off, Math.min(off + PAGE_SIZE, n)));
    }
    return true;
  }

  /** A read's data out of its bounce pages into the caller's memory; false when that memory was detached meanwhile. */
  copyOut(): boolean {
    const dst = this.data!;
    const n = dst.byteLength;
    if (n !== this.sectors * BLKIF_SECTOR_SIZE) return false;
    const pages = this.lease!.pages;
    for (let i = 0, off = 0; off < n; i++, off += PAGE_SIZE)
      dst.set(n - off >= PAGE_SIZE ? pages[i]! : pages[i]!.subarray(0, n - off), off);
    return true;
  }

  /** Gives back its indirect pages (a new submission may need a different number). */
  releaseIndirect(): void {
    if (this.indirect !== null) {
      this.indirectPool!.release(this.indirect);
      this.indirect = null;
    }
  }

  /**
   * Fails this piece: its pages go back and its call hears `err`. The one
   * way a piece that never reached the backend (or whose backend is gone
   * and disconnected) fails. While a pool acquire for it is under way it is
   * only marked: the acquire, when it settles, gives its pages straight back
   * and fails it then.
   */
  fail(err: BlkifError): void {
    if (this.acquiring) {
      this.orphaned = err;
      return;
    }
    this.releasePages();
    this.done.pieceDone(err);
  }

  /**
   * After a restore every grant of the old domain is dead: gives back its
   * pages and forgets a device buffer's grants, so the replay bounces its
   * data through new pages (the buffer's memory itself is still valid).
   */
  forgetGrants(): void {
    this.releasePages();
    this.refs = null;
    this.refBase = 0;
    this.keep = true;
  }

  /** Gives back whatever pages it holds. */
  releasePages(): void {
    if (this.lease !== null) {
      this.pool!.release(this.lease);
      this.lease = null;
      this.refs = null;
    }
    this.releaseIndirect();
  }

  /** Ring requests it takes when one request carries at most `maxSegments` pages. */
  requestsFor(maxSegments: number): number {
    const pages = this.pages;
    return pages === 0 ? 1 : Math.ceil(pages / maxSegments);
  }

  /** Indirect descriptor pages it needs with requests of at most `maxSegments` pages (none up to 11). */
  indirectPagesFor(maxSegments: number): number {
    const pages = this.pages;
    if (maxSegments <= BLKIF_MAX_SEGMENTS_PER_REQUEST || pages <= BLKIF_MAX_SEGMENTS_PER_REQUEST) return 0;
    let n = 0;
    for (let s = 0; s < pages; s += maxSegments) {
      const segs = Math.min(maxSegments, pages - s);
      if (segs > BLKIF_MAX_SEGMENTS_PER_REQUEST) n += Math.ceil(segs / SEGS_PER_INDIRECT_FRAME);
    }
    return n;
  }

  /** last_sect of data page `i`: pages are filled from sector 0, only the last may be short. */
  lastSect(i: number): number {
    return Math.min(SECTORS_PER_PAGE, this.sectors - i * SECTORS_PER_PAGE) - 1;
  }

  /** Data pages it needs (segments are whole pages but the last, starting at sector 0). */
  get pages(): number {
    return this.op === BlkifOp.Read || this.op === BlkifOp.Write ? Math.ceil(this.sectors / SECTORS_PER_PAGE) : 0;
  }
}

/** The error of a call whose buffer was detached (transferred) while it was in the driver's hands. */
export function detachedError(op: IoOp): BlkifError {
  return new BlkifError(
    'BLKIF_EINVAL',
    `${opName(op.op)} of ${op.sectors} sectors at sector ${op.sector}: ` +
      'its buffer was detached (transferred to another thread) before the data could be copied',
  );
}

/** The error a caller sees for a failing response status. */
export function statusError(op: IoOp): BlkifError {
  const what = `${opName(op.op)} of ${op.sectors} sectors at sector ${op.sector}`;
  return op.status === BlkifRsp.EOpNotSupp
    ? new BlkifError('BLKIF_EOPNOTSUPP', `${what}: the backend does not support it`, { status: op.status })
    : new BlkifError('BLKIF_EIO', `${what}: the backend answered error ${op.status}`, { status: op.status });
}

export function opName(op: number): string {
  switch (op) {
    case BlkifOp.Read:
      return 'read';
    case BlkifOp.Write:
      return 'write';
    case BlkifOp.WriteBarrier:
      return 'barrier';
    case BlkifOp.FlushDiskcache:
      return 'flush';
    case BlkifOp.Discard:
      return 'discard';
    default:
      return `operation ${op}`;
  }
}
