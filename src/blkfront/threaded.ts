/**
 * A device whose queues run in worker threads, one each ({@link QueueThread}
 * in queue_thread.ts): this thread claims the vbd, runs the xenbus
 * handshake with the rings and ports the threads made, and watches the
 * backend; each thread does its own I/O on its own ring with nothing of
 * this thread's per request. That is what lets two threads drive one vbd
 * past what one event loop can (fio's numjobs, SPDK's I/O channels).
 *
 * What a single-thread BlockDevice does and this does not: a backend that
 * closes (or a restore of the domain) ends the device (every queue fails
 * with BLKIF_ENODEV, `gone` is emitted) instead of reconnecting and
 * replaying, because the replay would have to move requests between
 * threads; a resize is not followed.
 */
import { EventEmitter } from 'node:events';
import type { MessagePort } from 'node:worker_threads';
import { BlkifError, PlatformError, XenError, type XenErrorCode } from '../errors.js';
import { XenbusState } from '../wire/xenbus_state.js';
import { readState } from '../xenbus/device.js';
import type { Watch } from '../xenbus/watch.js';
import type { ThreadShare, XenPlatform } from '../platform/types.js';
import type { VbdClaim } from '../platform/ownership.js';
import type { EventChannel } from '../evtchn/types.js';
import { locateDevice, talkToBackend, type RingSource } from './negotiate.js';
import { closeHandshake, resetFrontend, takeOver, undoOpen } from './frontend_state.js';
import { grantBudget, poolPlan } from './budget.js';
import { resolveOptions, type BlockDeviceOptions, type DeviceSettings } from './options.js';
import { vdevName } from './enumerate.js';
import type { BlockDeviceInfo, DeviceLocation, RingSetup } from './types.js';
import type { QueueThreadStats, ThreadEvent, ThreadReply, ThreadRequest } from './thread_messages.js';

export type { QueueThreadStats } from './thread_messages.js';

/** Options of {@link openThreadedDevice}: a device's, with one port per queue thread instead of a queue count. */
export interface ThreadedDeviceOptions extends Omit<BlockDeviceOptions, 'queues'> {
  /**
   * One MessagePort per queue: the other end of each is handed to a worker
   * thread that calls `QueueThread.attach` on it. The backend must offer
   * this many queues (multi-queue-max-queues).
   */
  threads: readonly MessagePort[];
}

export interface ThreadedDeviceEvents {
  /** The backend broke the protocol on one queue: every queue fails with this error from now on. */
  broken: [error: BlkifError];
  /** The backend closed or went away: every queue fails with this error from now on. */
  gone: [error: BlkifError];
}

/** The counters of every queue thread, summed. */
export type ThreadedDeviceStats = QueueThreadStats & { queues: QueueThreadStats[] };

function rebuild(code: string | null, message: string): Error {
  if (code === null) return new Error(message);
  if (code.startsWith('BLKIF_')) return new BlkifError(code as never, message);
  if (code.startsWith('XEN_')) return new PlatformError(code as never, message);
  return new XenError(code as XenErrorCode, message);
}

/** The device's end of one queue thread's port: one request at a time, each answered in turn. */
class ThreadLink {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private gone: Error | null = null;

  constructor(
    private readonly port: MessagePort,
    onEvent: (e: ThreadEvent) => void,
  ) {
    port.on('message', (m: ThreadReply | ThreadEvent) => {
      if ('event' in m) return onEvent(m);
      const w = this.waiting.get(m.id);
      if (w === undefined) return;
      this.waiting.delete(m.id);
      if (m.ok) w.resolve(m.value);
      else w.reject(rebuild(m.code, m.message));
    });
    port.on('close', () => this.lost(new BlkifError('BLKIF_ENODEV', 'a queue thread ended')));
  }

  call<T>(req: ThreadRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never): Promise<T> {
    if (this.gone !== null) return Promise.reject(this.gone);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve, reject });
      this.port.postMessage({ ...req, id });
    });
  }

  private lost(err: Error): void {
    this.gone ??= err;
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  /** Tells the thread the device is done with it (unless it was told already: its attach rejects if it never connected) and closes the port. */
  close(tell = true): void {
    if (tell && this.gone === null) this.port.postMessage({ id: 0, t: 'release' } satisfies ThreadRequest);
    this.lost(new BlkifError('BLKIF_CLOSED', 'device closed'));
    this.port.close();
  }
}

/** The device thread's stand-in for a port a queue thread bound: only its number is used here. */
function remotePort(port: number): EventChannel {
  const never = (): never => {
    throw new PlatformError('XEN_EEVTCHN', `event channel port ${port} belongs to a queue thread`);
  };
  return { port, notify: never, onEvent: () => undefined, mask: never, unmask: never, close: () => undefined };
}

/**
 * A device whose queues run in worker threads (see the file's comment):
 * open it with {@link openThreadedDevice}; the threads do the I/O through
 * their `QueueThread`s.
 */
export class ThreadedDevice extends EventEmitter<ThreadedDeviceEvents> {
  private infoNow!: BlockDeviceInfo;
  private readonly links: ThreadLink[];
  private readonly shares: ThreadShare[] = [];
  private watch: Watch | undefined;
  private ended: BlkifError | null = null;
  private closing: Promise<void> | null = null;
  private claim: VbdClaim | null = null;

  private constructor(
    private readonly platform: XenPlatform,
    private readonly loc: DeviceLocation,
    private readonly wish: DeviceSettings,
    ports: readonly MessagePort[],
  ) {
    super();
    this.links = ports.map(
      (p) =>
        new ThreadLink(p, (e) => {
          if (e.event === 'broken') this.end(new BlkifError(e.code as never, e.message), 'broken');
        }),
    );
  }

  static async open(o: ThreadedDeviceOptions): Promise<ThreadedDevice> {
    if (!Array.isArray(o?.threads) || o.threads.length === 0) {
      throw new BlkifError('BLKIF_EINVAL', 'openThreadedDevice: threads must be a non-empty array of MessagePorts');
    }
    let dev: ThreadedDevice;
    let wish: DeviceSettings;
    let loc: DeviceLocation;
    try {
      wish = resolveOptions({ ...o, queues: o.threads.length });
      if (o.platform.threadShare === undefined)
        throw new BlkifError('BLKIF_EINVAL', 'openThreadedDevice: this platform cannot share with threads');
      loc = await locateDevice(o.platform, o.vdev);
      dev = new ThreadedDevice(o.platform, loc, wish, o.threads);
    } catch (err) {
      // Nothing was shared: the threads are told to give up (their attach rejects), or they would wait for ever.
      for (const p of o.threads as readonly MessagePort[]) new ThreadLink(p, () => undefined).close();
      throw err;
    }
    try {
      dev.claim = await o.platform.vbds.claim(String(o.vdev), vdevName(loc.vdev).name);
    } catch (err) {
      await dev.release();
      throw err;
    }
    try {
      const taken = await takeOver(o.platform, loc, dev.claim.abandonedBy, wish.timeoutMs);
      await resetFrontend(o.platform, loc);
      const pending: Array<Promise<unknown>> = [];
      await talkToBackend(
        o.platform,
        loc,
        wish,
        (n) => {
          if (n.rings.length < dev.links.length) {
            throw new BlkifError(
              'BLKIF_EINVAL',
              `backend ${loc.backend} offers ${n.rings.length} queue${n.rings.length === 1 ? '' : 's'}, and ${dev.links.length} threads need one each`,
            );
          }
          dev.infoNow = { ...n.info, takenOver: taken };
          const plan = poolPlan(n.info, wish);
          // gntalloc's limit holds for every thread's handle together: each queue gets its share of what is free.
          const budget = grantBudget(o.platform.grants, dev.links.length);
          for (const [q, link] of dev.links.entries()) {
            pending.push(
              link.call({
                t: 'connect',
                queue: q,
                info: dev.infoNow,
                plan,
                budget,
                backendId: loc.backendId,
                handle: loc.vdev & 0xffff,
                pollMicros: wish.pollMicros,
              }),
            );
          }
        },
        false,
        dev.ringSource(),
      );
      await Promise.all(pending);
      await dev.watchBackend();
    } catch (err) {
      await undoOpen(dev.platform, loc, wish.timeoutMs, () => dev.release(), dev.claim);
      throw err;
    }
    return dev;
  }

  /** Rings made by the thread that will run each one: it shares the pages and allocates the port. */
  private ringSource(): RingSource {
    const byRing = new Map<RingSetup, ThreadLink>();
    return {
      make: async (q, backendId, pages) => {
        const link = this.links[q]!;
        this.shares[q] ??= this.platform.threadShare!();
        const r = await link.call<{ refs: number[]; port: number }>({ t: 'ring', spec: this.shares[q].spec, backendId, pages });
        const ring: RingSetup = {
          pages: { refs: r.refs, bytes: new Uint8Array(0), domid: backendId, writable: true },
          channel: remotePort(r.port),
        };
        byRing.set(ring, link);
        return ring;
      },
      drop: (ring) =>
        void byRing
          .get(ring)
          ?.call({ t: 'drop' })
          .catch(() => undefined),
    };
  }

  /** Geometry and features as negotiated. */
  get info(): BlockDeviceInfo {
    return this.infoNow;
  }

  private async watchBackend(): Promise<void> {
    this.watch = await this.platform.xenstore.watch(
      `${this.loc.backend}/state`,
      () => {
        if (this.closing !== null || this.ended !== null) return;
        void readState(this.platform.xenstore, this.loc.backend)
          .catch(() => XenbusState.Unknown)
          .then((s) => {
            if (s !== XenbusState.Connected && this.closing === null) {
              this.end(
                new BlkifError(
                  'BLKIF_ENODEV',
                  `backend ${this.loc.backend} closed; a device whose queues run in threads does not reconnect`,
                ),
                'gone',
              );
            }
          });
      },
      { group: `blkfront:${this.loc.vdev}` },
    );
  }

  /** Every queue fails with `err` from now on. */
  private end(err: BlkifError, why: 'broken' | 'gone'): void {
    if (this.ended !== null || this.closing !== null) return;
    this.ended = err;
    for (const l of this.links) void l.call({ t: 'fail', code: err.code, message: err.message }).catch(() => undefined);
    this.emit(why, err);
  }

  /** Every queue thread's counters, and their sum. */
  async stats(): Promise<ThreadedDeviceStats> {
    const queues = await Promise.all(this.links.map((l) => l.call<QueueThreadStats>({ t: 'stats' })));
    const sum = { ...queues[0]!, pool: { ...queues[0]!.pool } };
    for (const s of queues.slice(1)) {
      for (const k of Object.keys(sum) as Array<keyof QueueThreadStats>) if (k !== 'pool') sum[k] += s[k];
      for (const k of Object.keys(sum.pool) as Array<keyof QueueThreadStats['pool']>) sum.pool[k] += s.pool[k];
    }
    return { ...sum, queues };
  }

  /**
   * Waits (up to the timeout) for what the threads have in flight, refuses
   * new calls, disconnects from the backend, then has each thread release
   * its ring, port and pages. Every caller waits for the one close.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await this.watch?.unwatch().catch(() => undefined);
    this.watch = undefined;
    try {
      await Promise.all(this.links.map((l) => l.call({ t: 'quiesce', timeoutMs: this.wish.timeoutMs }).catch(() => undefined)));
      await closeHandshake(this.platform, this.loc, true, this.wish.timeoutMs);
      await this.release();
    } finally {
      this.claim?.release();
    }
  }

  /** The backend is disconnected: each thread releases what it shared, and gives its share back. */
  private async release(): Promise<void> {
    await Promise.all(this.links.map((l) => l.call({ t: 'release' }).catch(() => undefined)));
    for (const l of this.links) l.close(false);
    for (const s of this.shares) s?.release();
  }
}

/**
 * Opens a device whose queues run in worker threads, one queue per entry
 * of `threads` (see {@link ThreadedDevice}). Each worker serves its port
 * with `QueueThread.attach(port)` and does its I/O on the queue that
 * resolves. The platform must offer `threadShare` (a real guest and the
 * simulated host both do).
 */
export function openThreadedDevice(options: ThreadedDeviceOptions): Promise<ThreadedDevice> {
  return ThreadedDevice.open(options);
}
