/**
 * A virtual block device: what `openBlockDevice()` returns. It checks every
 * call before anything is queued, splits large I/O into ring-request-sized
 * pieces spread over the queues, follows the backend's state (a later
 * Connected is a resize; Closing means reconnect and replay what was in
 * flight, as Linux's blkif_recover does), and turns a backend that breaks the
 * protocol into a typed error for everything in flight instead of corrupt data.
 */
import { EventEmitter } from 'node:events';
import { BlkifError, XenError, isXenError } from '../errors.js';
import { BLKIF_DISCARD_SECURE, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_NATIVE_ABI, BLKIF_SECTOR_SIZE, BlkifOp } from '../wire/blkif.js';
import { XenbusState } from '../wire/xenbus_state.js';
import { readState, switchState, waitForState } from '../xenbus/device.js';
import type { Watch } from '../xenbus/watch.js';
import type { XenPlatform } from '../platform/types.js';
import { GrantPool } from '../gnttab/pool.js';
import { PAGE_SIZE } from '../gnttab/types.js';
import { ringEntries } from '../wire/ring.js';
import { BlkQueue, type QueueStats } from './queue.js';
import { DeviceBuffers } from './buffers.js';
import { Completion, IoOp, opName } from './request.js';
import {
  locateDevice, readDiskInfo, resetFrontend, talkToBackend, waitForBackend,
  type BlockDeviceInfo, type DeviceLocation, type Negotiated, type NegotiationWishes, type RingSetup,
} from './negotiate.js';

export interface BlockDeviceOptions {
  /** The Xen platform: `openXenPlatform()` on a real guest, or a simulated host's `guest`. */
  platform: XenPlatform;
  /** The virtual-device number (the key under `device/vbd/`), e.g. 51712 for xvda. */
  vdev: number | string;
  /** Queues wanted (default 2; capped by the backend's multi-queue-max-queues). */
  queues?: number;
  /** Pages per ring wanted, a power of two (default 4; capped by max-ring-page-order). */
  ringPages?: number;
  /** Segments per indirect request wanted (default 256; capped by the backend; ≤ 11 turns them off). */
  maxIndirectSegments?: number;
  /** Ask for persistent grants (default true). */
  persistentGrants?: boolean;
  /** Bounce data through a per-queue pool of pre-shared pages (default true; false: a fresh grant per page). */
  pool?: boolean;
  /** Pages shared up front per queue (default: ring entries × 11, so requests of up to 11 segments never fall back). */
  poolPages?: number;
  /** Timeout for each step of the handshake and for close (default 10 s). */
  timeoutMs?: number;
  /** How long to wait for a closed backend to come back before failing with BLKIF_ENODEV (default 30 s). */
  reconnectTimeoutMs?: number;
}

export interface BlockDeviceStats {
  /** Caller calls completed, by kind. */
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  /** Calls that failed. */
  errors: number;
  bytesRead: number;
  bytesWritten: number;
  /** Ring requests sent (a call may take several; a replay sends again). */
  requests: number;
  indirectRequests: number;
  /** Event-channel notifications sent to the backend. */
  notifications: number;
  /** Event-handler runs that found responses. */
  interrupts: number;
  responses: number;
  /** Responses handled per interrupt (the batching event suppression buys). */
  responsesPerInterrupt: number;
  /** Grant pool, summed over queues. */
  pool: { hits: number; fallbacks: number; kept: number; waits: number; size: number; inUse: number };
  /** Calls whose data was in a device buffer, sent without a bounce copy. */
  zeroCopy: number;
  /** Pages granted for device buffers. */
  bufferPages: number;
  reconnects: number;
  /** Pieces replayed after reconnects. */
  replayed: number;
  /** Calls not yet settled. */
  pending: number;
}

type State = 'connected' | 'reconnecting' | 'broken' | 'gone' | 'closed';

/** Call kinds, as Completion.kind; CALL_KINDS names their counters. */
const CallKind = { read: 0, write: 1, flush: 2, discard: 3 } as const;
type CallKind = (typeof CallKind)[keyof typeof CallKind];
const CALL_KINDS = ['reads', 'writes', 'flushes', 'discards'] as const;
/** Finished ops and completions kept for reuse, at most (a few rings' worth). */
const FREE_LIST_MAX = 1024;

const ZERO_STATS = (): QueueStats => ({ requests: 0, indirectRequests: 0, notifications: 0, interrupts: 0, responses: 0 });

function addQueueStats(into: QueueStats, from: QueueStats): void {
  for (const k of Object.keys(into) as Array<keyof QueueStats>) into[k] += from[k];
}

export class BlockDevice extends EventEmitter {
  private state: State = 'connected';
  private infoNow!: BlockDeviceInfo;
  private queues: BlkQueue[] = [];
  private rings: RingSetup[] = [];
  private readonly pools: GrantPool[] = [];
  /** Segments per ring request: the negotiated maximum, capped so one request fits a pool. */
  private maxSegments = BLKIF_MAX_SEGMENTS_PER_REQUEST;
  private held: IoOp[] = [];
  private failure: BlkifError | null = null;
  private readonly quarantine: IoOp[] = [];
  private readonly buffers: DeviceBuffers;
  private watch: Watch | undefined;
  private chain: Promise<void> = Promise.resolve();
  private next = 0;
  private active = 0;
  private drained: (() => void) | null = null;
  private readonly past = ZERO_STATS();
  private readonly counts = { reads: 0, writes: 0, flushes: 0, discards: 0, errors: 0, bytesRead: 0, bytesWritten: 0, zeroCopy: 0, reconnects: 0, replayed: 0 };

  /** @internal Use {@link openBlockDevice}. */
  constructor(private readonly platform: XenPlatform, private readonly loc: DeviceLocation, private readonly wish: NegotiationWishes & {
    pool: boolean; poolPages: number | undefined; reconnectTimeoutMs: number;
  }) {
    super();
    this.buffers = new DeviceBuffers(platform.grants, loc.backendId);
  }

  /** Geometry and negotiated features (replaced on resize and reconnect, and when a feature turns out unsupported). */
  get info(): BlockDeviceInfo {
    return this.infoNow;
  }

  /** @internal The handshake; called once by openBlockDevice. */
  async connect(): Promise<void> {
    await resetFrontend(this.platform, this.loc);
    await talkToBackend(this.platform, this.loc, this.wish, (n) => this.build(n));
    this.watch = await this.platform.xenstore.watch(`${this.loc.backend}/state`, () => {
      this.serialize(() => this.backendChanged());
    }, { group: `blkfront:${this.loc.vdev}` });
  }

  /** Builds the queues over freshly negotiated rings; pools are kept across reconnects. */
  private build(n: Negotiated): void {
    this.infoNow = n.info;
    this.rings = n.rings;
    const f = n.info.features;
    const negotiated = f.indirectSegments > 0 ? f.indirectSegments : BLKIF_MAX_SEGMENTS_PER_REQUEST;
    const entries = ringEntries(f.ringPages * PAGE_SIZE, BLKIF_NATIVE_ABI.entrySize);
    const perQueue = this.grantBudget(n.rings.length);
    for (let q = 0; q < n.rings.length; q++) this.pools[q] ??= this.makePool(entries, negotiated, f.persistentGrants, perQueue);
    // One request must always fit its queue's pool (data pages plus the
    // indirect page), or a take could wait for pages that never come.
    let smallest = Infinity;
    for (let q = 0; q < n.rings.length; q++) smallest = Math.min(smallest, this.pools[q]!.stats().size || Infinity);
    this.maxSegments = Math.max(BLKIF_MAX_SEGMENTS_PER_REQUEST, Math.min(negotiated, smallest - 1));
    const params = { abi: BLKIF_NATIVE_ABI, handle: this.loc.vdev & 0xffff, maxSegments: this.maxSegments, persistent: f.persistentGrants };
    const hooks = { completed: this.completed, broken: this.broken, recycle: this.recycle };
    this.queues = n.rings.map((r, q) => new BlkQueue(q, r.pages.bytes, r.channel, this.pools[q]!, params, hooks));
  }

  /**
   * Pages each queue's pool may take. Linux's gntalloc caps the grants all
   * of a guest's users hold together (1024 by default); a device's pools
   * take at most half of what is free when it connects, and its fresh grants
   * at most the other half.
   */
  private grantBudget(queues: number): number {
    const limit = this.platform.grants.limit?.();
    if (limit === undefined) return Infinity;
    const free = Math.max(0, limit - this.platform.grants.stats().sharedPages);
    return Math.floor(free / 2 / queues);
  }

  private makePool(entries: number, maxSegments: number, persistent: boolean, budget: number): GrantPool {
    if (!this.wish.pool) return new GrantPool(this.platform.grants, this.loc.backendId, { pages: 0 });
    const perRequest = maxSegments + Math.ceil(maxSegments / 512);
    const pages = Math.min(this.wish.poolPages ?? entries * BLKIF_MAX_SEGMENTS_PER_REQUEST, budget);
    if (pages < BLKIF_MAX_SEGMENTS_PER_REQUEST + 1) {
      throw new XenError('XEN_ENOSPC', `only ${budget} grant pages available for each of the device's queues; ` +
        'raise gntalloc\'s limit (/sys/module/xen_gntalloc/parameters/limit) or close other users');
    }
    return new GrantPool(this.platform.grants, this.loc.backendId, {
      pages,
      // With persistent grants the backend keeps what it mapped: keep those pages too (up to a full ring's worth).
      keepFresh: persistent,
      maxPages: Math.min(entries * perRequest, 8192, budget),
      // Fresh grants beyond the pool may use the other half of what was free,
      // so a device alone never asks gntalloc for more than it has.
      maxFallbackPages: budget,
    });
  }

  private serialize(step: () => Promise<void>): void {
    this.chain = this.chain.then(step).catch((err: unknown) => {
      if (this.state !== 'closed') process.emitWarning(`blkfront ${this.loc.vdev}: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  /** The backend's state changed: a resize, or it is closing and we reconnect. */
  private async backendChanged(): Promise<void> {
    if (this.state !== 'connected') return;
    const s = await readState(this.platform.xenstore, this.loc.backend).catch(() => XenbusState.Unknown);
    if (s === XenbusState.Connected) {
      const info = await readDiskInfo(this.platform, this.loc, this.wish, { ringPages: this.infoNow.features.ringPages, queues: this.queues.length });
      if (info.sectors !== this.infoNow.sectors) {
        this.infoNow = { ...info, features: this.infoNow.features };
        this.emit('resize', this.infoNow);
      }
    } else if (([XenbusState.Closing, XenbusState.Closed, XenbusState.Unknown, XenbusState.InitWait, XenbusState.Initialising] as XenbusState[]).includes(s)) {
      // Closing, Closed or gone; or InitWait / Initialising: a backend that started over
      // before we saw it close. Either way our rings are dead: reconnect.
      await this.reconnect();
    }
  }

  /**
   * blkfront_closing + blkfront_resume + blkif_recover: stop the queues
   * (keeping what was in flight, with its data pages), close our end, wait
   * for the backend to start over, negotiate again, and replay in order.
   * New calls are held meanwhile. If the backend does not come back, every
   * held call fails with BLKIF_ENODEV.
   */
  private async reconnect(): Promise<void> {
    this.state = 'reconnecting';
    const replay: IoOp[] = [];
    for (const q of this.queues) {
      this.retire(q);
      replay.push(...q.detach());
    }
    this.dropRings();
    const xs = this.platform.xenstore;
    const timeoutMs = this.wish.reconnectTimeoutMs;
    try {
      await switchState(xs, this.loc.frontend, XenbusState.Closed);
      await waitForBackend(this.platform, this.loc, [XenbusState.Closed, XenbusState.InitWait], timeoutMs);
      await switchState(xs, this.loc.frontend, XenbusState.Initialising);
      await talkToBackend(this.platform, this.loc, { ...this.wish, timeoutMs }, (n) => this.build(n));
    } catch (err) {
      const e = err instanceof BlkifError ? err : new BlkifError('BLKIF_ENODEV', `backend ${this.loc.backend} did not come back: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      this.state = 'gone';
      this.failure = e;
      for (const op of [...replay, ...this.held]) {
        if (op.acquiring) op.orphaned = e;
        else {
          op.releasePages();
          op.done.pieceDone(e);
        }
      }
      this.held = [];
      this.emit('gone', e);
      return;
    }
    if (this.state !== 'reconnecting') return; // closed meanwhile
    this.state = 'connected';
    this.counts.reconnects++;
    this.counts.replayed += replay.length;
    const all = [...replay, ...this.held];
    this.held = [];
    for (const op of all) this.dispatch(op);
    this.emit('reconnect', { replayed: replay.length });
  }

  /** Keeps a queue's counters when it goes away. */
  private retire(q: BlkQueue): void {
    addQueueStats(this.past, q.stats);
  }

  private dropRings(): void {
    // The backend has unmapped them (or will, deferring the end until it does).
    for (const r of this.rings) this.platform.grants.unshare(r.pages);
    this.rings = [];
    this.queues = [];
  }

  private readonly completed = (op: IoOp, err: BlkifError | null): void => {
    if (err === null) {
      if (op.op === BlkifOp.Read) this.counts.bytesRead += op.sectors * BLKIF_SECTOR_SIZE;
      else if (op.op === BlkifOp.Write) this.counts.bytesWritten += op.sectors * BLKIF_SECTOR_SIZE;
    } else if (err.code === 'BLKIF_EOPNOTSUPP') {
      // As Linux does on EOPNOTSUPP: stop using the feature.
      const f = this.infoNow.features;
      if (op.op === BlkifOp.FlushDiskcache) this.setFeatures({ ...f, flush: false });
      else if (op.op === BlkifOp.WriteBarrier) this.setFeatures({ ...f, barrier: false });
      else if (op.op === BlkifOp.Discard) this.setFeatures({ ...f, discard: null });
    }
  };

  private setFeatures(features: BlockDeviceInfo['features']): void {
    this.infoNow = { ...this.infoNow, features };
  }

  private readonly broken = (err: BlkifError): void => {
    if (this.state !== 'connected') return;
    this.state = 'broken';
    this.failure = err;
    for (const q of this.queues) q.fail(err, this.quarantine);
    this.emit('broken', err);
  };

  /** Sends a piece to a queue (round robin), holds it during a reconnect, or fails it. */
  private dispatch(op: IoOp): void {
    if (this.state === 'reconnecting') {
      this.held.push(op);
      return;
    }
    if (this.state !== 'connected') {
      op.releasePages();
      op.done.pieceDone(this.failure ?? new BlkifError('BLKIF_CLOSED', 'device closed'));
      return;
    }
    const f = this.infoNow.features;
    const unsupported = (op.op === BlkifOp.Discard && f.discard === null)
      || (op.op === BlkifOp.FlushDiskcache && !f.flush) || (op.op === BlkifOp.WriteBarrier && !f.barrier);
    if (unsupported) {
      // Replayed onto a backend that no longer offers it.
      op.done.pieceDone(new BlkifError('BLKIF_EOPNOTSUPP', `${opName(op.op)}: the backend does not offer it`));
      return;
    }
    // The least loaded queue (round robin among equals): one ring backed up
    // behind large requests does not hold up work another could take, and
    // each queue's pages in use (the backend's persistent grants) stay even.
    const qs = this.queues;
    const n = qs.length;
    const region = op.done.region;
    if (region !== null && f.persistentGrants) {
      qs[region.home % n]!.enqueue(op);
      return;
    }
    const start = this.next++ % n;
    let best = qs[start]!;
    for (let i = 1; i < n && best.load > 0; i++) {
      const q = qs[(start + i) % n]!;
      if (q.load < best.load) best = q;
    }
    best.enqueue(op);
  }

  private checkUsable(): void {
    if (this.state === 'closed') throw new BlkifError('BLKIF_CLOSED', `block device ${this.loc.vdev} is closed`);
    if (this.failure !== null && (this.state === 'broken' || this.state === 'gone')) throw this.failure;
  }

  private checkRange(what: string, offset: number, length: number): void {
    this.checkUsable();
    const ss = this.infoNow.sectorSize;
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new BlkifError('BLKIF_EINVAL', `${what}: offset ${offset} and length ${length} must be non-negative integers`);
    }
    if (length === 0) throw new BlkifError('BLKIF_EINVAL', `${what}: zero length`);
    if (offset % ss !== 0 || length % ss !== 0) {
      throw new BlkifError('BLKIF_EINVAL', `${what}: offset ${offset} and length ${length} must be multiples of the ${ss}-byte sector size`);
    }
    if (offset + length > this.infoNow.size) {
      throw new BlkifError('BLKIF_ERANGE', `${what}: bytes ${offset}..${offset + length} run past the end of the ${this.infoNow.size}-byte disk`);
    }
  }

  private checkWritable(what: string): void {
    if (this.infoNow.readOnly) throw new BlkifError('BLKIF_EROFS', `${what}: the disk is read-only`);
  }

  /**
   * Splits a call into pieces of at most one ring request and dispatches
   * them. Data in a device buffer goes to the backend as it is; other data
   * is bounced through the pool.
   */
  private submit(kind: CallKind, op: number, offset: number, length: number, data: Uint8Array | null, flag = 0): Promise<void> {
    const chunkPages = this.maxSegments;
    const chunk = chunkPages * PAGE_SIZE;
    const pieces = data === null ? 1 : Math.ceil(length / chunk);
    const direct = data === null ? null : this.buffers.find(data);
    this.active++;
    const promise = new Promise<void>(this.capture);
    const done = this.freeDone.pop() ?? new Completion(this.captured!, this.capturedReject!, this.settled);
    done.resolve = this.captured!;
    done.reject = this.capturedReject!;
    this.captured = this.capturedReject = null;
    done.remaining = done.pieces = pieces;
    done.error = null;
    done.kind = kind;
    done.region = null;
    if (direct !== null) {
      this.counts.zeroCopy++;
      done.region = direct.region;
      direct.region.inflight++;
    }
    for (let i = 0; i < pieces; i++) {
      const at = data === null ? offset : offset + i * chunk;
      const len = data === null ? length : Math.min(chunk, length - i * chunk);
      const piece = data === null ? null : pieces === 1 ? data : data.subarray(i * chunk, i * chunk + len);
      const sector = at / BLKIF_SECTOR_SIZE;
      const sectors = len / BLKIF_SECTOR_SIZE;
      const io = this.freeOps.pop()?.reuse(op, sector, sectors, piece, done, flag) ?? new IoOp(op, sector, sectors, piece, done, flag);
      if (direct !== null) {
        io.refs = direct.region.shared.refs;
        io.refBase = direct.page + i * chunkPages;
      }
      this.dispatch(io);
    }
    return promise;
  }

  // One executor for every call's promise: it hands out resolve and reject without a closure per call.
  private captured: (() => void) | null = null;
  private capturedReject: ((err: Error) => void) | null = null;
  private readonly capture = (resolve: () => void, reject: (err: Error) => void): void => {
    this.captured = resolve;
    this.capturedReject = reject;
  };
  private readonly freeOps: IoOp[] = [];
  private readonly freeDone: Completion[] = [];

  /** A piece that completed normally; its call too, when it was the only piece. */
  private readonly recycle = (op: IoOp): void => {
    const done = op.done;
    // submit() sets every field of a reused completion.
    if (done.pieces === 1 && done.remaining === 0 && this.freeDone.length < FREE_LIST_MAX) this.freeDone.push(done);
    if (this.freeOps.length < FREE_LIST_MAX) {
      op.data = null;
      this.freeOps.push(op);
    }
  };

  private readonly settled = (c: Completion): void => {
    if (c.region !== null) c.region.inflight--;
    if (c.error === null) this.counts[CALL_KINDS[c.kind]!]++;
    else this.counts.errors++;
    if (--this.active === 0 && this.drained !== null) this.drained();
  };

  /**
   * A buffer of `length` bytes (rounded up to whole pages) whose pages are
   * granted to the backend once, now: reads into it and writes from it
   * (whole or from any page boundary in it) go to the backend as they are,
   * with no bounce page and no copy. With persistent grants the backend
   * keeps them mapped, so the backend can write them at any time: trust
   * their contents only when a read into them has just completed.
   *
   * Valid until {@link close}, which ends the grants (on a real guest that
   * unmaps the memory: do not touch a device buffer after close).
   * {@link freeBuffer} keeps its pages for the next buffer of that size.
   * XEN_ENOSPC when the grant table or guest memory is full.
   */
  allocBuffer(length: number): Uint8Array {
    this.checkUsable();
    return this.buffers.alloc(length);
  }

  /** Gives back a buffer from {@link allocBuffer}; BLKIF_EINVAL if calls still use it. */
  freeBuffer(buf: Uint8Array): void {
    this.buffers.free(buf);
  }

  /**
   * Reads `length` bytes at byte `offset`. Both must be multiples of
   * `info.sectorSize` and inside the disk (BLKIF_EINVAL, BLKIF_ERANGE, checked
   * before anything is queued). Fails with BLKIF_EIO when the backend reports
   * an error, BLKIF_EPROTO when it breaks the protocol, BLKIF_ENODEV when it
   * goes away for good, BLKIF_CLOSED after close().
   */
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.checkRange('read', offset, length);
    const buf = new Uint8Array(length);
    await this.submit(CallKind.read, BlkifOp.Read, offset, length, buf);
    return buf;
  }

  /**
   * Reads `dst.byteLength` bytes at byte `offset` into `dst`, the
   * allocation-free form of {@link read} for callers that reuse buffers;
   * same checks and errors. Ordinary memory is bounced through granted pages
   * (the backend never sees it); a device buffer ({@link allocBuffer}) is
   * read into in place. A read that fails may still have filled the parts of
   * `dst` whose pieces succeeded.
   */
  readInto(offset: number, dst: Uint8Array): Promise<void> {
    // Not an async function: the hot path makes one promise per call, not two.
    try {
      if (!(dst instanceof Uint8Array)) throw new BlkifError('BLKIF_EINVAL', 'readInto: dst must be a Uint8Array');
      this.checkRange('read', offset, dst.byteLength);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.submit(CallKind.read, BlkifOp.Read, offset, dst.byteLength, dst);
  }

  /**
   * Writes `data` at byte `offset`; same checks as {@link read}, plus
   * BLKIF_EROFS on a read-only disk. `data` is copied into granted pages
   * when its request goes on the ring, which may be later if the ring or the
   * pool is full (a device buffer is read by the backend in place): leave it
   * unchanged until the call settles.
   */
  write(offset: number, data: Uint8Array): Promise<void> {
    try {
      if (!(data instanceof Uint8Array)) throw new BlkifError('BLKIF_EINVAL', 'write: data must be a Uint8Array');
      this.checkRange('write', offset, data.byteLength);
      this.checkWritable('write');
    } catch (err) {
      return Promise.reject(err);
    }
    return this.submit(CallKind.write, BlkifOp.Write, offset, data.byteLength, data);
  }

  /**
   * Makes the writes that completed before this call durable:
   * FLUSH_DISKCACHE, or WRITE_BARRIER when that is all the backend offers.
   * With neither, the backend has no volatile cache to flush and this
   * resolves at once. BLKIF_EOPNOTSUPP if the backend refuses after all
   * (the feature is then dropped from `info`).
   */
  async flush(): Promise<void> {
    this.checkUsable();
    const f = this.infoNow.features;
    const op = f.flush ? BlkifOp.FlushDiskcache : f.barrier ? BlkifOp.WriteBarrier : -1;
    if (op < 0) {
      this.counts.flushes++;
      return;
    }
    await this.submit(CallKind.flush, op, 0, 0, null);
  }

  /**
   * Tells the backend the range is unused (BLKIF_OP_DISCARD); with
   * `secure`, asks for a secure erase (only if the backend offers it).
   * Same checks as {@link write}; BLKIF_EOPNOTSUPP when discard was not
   * negotiated.
   */
  async discard(offset: number, length: number, opts: { secure?: boolean } = {}): Promise<void> {
    this.checkRange('discard', offset, length);
    this.checkWritable('discard');
    const d = this.infoNow.features.discard;
    if (d === null) throw new BlkifError('BLKIF_EOPNOTSUPP', 'discard: the backend does not offer it');
    if (opts.secure === true && !d.secure) throw new BlkifError('BLKIF_EOPNOTSUPP', 'discard: the backend does not offer secure discard');
    await this.submit(CallKind.discard, BlkifOp.Discard, offset, length, null, opts.secure === true ? BLKIF_DISCARD_SECURE : 0);
  }

  stats(): BlockDeviceStats {
    const s = { ...this.past };
    for (const q of this.queues) addQueueStats(s, q.stats);
    const pool = { hits: 0, fallbacks: 0, kept: 0, waits: 0, size: 0, inUse: 0 };
    for (const p of this.pools) {
      const ps = p.stats();
      pool.hits += ps.hits;
      pool.fallbacks += ps.fallbacks;
      pool.kept += ps.kept;
      pool.waits += ps.waits;
      pool.size += ps.size;
      pool.inUse += ps.inUse + ps.freshInUse;
    }
    return {
      ...this.counts, ...s, pool, bufferPages: this.buffers.pages,
      responsesPerInterrupt: s.interrupts === 0 ? 0 : s.responses / s.interrupts,
      pending: this.active,
    };
  }

  /**
   * Drains what is in flight (up to the timeout; then it fails with
   * BLKIF_CLOSED), closes the xenbus connection (Closing, then Closed once
   * the backend follows), unbinds the event channels and ends every grant.
   * Calls made after this starts fail with BLKIF_CLOSED.
   */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    const wasConnected = this.state === 'connected' || this.state === 'reconnecting';
    await this.watch?.unwatch().catch(() => undefined);
    this.watch = undefined;
    await this.chain;
    const timeoutMs = this.wish.timeoutMs;
    if (this.active > 0 && this.state === 'connected') {
      const drained = new Promise<void>((r) => (this.drained = r));
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([drained, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
    }
    const closedErr = new BlkifError('BLKIF_CLOSED', `block device ${this.loc.vdev} closed`);
    if (this.state === 'connected') for (const q of this.queues) q.fail(closedErr, this.quarantine);
    this.state = 'closed';
    for (const op of this.held) op.done.pieceDone(closedErr);
    this.held = [];
    const xs = this.platform.xenstore;
    if (wasConnected) {
      try {
        await switchState(xs, this.loc.frontend, XenbusState.Closing);
        await waitForState(xs, this.loc.backend, [XenbusState.Closing, XenbusState.Closed, XenbusState.Unknown], { timeoutMs });
      } catch (err) {
        if (!isXenError(err)) throw err;
      }
    }
    await switchState(xs, this.loc.frontend, XenbusState.Closed).catch(() => undefined);
    if (wasConnected) {
      await waitForState(xs, this.loc.backend, [XenbusState.Closed, XenbusState.InitWait, XenbusState.Unknown], { timeoutMs }).catch(() => undefined);
    }
    for (const q of this.queues) {
      this.retire(q);
      q.close();
    }
    this.dropRings();
    for (const op of this.quarantine.splice(0)) op.releasePages();
    this.buffers.close();
    await Promise.all(this.pools.map((p) => p.close()));
  }
}

/**
 * Opens virtual block device `vdev` of this domain: finds it in xenstore,
 * runs the handshake with its backend, and returns it connected. Fails with
 * BLKIF_ENODEV when there is no such device or the backend does not answer
 * within `timeoutMs`.
 */
export async function openBlockDevice(options: BlockDeviceOptions): Promise<BlockDevice> {
  const { platform, vdev } = options;
  const loc = await locateDevice(platform, vdev);
  const dev = new BlockDevice(platform, loc, {
    queues: options.queues ?? 2,
    ringPages: options.ringPages ?? 4,
    maxIndirectSegments: options.maxIndirectSegments ?? 256,
    persistent: options.persistentGrants ?? true,
    timeoutMs: options.timeoutMs ?? 10000,
    pool: options.pool ?? true,
    poolPages: options.poolPages,
    reconnectTimeoutMs: options.reconnectTimeoutMs ?? 30000,
  });
  await dev.connect();
  return dev;
}
