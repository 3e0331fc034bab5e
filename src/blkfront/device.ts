/**
 * A virtual block device: what `openBlockDevice()` returns. It checks every
 * call before anything is queued, follows the backend's state (a later
 * Connected is a resize; Closing means reconnect and replay what was in
 * flight, as Linux's blkif_recover does), and turns a backend that breaks the
 * protocol into a typed error for everything in flight instead of corrupt
 * data. Splitting and queue choice live in submit.ts, the grant budget in
 * budget.ts, the data path in queue.ts, the handshake in negotiate.ts.
 */
import { EventEmitter } from 'node:events';
import { BlkifError } from '../errors.js';
import { BLKIF_DISCARD_SECURE, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_NATIVE_ABI, BLKIF_SECTOR_SIZE, BlkifOp } from '../wire/blkif.js';
import { XenbusState } from '../wire/xenbus_state.js';
import { readState, switchState } from '../xenbus/device.js';
import type { Watch } from '../xenbus/watch.js';
import type { XenPlatform } from '../platform/types.js';
import type { GrantPool } from '../gnttab/pool.js';
import { PAGE_SIZE } from '../gnttab/types.js';
import { ringEntries } from '../wire/ring.js';
import { SerialQueue } from '../util/serial.js';
import { BlkQueue, addQueueStats, zeroQueueStats } from './queue.js';
import { DeviceBuffers } from './buffers.js';
import { IoOp, opName } from './request.js';
import { grantBudget, makePool, segmentCap, sumPoolStats } from './budget.js';
import { CLOSED, CONNECTED, refusal, type DeviceState } from './state.js';
import { CallKind, QueueChooser, Submitter, checkRange, checkWritable } from './submit.js';
import {
  backendEngaged, closeHandshake, locateDevice, offers, readDiskInfo, resetFrontend, talkToBackend, waitForBackend, withoutFeature,
  type BlockDeviceInfo, type DeviceLocation, type Negotiated, type RingSetup,
} from './negotiate.js';
import {
  resolveOptions, type BlockDeviceEvents, type BlockDeviceOptions, type BlockDeviceStats, type DeviceSettings,
} from './options.js';

/** Backend states after which our rings are dead: closing or gone, or a backend that started over. */
const RESTART_STATES: readonly XenbusState[] = [
  XenbusState.Closing, XenbusState.Closed, XenbusState.Unknown, XenbusState.InitWait, XenbusState.Initialising,
];

/**
 * A connected virtual block device. Open one with {@link openBlockDevice};
 * events are typed by {@link BlockDeviceEvents}.
 */
export class BlockDevice extends EventEmitter<BlockDeviceEvents> {
  private state: DeviceState = CONNECTED;
  private infoNow!: BlockDeviceInfo;
  private queues: BlkQueue[] = [];
  private rings: RingSetup[] = [];
  private readonly pools: GrantPool[] = [];
  /** Pieces that failed while the backend may still write their pages: released once it is disconnected. */
  private readonly quarantine: IoOp[] = [];
  private readonly buffers: DeviceBuffers;
  private readonly submitter: Submitter;
  private readonly chooser = new QueueChooser();
  private watch: Watch | undefined;
  /** Reactions to the backend's state, one at a time. */
  private readonly steps: SerialQueue;
  private readonly past = zeroQueueStats();
  private readonly counts = { bytesRead: 0, bytesWritten: 0, reconnects: 0, replayed: 0 };
  private closing: Promise<void> | null = null;

  private constructor(private readonly platform: XenPlatform, private readonly loc: DeviceLocation, private readonly wish: DeviceSettings) {
    super();
    this.buffers = new DeviceBuffers(platform.grants, loc.backendId);
    this.submitter = new Submitter(this.buffers, (op) => this.dispatch(op));
    this.steps = new SerialQueue((err) => {
      if (this.state.kind !== 'closed') process.emitWarning(`blkfront ${this.loc.vdev}: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  /** @internal Finds the device, runs the handshake and watches the backend; see {@link openBlockDevice}. */
  static async open(options: BlockDeviceOptions): Promise<BlockDevice> {
    const wish = resolveOptions(options);
    const loc = await locateDevice(options.platform, options.vdev);
    const dev = new BlockDevice(options.platform, loc, wish);
    let negotiated = false;
    try {
      await resetFrontend(dev.platform, loc);
      await talkToBackend(dev.platform, loc, wish, (n) => dev.build(n));
      negotiated = true;
      dev.watch = await dev.platform.xenstore.watch(`${loc.backend}/state`, () => {
        dev.steps.push(() => dev.backendChanged());
      }, { group: `blkfront:${loc.vdev}` });
    } catch (err) {
      // Leave the vbd as a close() would, ready for the next open: both ends
      // Closed (the backend goes back to InitWait when we start over). A
      // backend that never got going has nothing to undo: we only go Closed.
      dev.state = CLOSED;
      if (!negotiated) {
        // talkToBackend has unshared the rings and closed their channels itself.
        dev.rings = [];
        dev.queues = [];
      }
      const engaged = await backendEngaged(dev.platform, loc);
      await closeHandshake(dev.platform, loc, engaged, wish.timeoutMs).catch(() => undefined);
      await dev.release();
      throw err;
    }
    return dev;
  }

  /** Geometry and negotiated features (replaced on resize and reconnect, and when a feature turns out unsupported). */
  get info(): BlockDeviceInfo {
    return this.infoNow;
  }

  /** Builds the queues over freshly negotiated rings; pools are kept across reconnects. */
  private build(n: Negotiated): void {
    this.infoNow = n.info;
    this.rings = n.rings;
    const f = n.info.features;
    const negotiated = f.indirectSegments > 0 ? f.indirectSegments : BLKIF_MAX_SEGMENTS_PER_REQUEST;
    const plan = {
      pool: this.wish.pool, poolPages: this.wish.poolPages, maxSegments: negotiated, persistent: f.persistentGrants,
      entries: ringEntries(f.ringPages * PAGE_SIZE, BLKIF_NATIVE_ABI.entrySize),
    };
    const nq = n.rings.length;
    const budget = grantBudget(this.platform.grants, nq);
    for (let q = 0; q < nq; q++) this.pools[q] ??= makePool(this.platform.grants, this.loc.backendId, plan, budget);
    const maxSegments = segmentCap(negotiated, this.pools.slice(0, nq));
    this.submitter.maxSegments = maxSegments;
    const params = { abi: BLKIF_NATIVE_ABI, handle: this.loc.vdev & 0xffff, maxSegments, persistent: f.persistentGrants };
    const hooks = { completed: this.completed, broken: this.broken, recycle: this.submitter.recycle, oversize: this.oversize };
    this.queues = n.rings.map((r, q) => new BlkQueue(q, r.pages.bytes, r.channel, this.pools[q]!, params, hooks));
  }

  /** The backend's state changed: a resize, or it is closing and we reconnect. */
  private async backendChanged(): Promise<void> {
    if (this.state.kind !== 'connected') return;
    const s = await readState(this.platform.xenstore, this.loc.backend).catch(() => XenbusState.Unknown);
    if (s === XenbusState.Connected) {
      const info = await readDiskInfo(this.platform, this.loc, this.wish, { ringPages: this.infoNow.features.ringPages, queues: this.queues.length });
      if (info.sectors !== this.infoNow.sectors) {
        this.infoNow = { ...info, features: this.infoNow.features };
        this.emit('resize', this.infoNow);
      }
    } else if (RESTART_STATES.includes(s)) {
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
    const held: IoOp[] = [];
    this.state = { kind: 'reconnecting', held };
    const replay: IoOp[] = [];
    for (const q of this.queues) {
      addQueueStats(this.past, q.stats);
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
      this.state = { kind: 'gone', error: e };
      for (const op of [...replay, ...held]) op.fail(e);
      this.emit('gone', e);
      return;
    }
    if (this.state.kind !== 'reconnecting') return; // closed meanwhile
    this.state = CONNECTED;
    this.counts.reconnects++;
    this.counts.replayed += replay.length;
    for (const op of replay) this.dispatch(op);
    for (const op of held) this.dispatch(op);
    this.emit('reconnect', { replayed: replay.length });
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
      this.infoNow = { ...this.infoNow, features: withoutFeature(this.infoNow.features, op.op) };
    }
  };

  private readonly oversize = (op: IoOp): void => {
    for (const piece of this.submitter.split(op)) this.dispatch(piece);
  };

  private readonly broken = (err: BlkifError): void => {
    if (this.state.kind !== 'connected') return;
    this.state = { kind: 'broken', error: err };
    for (const q of this.queues) q.fail(err, this.quarantine);
    this.emit('broken', err);
  };

  /** Sends a piece to a queue, holds it during a reconnect, or fails it. */
  private dispatch(op: IoOp): void {
    const state = this.state;
    if (state.kind === 'reconnecting') {
      state.held.push(op);
      return;
    }
    if (state.kind !== 'connected') {
      op.fail(refusal(state, this.loc.vdev)!);
      return;
    }
    const f = this.infoNow.features;
    if (op.op > BlkifOp.Write && !offers(f, op.op)) {
      // Replayed onto a backend that no longer offers it.
      op.fail(new BlkifError('BLKIF_EOPNOTSUPP', `${opName(op.op)}: the backend does not offer it`));
      return;
    }
    this.chooser.choose(this.queues, op, f.persistentGrants).enqueue(op);
  }

  private checkUsable(): void {
    if (this.state === CONNECTED && this.closing === null) return; // the hot path: one comparison
    const err = refusal(this.closing === null ? this.state : CLOSED, this.loc.vdev);
    if (err !== null) throw err;
  }

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
    this.checkUsable();
    checkRange(this.infoNow, 'read', offset, length);
    const buf = new Uint8Array(length);
    await this.submitter.submit(CallKind.read, BlkifOp.Read, offset, length, buf);
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
      this.checkUsable();
      checkRange(this.infoNow, 'read', offset, dst.byteLength);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.submitter.submit(CallKind.read, BlkifOp.Read, offset, dst.byteLength, dst);
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
      this.checkUsable();
      checkRange(this.infoNow, 'write', offset, data.byteLength);
      checkWritable(this.infoNow, 'write');
    } catch (err) {
      return Promise.reject(err);
    }
    return this.submitter.submit(CallKind.write, BlkifOp.Write, offset, data.byteLength, data);
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
      this.submitter.counts.flushes++;
      return;
    }
    await this.submitter.submit(CallKind.flush, op, 0, 0, null);
  }

  /**
   * Tells the backend the range is unused (BLKIF_OP_DISCARD); with
   * `secure`, asks for a secure erase (only if the backend offers it).
   * Same checks as {@link write}; BLKIF_EOPNOTSUPP when discard was not
   * negotiated.
   */
  async discard(offset: number, length: number, opts: { secure?: boolean } = {}): Promise<void> {
    if (typeof opts !== 'object' || opts === null) throw new BlkifError('BLKIF_EINVAL', 'discard: options must be an object');
    this.checkUsable();
    checkRange(this.infoNow, 'discard', offset, length);
    checkWritable(this.infoNow, 'discard');
    const d = this.infoNow.features.discard;
    if (d === null) throw new BlkifError('BLKIF_EOPNOTSUPP', 'discard: the backend does not offer it');
    if (opts.secure === true && !d.secure) throw new BlkifError('BLKIF_EOPNOTSUPP', 'discard: the backend does not offer secure discard');
    await this.submitter.submit(CallKind.discard, BlkifOp.Discard, offset, length, null, opts.secure === true ? BLKIF_DISCARD_SECURE : 0);
  }

  /** Counters since open (see {@link BlockDeviceStats}). */
  stats(): BlockDeviceStats {
    const s = { ...this.past };
    for (const q of this.queues) addQueueStats(s, q.stats);
    return {
      ...this.submitter.counts, ...this.counts, ...s, pool: sumPoolStats(this.pools), bufferPages: this.buffers.pages,
      responsesPerInterrupt: s.interrupts === 0 ? 0 : s.responses / s.interrupts,
      pending: this.submitter.active,
    };
  }

  /**
   * Drains what is in flight (up to the timeout; then it fails with
   * BLKIF_CLOSED), closes the xenbus connection (Closing, then Closed once
   * the backend follows), unbinds the event channels and ends every grant.
   * Calls made after this starts fail with BLKIF_CLOSED.
   */
  close(): Promise<void> {
    // Every caller waits for the one close.
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const wasConnected = this.state.kind === 'connected' || this.state.kind === 'reconnecting';
    await this.watch?.unwatch().catch(() => undefined);
    this.watch = undefined;
    await this.steps.idle();
    const timeoutMs = this.wish.timeoutMs;
    if (this.submitter.active > 0 && this.state.kind === 'connected') {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.submitter.idle(), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
    }
    const closedErr = new BlkifError('BLKIF_CLOSED', `block device ${this.loc.vdev} closed`);
    const before = this.state;
    this.state = CLOSED;
    if (before.kind === 'connected') for (const q of this.queues) q.fail(closedErr, this.quarantine);
    if (before.kind === 'reconnecting') for (const op of before.held) op.fail(closedErr);
    await closeHandshake(this.platform, this.loc, wasConnected, this.wish.timeoutMs);
    await this.release();
  }

  /** Unbinds the channels and ends every grant (the backend is disconnected). */
  private async release(): Promise<void> {
    for (const q of this.queues) {
      addQueueStats(this.past, q.stats);
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
export function openBlockDevice(options: BlockDeviceOptions): Promise<BlockDevice> {
  return BlockDevice.open(options);
}
