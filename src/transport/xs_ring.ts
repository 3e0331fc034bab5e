/**
 * The xenstore shared ring (struct xenstore_domain_interface, xs_wire.h) as a
 * {@link ByteStream}: how a unikernel guest talks to xenstored, with a page of
 * two 1 KiB byte rings plus an event channel, and no kernel in between.
 *
 * One class serves both ends: the guest ('front') produces on `req` and
 * consumes `rsp`; xenstored ('back') the other way round. Indices are free
 * running u32s read and written with Atomics (sequentially consistent, so
 * they also act as the barriers Linux's xenbus_comms.c puts around them).
 *
 * Rules, as Linux's xb_write / xb_read apply them:
 * - writes take what fits and say so (partial writes); the rest waits for the
 *   consumer's event;
 * - indices that claim more than a ring's worth of data are impossible: the
 *   stream fails with XS_EIO instead of copying garbage (and a back end
 *   records XENSTORE_ERROR_RINGIDX in the page, as xenstored does);
 * - the producer notifies only when the consumer may be idle, i.e. had caught
 *   up with everything before this write; the consumer notifies only when the
 *   ring was full, i.e. the producer may be waiting for space. Each side
 *   re-reads the other's index after publishing its own, so no wakeup is lost.
 */
import { XenstoreError } from '../errors.js';
import type { EventChannel } from '../evtchn/types.js';
import {
  XENSTORE_ERROR_NONE,
  XENSTORE_ERROR_RINGIDX,
  XENSTORE_RING_SIZE,
  XENSTORE_SERVER_FEATURE_ERROR,
  XsRingOffset,
  maskXsIdx,
} from '../wire/xs_wire.js';
import type { ByteStream, ByteStreamHandlers } from './byte_stream.js';

export type XsRingSide = 'front' | 'back';

export interface XsRingStats {
  /** Event-channel notifications sent. */
  notifications: number;
  /** Events received. */
  events: number;
  bytesOut: number;
  bytesIn: number;
  /** Writes that took less than offered because the ring was full. */
  partialWrites: number;
}

/** Index words, in Int32 units from the start of the index block (offset 2048). */
const W = { reqCons: 0, reqProd: 1, rspCons: 2, rspProd: 3, serverFeatures: 4, connection: 5, error: 6 } as const;

export class XsRingStream implements ByteStream {
  private readonly ring: Uint8Array;
  private readonly idx: Int32Array;
  private readonly outBase: number;
  private readonly inBase: number;
  private readonly outCons: number;
  private readonly outProd: number;
  private readonly inCons: number;
  private readonly inProd: number;
  private handlers: ByteStreamHandlers | null = null;
  private wantWritable = false;
  private done = false;
  readonly counters: XsRingStats = { notifications: 0, events: 0, bytesOut: 0, bytesIn: 0, partialWrites: 0 };

  /**
   * @param page the ring page (at least XS_RING_INTERFACE_SIZE bytes, 4-byte aligned).
   * @param evtchn the channel bound to the other end.
   */
  constructor(
    page: Uint8Array,
    private readonly evtchn: EventChannel,
    readonly side: XsRingSide,
  ) {
    if ((page.byteOffset & 3) !== 0 || page.byteLength < XsRingOffset.error + 4) {
      throw new XenstoreError('XS_EINVAL', 'xenstore ring page must be 4-byte aligned and hold struct xenstore_domain_interface');
    }
    this.ring = page;
    this.idx = new Int32Array(page.buffer, page.byteOffset + XsRingOffset.reqCons, 7);
    const front = side === 'front';
    this.outBase = front ? XsRingOffset.req : XsRingOffset.rsp;
    this.inBase = front ? XsRingOffset.rsp : XsRingOffset.req;
    this.outCons = front ? W.reqCons : W.rspCons;
    this.outProd = front ? W.reqProd : W.rspProd;
    this.inCons = front ? W.rspCons : W.reqCons;
    this.inProd = front ? W.rspProd : W.reqProd;
    // xenstored says what it supports; we support reporting errors in the page.
    if (!front) Atomics.store(this.idx, W.serverFeatures, XENSTORE_SERVER_FEATURE_ERROR);
  }

  start(handlers: ByteStreamHandlers): void {
    this.handlers = handlers;
    this.evtchn.onEvent(() => {
      this.counters.events++;
      this.pump();
    });
    // Data may already be waiting (a client that started before we listened).
    queueMicrotask(() => this.pump());
  }

  write(data: Uint8Array): number {
    if (this.done) return 0;
    const cons = Atomics.load(this.idx, this.outCons) >>> 0;
    const prod = Atomics.load(this.idx, this.outProd) >>> 0;
    const used = (prod - cons) >>> 0;
    if (used > XENSTORE_RING_SIZE) {
      this.fail(`producer ${prod} is ${used} bytes past consumer ${cons} on the ${this.side === 'front' ? 'req' : 'rsp'} ring`);
      return 0;
    }
    const n = Math.min(XENSTORE_RING_SIZE - used, data.length);
    if (n < data.length) {
      this.wantWritable = true;
      this.counters.partialWrites++;
    }
    if (n === 0) return 0;
    this.copyIn(prod, data, n);
    // Publish after the data (a seq-cst store orders the copies before it).
    Atomics.store(this.idx, this.outProd, (prod + n) | 0);
    this.counters.bytesOut += n;
    // xb_write: notify if the consumer had caught up with the old producer, so may be asleep.
    const consNow = Atomics.load(this.idx, this.outCons) >>> 0;
    if (((consNow - prod) | 0) >= 0) this.kick();
    return n;
  }

  close(): void {
    this.finish();
  }

  /** Reads what the other side produced, then reports room to a blocked writer. */
  private pump(): void {
    if (this.done || this.handlers === null) return;
    if (this.side === 'front' && (Atomics.load(this.idx, W.serverFeatures) & XENSTORE_SERVER_FEATURE_ERROR) !== 0) {
      const err = Atomics.load(this.idx, W.error);
      if (err !== XENSTORE_ERROR_NONE) return this.fail(`xenstored reported ring error ${err}`);
    }
    for (;;) {
      const cons = Atomics.load(this.idx, this.inCons) >>> 0;
      const prod = Atomics.load(this.idx, this.inProd) >>> 0;
      const avail = (prod - cons) >>> 0;
      if (avail > XENSTORE_RING_SIZE) {
        return this.fail(`producer ${prod} is ${avail} bytes past consumer ${cons} on the ${this.side === 'front' ? 'rsp' : 'req'} ring`);
      }
      if (avail === 0) break;
      const chunk = this.copyOut(cons, avail);
      Atomics.store(this.idx, this.inCons, (cons + avail) | 0);
      this.counters.bytesIn += avail;
      // xb_read: the producer may be waiting for room only if the ring was full.
      const prodNow = Atomics.load(this.idx, this.inProd) >>> 0;
      if ((prodNow - cons) >>> 0 >= XENSTORE_RING_SIZE) this.kick();
      this.handlers.data(chunk);
      if (this.done) return;
    }
    if (this.wantWritable) {
      const used = (Atomics.load(this.idx, this.outProd) - Atomics.load(this.idx, this.outCons)) >>> 0;
      if (used < XENSTORE_RING_SIZE) {
        this.wantWritable = false;
        this.handlers.writable();
      }
    }
  }

  private copyIn(prod: number, data: Uint8Array, n: number): void {
    const at = maskXsIdx(prod);
    const first = Math.min(n, XENSTORE_RING_SIZE - at);
    this.ring.set(data.subarray(0, first), this.outBase + at);
    if (first < n) this.ring.set(data.subarray(first, n), this.outBase);
  }

  private copyOut(cons: number, n: number): Uint8Array {
    const out = new Uint8Array(n);
    const at = maskXsIdx(cons);
    const first = Math.min(n, XENSTORE_RING_SIZE - at);
    out.set(this.ring.subarray(this.inBase + at, this.inBase + at + first));
    if (first < n) out.set(this.ring.subarray(this.inBase, this.inBase + n - first), first);
    return out;
  }

  private kick(): void {
    this.counters.notifications++;
    this.evtchn.notify();
  }

  private fail(why: string): void {
    // A back end records the error where a guest that supports it will look.
    if (this.side === 'back') {
      Atomics.store(this.idx, W.error, XENSTORE_ERROR_RINGIDX);
      this.kick();
    }
    this.finish(new XenstoreError('XS_EIO', `xenstore ring: ${why}`));
  }

  private finish(error?: Error): void {
    if (this.done) return;
    this.done = true;
    this.evtchn.onEvent(null);
    const h = this.handlers;
    this.handlers = null;
    if (h !== null) queueMicrotask(() => h.closed(error));
  }
}
