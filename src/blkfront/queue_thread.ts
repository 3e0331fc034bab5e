/**
 * One queue of a device, run by the worker thread that uses it: the ring,
 * its event channel, its grant pool and its bounce pages are this thread's
 * own (shared and bound through the thread's own platform handles), so an
 * I/O made here goes to the ring and its response comes back here with no
 * hop to another thread, as SPDK gives each thread its own I/O channel.
 * The device's thread (threaded.ts) keeps the handshake and the backend's
 * state; it tells this side what to do over a MessagePort.
 */
import type { MessagePort } from 'node:worker_threads';
import { BlkifError, XenError, asError, type BlkifErrorCode } from '../errors.js';
import { BLKIF_DISCARD_SECURE, BLKIF_NATIVE_ABI, BlkifOp } from '../wire/blkif.js';
import { openThreadPlatform, type ThreadPlatform } from '../platform/thread.js';
import type { SharedPages } from '../gnttab/types.js';
import type { EventChannel } from '../evtchn/types.js';
import type { GrantPool } from '../gnttab/pool.js';
import { BlkQueue, zeroQueueStats } from './queue.js';
import { spinsFor } from './ring.js';
import { DeviceBuffers } from './buffers.js';
import { grantBudget, makePool, segmentCap, sumPoolStats } from './budget.js';
import { CallKind, Submitter, zeroCallCounts } from './submit.js';
import { checkRange, checkWritable } from './device.js';
import { withoutFeature } from './negotiate.js';
import type { IoOp } from './request.js';
import type { BlockDeviceInfo } from './types.js';
import type { BlockTarget } from './target.js';
import type { ThreadReply, ThreadRequest, QueueThreadStats } from './thread_messages.js';

/**
 * A device's queue in this worker thread: a {@link BlockTarget} (reads,
 * writes, flushes and discards go on this thread's ring alone). The device's
 * thread decides when it ends: {@link closed} resolves then, and calls fail
 * with BLKIF_CLOSED from that point.
 */
export class QueueThread implements BlockTarget {
  private platform: ThreadPlatform | null = null;
  private ring: { pages: SharedPages; channel: EventChannel } | null = null;
  private queue: BlkQueue | null = null;
  private pool: GrantPool | null = null;
  private buffers: DeviceBuffers | null = null;
  private submitter: Submitter | null = null;
  private infoNow: BlockDeviceInfo | null = null;
  /** Why calls are refused (closing, or the device failed), or null while they are taken. */
  private refused: BlkifError | null = null;
  private readonly quarantine: IoOp[] = [];
  private ready!: { resolve(q: QueueThread): void; reject(err: Error): void };
  private endedNow!: () => void;
  /** Resolves once the device's thread has released this queue (the device closed). */
  readonly closed: Promise<void> = new Promise((r) => (this.endedNow = r));

  private constructor(private readonly port: MessagePort) {}

  /**
   * Serves the device's thread on `port` (handed to this thread by whoever
   * started it, and to openThreadedDevice in the device's thread) and
   * resolves once the queue is connected and takes I/O. Rejects when the
   * device fails to connect.
   */
  static attach(port: MessagePort): Promise<QueueThread> {
    const q = new QueueThread(port);
    const connected = new Promise<QueueThread>((resolve, reject) => (q.ready = { resolve, reject }));
    port.on('message', (m: ThreadRequest) => void q.serve(m));
    return connected;
  }

  get info(): BlockDeviceInfo {
    if (this.infoNow === null) throw new BlkifError('BLKIF_CLOSED', 'the queue is not connected');
    return this.infoNow;
  }
  get size(): number {
    return this.info.size;
  }
  get sectorSize(): number {
    return this.info.sectorSize;
  }
  get readOnly(): boolean {
    return this.info.readOnly;
  }
  get canDiscard(): boolean {
    return this.info.features.discard !== null;
  }

  readInto(offset: number, dst: Uint8Array): Promise<void> {
    try {
      if (!(dst instanceof Uint8Array)) throw new BlkifError('BLKIF_EINVAL', 'readInto: dst must be a Uint8Array');
      this.checkUsable();
      checkRange(this.infoNow!, 'read', offset, dst.byteLength);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.submitter!.submit(CallKind.read, BlkifOp.Read, offset, dst.byteLength, dst);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    try {
      if (!(data instanceof Uint8Array)) throw new BlkifError('BLKIF_EINVAL', 'write: data must be a Uint8Array');
      this.checkUsable();
      checkRange(this.infoNow!, 'write', offset, data.byteLength);
      checkWritable(this.infoNow!, 'write');
    } catch (err) {
      return Promise.reject(err);
    }
    return this.submitter!.submit(CallKind.write, BlkifOp.Write, offset, data.byteLength, data);
  }

  async flush(): Promise<void> {
    this.checkUsable();
    const f = this.infoNow!.features;
    const op = f.flush ? BlkifOp.FlushDiskcache : f.barrier ? BlkifOp.WriteBarrier : -1;
    if (op < 0) return;
    await this.submitter!.submit(CallKind.flush, op, 0, 0, null);
  }

  async discard(offset: number, length: number, opts: { secure?: boolean } = {}): Promise<void> {
    this.checkUsable();
    checkRange(this.infoNow!, 'discard', offset, length);
    checkWritable(this.infoNow!, 'discard');
    const d = this.infoNow!.features.discard;
    if (d === null) throw new BlkifError('BLKIF_EOPNOTSUPP', 'discard: the backend does not offer it');
    if (opts.secure === true && !d.secure) throw new BlkifError('BLKIF_EOPNOTSUPP', 'discard: the backend does not offer secure discard');
    await this.submitter!.submit(CallKind.discard, BlkifOp.Discard, offset, length, null, opts.secure === true ? BLKIF_DISCARD_SECURE : 0);
  }

  allocBuffer(length: number): Uint8Array {
    this.checkUsable();
    return this.buffers!.alloc(length);
  }

  freeBuffer(buf: Uint8Array): void {
    this.buffers?.free(buf);
  }

  /** This queue's counters (the device's thread sums every queue's). */
  stats(): QueueThreadStats {
    return {
      ...(this.submitter?.counts ?? zeroCallCounts()),
      ...(this.queue?.stats ?? zeroQueueStats()),
      pool: sumPoolStats(this.pool === null ? [] : [this.pool]),
      pending: this.submitter?.active ?? 0,
    };
  }

  private checkUsable(): void {
    if (this.refused !== null) throw this.refused;
    if (this.submitter === null) throw new BlkifError('BLKIF_CLOSED', 'the queue is not connected');
  }

  private async serve(m: ThreadRequest): Promise<void> {
    let reply: ThreadReply;
    try {
      reply = { id: m.id, ok: true, value: await this.handle(m) };
    } catch (err) {
      const e = asError(err);
      reply = { id: m.id, ok: false, code: e instanceof XenError ? e.code : null, message: e.message };
    }
    this.port.postMessage(reply);
    if (m.t === 'release') {
      this.port.close();
      this.endedNow();
    }
  }

  private async handle(m: ThreadRequest): Promise<unknown> {
    switch (m.t) {
      case 'ring': {
        this.platform ??= await openThreadPlatform(m.spec);
        const pages = this.platform.grants.share(m.backendId, m.pages, true);
        try {
          this.ring = { pages, channel: this.platform.evtchn.allocUnbound(m.backendId) };
        } catch (err) {
          this.platform.grants.unshare(pages);
          throw err;
        }
        return { refs: pages.refs, port: this.ring.channel.port };
      }
      case 'drop':
        this.dropRing();
        return null;
      case 'connect':
        return this.connect(m);
      case 'fail':
        this.failAll(new BlkifError(m.code as BlkifErrorCode, m.message));
        return null;
      case 'stats':
        return this.stats();
      case 'quiesce': {
        this.refused ??= new BlkifError('BLKIF_CLOSED', 'block device closed');
        await this.submitter?.idleWithin(m.timeoutMs);
        this.failAll(new BlkifError('BLKIF_CLOSED', 'block device closed'));
        return null;
      }
      case 'release':
        await this.release();
        return null;
    }
  }

  /** The backend is Connected: the pool, the queue, and I/O from now on. Returns the segments per request. */
  private connect(m: Extract<ThreadRequest, { t: 'connect' }>): number {
    const p = this.platform;
    if (p === null || this.ring === null) throw new BlkifError('BLKIF_EPROTO', 'connect before the ring was made');
    const info: BlockDeviceInfo = m.info;
    this.buffers = new DeviceBuffers(p.grants, m.backendId);
    if (!info.trusted) this.buffers.distrust();
    // The device's share for this queue, within what this thread's own handle allows.
    const own = grantBudget(p.grants, 1);
    this.pool = makePool(p.grants, m.backendId, m.plan, {
      pool: Math.min(m.budget.pool, own.pool),
      fresh: Math.min(m.budget.fresh, own.fresh),
    });
    const maxSegments = segmentCap(m.plan.maxSegments, [this.pool]);
    const submitter = new Submitter(this.buffers, (op) => {
      this.infoNow = { ...this.infoNow!, features: withoutFeature(this.infoNow!.features, op) };
      submitter.setFeatures(this.infoNow.features);
    });
    const params = {
      abi: BLKIF_NATIVE_ABI,
      handle: m.handle,
      maxSegments,
      persistent: info.features.persistentGrants,
      pollSpins: spinsFor(m.pollMicros),
    };
    const broken = (err: BlkifError): void => {
      this.failAll(err);
      // The device's thread fails the other queues too, as one device breaks whole.
      this.port.postMessage({ event: 'broken', code: err.code, message: err.message });
    };
    this.queue = new BlkQueue(m.queue, this.ring.pages.bytes, this.ring.channel, this.pool, params, { ...submitter.hooks, broken });
    submitter.connect([this.queue], info.features, maxSegments);
    submitter.follow({ kind: 'send' });
    this.submitter = submitter;
    this.infoNow = info;
    this.ready.resolve(this);
    return maxSegments;
  }

  /** Every call from now on fails with `err`; what is in flight fails too, its pages kept until the release. */
  private failAll(err: BlkifError): void {
    this.refused ??= err;
    this.submitter?.follow({ kind: 'refuse', error: err });
    this.queue?.fail(err, this.quarantine);
    this.ready.reject(err);
  }

  private dropRing(): void {
    if (this.ring === null) return;
    try {
      this.ring.channel.close();
    } catch {
      // already closed with its queue
    }
    this.platform?.grants.unshare(this.ring.pages);
    this.ring = null;
  }

  /** The backend is disconnected: the port, the ring, the pool and the buffers go, then the thread's handles. */
  private async release(): Promise<void> {
    this.failAll(new BlkifError('BLKIF_CLOSED', 'block device closed'));
    this.queue?.close();
    this.queue = null;
    this.dropRing();
    for (const op of this.quarantine.splice(0)) op.releasePages();
    this.buffers?.close();
    await this.pool?.close();
    this.platform?.close();
    this.platform = null;
  }
}
