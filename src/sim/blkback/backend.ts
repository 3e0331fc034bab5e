/**
 * A simulated blkback: the backend half of a virtual block device, played in
 * dom0 of the simulated host. The controller (this file, main thread) does
 * what xen-blkback's xenbus.c does, following the frontend's state: it
 * advertises features at InitWait, reads the rings and event channels the
 * frontend published, starts one worker thread per queue (server.ts), writes
 * the disk's geometry and goes Connected; it tears the queues down when the
 * frontend closes and gets ready again when it re-initialises.
 *
 * Every feature is an option, so a frontend can be tested against a backend
 * that lacks it, and faults can be injected while it runs.
 */
import { BlkifKey, vbdBackendDir, vbdFrontendDir } from '../../wire/blkif_keys.js';
import { statSync, truncateSync } from 'node:fs';
import { PlatformError } from '../../errors.js';
import { BLKIF_SECTOR_SIZE } from '../../wire/blkif.js';
import { XenbusState } from '../../wire/xenbus_state.js';
import type { XenstoreClient } from '../../xenbus/client.js';
import type { Watch } from '../../xenbus/watch.js';
import { readState, switchState, waitForState } from '../../xenbus/device.js';
import type { SimHostHandle } from '../host/hypervisor.js';
import type { DiskSpec } from './disk.js';
import { CONTROL_BYTES, Ctl, FaultKind, MAX_QUEUES, QStat, qstat, setSectors } from './control.js';
import type { QueueWorkerData } from './worker.js';
import { startQueueWorker, type QueueWorker, type StartedQueue } from './queue_worker.js';
import { FAULTS, OPS, type SimBlkbackStats, type SimDiskOptions, type SimFault } from './options.js';
import { readFrontend, writeDisk, writeOffers } from './keys.js';
import { SerialQueue } from '../../util/serial.js';

export type { SimBlkbackStats, SimDiskOptions, SimFault } from './options.js';

export class SimBlkback {
  readonly vdev: number;
  /** Backend directory, /local/domain/<backend>/backend/vbd/<frontend>/<vdev>. */
  readonly backendPath: string;
  /** Frontend directory, /local/domain/<frontend>/device/vbd/<vdev>. */
  readonly frontendPath: string;
  /** Why a queue stopped trusting the frontend, if one did. */
  readonly broken: string[] = [];
  private readonly ctl = new Int32Array(new SharedArrayBuffer(CONTROL_BYTES));
  private readonly disk: DiskSpec;
  private readonly opts: Required<Omit<SimDiskOptions, 'discard' | 'image' | 'maxSize'>> & {
    discard: { granularity: number; alignment: number; secure: boolean } | null;
  };
  private workers: QueueWorker[] = [];
  private state: XenbusState = XenbusState.Initialising;
  private watch: Watch | undefined;
  /** Reactions to the frontend's state, one at a time. */
  private readonly steps = new SerialQueue(() => undefined);
  private connections = 0;
  private bytes: number;
  private readonly capacity: number;
  private closed = false;

  constructor(
    private readonly xs: XenstoreClient,
    private readonly hostHandle: SimHostHandle,
    readonly backendDomid: number,
    readonly frontendDomid: number,
    private readonly options: SimDiskOptions,
    /** The storage of the backend this one replaces (a restored domain's disk keeps its data). */
    from?: SimBlkback,
  ) {
    this.vdev = options.vdev ?? 51712;
    this.backendPath = vbdBackendDir(backendDomid, frontendDomid, this.vdev);
    this.frontendPath = vbdFrontendDir(frontendDomid, this.vdev);
    const sectorSize = options.sectorSize ?? 512;
    if (sectorSize !== 512 && sectorSize !== 4096) throw new PlatformError('XEN_EINVAL', `sector size ${String(sectorSize)}: 512 or 4096`);
    const discard = options.discard ?? true;
    this.opts = {
      vdev: this.vdev,
      size: options.size ?? 64 << 20,
      sectorSize,
      readOnly: options.readOnly ?? false,
      persistent: options.persistent ?? true,
      maxPersistentGrants: options.maxPersistentGrants ?? 1056,
      maxIndirectSegments: options.maxIndirectSegments ?? 256,
      maxRingPageOrder: options.maxRingPageOrder ?? 4,
      maxQueues: Math.min(options.maxQueues ?? 4, MAX_QUEUES),
      flush: options.flush ?? true,
      barrier: options.barrier ?? true,
      discard:
        discard === false
          ? null
          : {
              granularity: (discard === true ? undefined : discard.granularity) ?? sectorSize,
              alignment: (discard === true ? undefined : discard.alignment) ?? 0,
              secure: (discard === true ? undefined : discard.secure) ?? false,
            },
      keys: options.keys ?? {},
    };
    if (from !== undefined) {
      this.disk = from.disk;
      this.bytes = from.bytes;
      this.capacity = from.capacity;
    } else if (options.image !== undefined) {
      this.disk = { kind: 'file', path: options.image, readOnly: this.opts.readOnly };
      this.bytes = statSync(options.image).size;
      this.capacity = Infinity;
    } else {
      this.bytes = this.opts.size;
      this.capacity = Math.max(options.maxSize ?? this.bytes, this.bytes);
      this.disk = { kind: 'memory', buffer: new SharedArrayBuffer(this.capacity) };
    }
    if (this.bytes % sectorSize !== 0)
      throw new PlatformError('XEN_EINVAL', `disk size ${this.bytes} is not a multiple of the sector size ${sectorSize}`);
    setSectors(this.ctl, this.bytes / BLKIF_SECTOR_SIZE);
  }

  /** The memory behind a memory disk (to check what the frontend wrote), else undefined. */
  get memory(): Uint8Array | undefined {
    return this.disk.kind === 'memory' ? new Uint8Array(this.disk.buffer, 0, this.bytes) : undefined;
  }

  /** Disk size in bytes. */
  get size(): number {
    return this.bytes;
  }

  /**
   * Creates the device's xenstore entries as the toolstack does (`xl
   * block-attach`), advertises the features and goes to InitWait.
   */
  async start(): Promise<void> {
    const be = this.backendPath;
    const fe = this.frontendPath;
    await this.xs.transaction(async (tx) => {
      await tx.mkdir(be);
      await tx.setPerms(be, [
        { perm: 'n', domid: this.backendDomid },
        { perm: 'r', domid: this.frontendDomid },
      ]);
      await tx.mkdir(fe);
      await tx.setPerms(fe, [
        { perm: 'n', domid: this.frontendDomid },
        { perm: 'r', domid: this.backendDomid },
      ]);
      await tx.write(`${fe}/${BlkifKey.backend}`, be);
      await tx.write(`${fe}/${BlkifKey.backendId}`, String(this.backendDomid));
      await tx.write(`${fe}/${BlkifKey.virtualDevice}`, String(this.vdev));
      await tx.write(`${fe}/${BlkifKey.state}`, String(XenbusState.Initialising));
      await tx.write(`${be}/${BlkifKey.frontend}`, fe);
      await tx.write(`${be}/${BlkifKey.frontendId}`, String(this.frontendDomid));
      await tx.write(`${be}/${BlkifKey.mode}`, this.opts.readOnly ? 'r' : 'w');
      await tx.write(`${be}/${BlkifKey.state}`, String(XenbusState.Initialising));
    });
    await this.advertise();
    this.watch = await this.xs.watch(
      `${fe}/${BlkifKey.state}`,
      () => {
        this.serialize(() => this.frontendChanged()).catch((err: unknown) => {
          if (!this.closed) process.emitWarning(`simulated blkback ${this.vdev}: ${err instanceof Error ? err.message : String(err)}`);
        });
      },
      { group: `blkback:${this.frontendDomid}:${this.vdev}` },
    );
  }

  /** Runs state handling one step at a time, in order; the step's own promise says how it went. */
  private serialize(step: () => Promise<void>): Promise<void> {
    return this.steps.run(step);
  }

  private async setState(s: XenbusState): Promise<void> {
    this.state = s;
    await switchState(this.xs, this.backendPath, s);
  }

  /** The features a backend writes before InitWait (blkback's xen_blkbk_probe), then InitWait. */
  private async advertise(): Promise<void> {
    await writeOffers(this.xs, this.backendPath, this.opts);
    await this.setState(XenbusState.InitWait);
  }

  private async frontendChanged(): Promise<void> {
    if (this.closed) return;
    const fs = await readState(this.xs, this.frontendPath).catch(() => XenbusState.Unknown);
    switch (fs) {
      case XenbusState.Initialising:
        // blkback's frontend_changed: a frontend starting over after we closed.
        if (this.state === XenbusState.Closed) await this.advertise();
        return;
      case XenbusState.Initialised:
      case XenbusState.Connected:
        if (this.state === XenbusState.InitWait) await this.connect();
        return;
      case XenbusState.Closing:
        await this.stopQueues();
        if (this.state !== XenbusState.Closed) await this.setState(XenbusState.Closing);
        return;
      case XenbusState.Closed:
      case XenbusState.Unknown:
        await this.stopQueues();
        if (this.state !== XenbusState.Closed) await this.setState(XenbusState.Closed);
        return;
      default:
    }
  }

  /** connect_ring, then connect: map what the frontend published, start the queues, publish the disk. */
  private async connect(): Promise<void> {
    const o = this.opts;
    const f = await readFrontend(this.xs, this.frontendPath, o);
    if (typeof f === 'string') return this.fatal(f);
    const { queues, protocol } = f;
    const persistent = o.persistent && f.persistent;
    Atomics.store(this.ctl, Ctl.stop, 0);
    const started = queues.map((q, i) => this.startQueue(i, q.refs, q.port, protocol, persistent));
    const results = await Promise.allSettled(started.map((s) => s.ready));
    this.workers = started.map((s) => s.qw);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed !== undefined) {
      await this.stopQueues();
      return this.fatal(String(failed.reason));
    }
    this.connections++;
    await this.publishDisk(persistent);
    await this.setState(XenbusState.Connected);
  }

  private startQueue(queue: number, ringRefs: number[], port: number, protocol: string, persistent: boolean): StartedQueue {
    const o = this.opts;
    const policy = {
      readOnly: o.readOnly,
      sectorSize: o.sectorSize,
      persistent,
      maxPersistentGrants: o.maxPersistentGrants,
      maxIndirectSegments: o.maxIndirectSegments,
      flush: o.flush,
      barrier: o.barrier,
      discard: o.discard !== null,
    };
    const data: QueueWorkerData = {
      handle: this.hostHandle,
      backendDomid: this.backendDomid,
      frontendDomid: this.frontendDomid,
      queue,
      ringRefs,
      port,
      protocol,
      ctl: this.ctl.buffer,
      disk: this.disk,
      policy,
    };
    return startQueueWorker(data, (reason) => this.broken.push(`queue ${queue}: ${reason}`));
  }

  /** The geometry and features blkback writes before Connected. */
  private async publishDisk(persistent: boolean): Promise<void> {
    await writeDisk(this.xs, this.backendPath, this.opts, this.bytes, persistent);
  }

  /** xenbus_dev_fatal: records why, and closes. */
  private async fatal(message: string): Promise<void> {
    await this.xs.write(`${this.backendPath}/error`, message);
    await this.setState(XenbusState.Closing);
  }

  /** Stops every queue worker; each unmaps what it holds before it exits. */
  private async stopQueues(): Promise<void> {
    if (this.workers.length > 0) {
      Atomics.store(this.ctl, Ctl.stop, 1);
      await Promise.all(this.workers.map((w) => w.stopped));
      this.workers = [];
    }
    // Always, even with no queue running: a second goClosing() stalls first and
    // must not leave the next connection's queues stalled.
    Atomics.store(this.ctl, Ctl.stall, 0);
  }

  /**
   * Changes what the backend offers from its next connection on, as a
   * backend restarted with other settings would (e.g. before {@link goClosing}).
   */
  reconfigure(
    options: Pick<SimDiskOptions, 'persistent' | 'maxIndirectSegments' | 'maxRingPageOrder' | 'maxQueues' | 'flush' | 'barrier' | 'keys'>,
  ): void {
    const o = this.opts;
    if (options.persistent !== undefined) o.persistent = options.persistent;
    if (options.maxIndirectSegments !== undefined) o.maxIndirectSegments = options.maxIndirectSegments;
    if (options.maxRingPageOrder !== undefined) o.maxRingPageOrder = options.maxRingPageOrder;
    if (options.maxQueues !== undefined) o.maxQueues = Math.min(options.maxQueues, MAX_QUEUES);
    if (options.flush !== undefined) o.flush = options.flush;
    if (options.barrier !== undefined) o.barrier = options.barrier;
    if (options.keys !== undefined) o.keys = options.keys;
  }

  /** Injects a fault into the requests that follow. */
  inject(fault: SimFault): void {
    const ops = fault.ops ?? (Object.keys(OPS) as Array<keyof typeof OPS>);
    Atomics.store(
      this.ctl,
      Ctl.faultOps,
      ops.reduce((m, op) => m | (1 << OPS[op]), 0),
    );
    Atomics.store(this.ctl, Ctl.faultCount, fault.count ?? -1);
    Atomics.store(this.ctl, Ctl.faultKind, FAULTS[fault.kind]);
  }

  clearFaults(): void {
    Atomics.store(this.ctl, Ctl.faultKind, FaultKind.none);
  }

  /** Holds every response for `us` microseconds (0: none). */
  setDelay(us: number): void {
    Atomics.store(this.ctl, Ctl.delayUs, Math.max(0, Math.floor(us)));
  }

  /** Stops taking requests off the rings (true) or resumes (false): requests stay in flight. */
  stall(on: boolean): void {
    Atomics.store(this.ctl, Ctl.stall, on ? 1 : 0);
  }

  /**
   * Goes to Closing with whatever is in flight left unanswered, as a backend
   * being restarted or migrated does. The frontend is expected to close, and
   * to reconnect; this backend follows it (Closed, then InitWait again).
   */
  goClosing(): Promise<void> {
    return this.serialize(async () => {
      Atomics.store(this.ctl, Ctl.stall, 1);
      await this.stopQueues();
      await this.setState(XenbusState.Closing);
    });
  }

  /**
   * Changes the disk's size (a memory disk up to its `maxSize`; an image file
   * is truncated or extended), writes `sectors` and rewrites state Connected,
   * as blkback's vbd_resize does.
   */
  resize(bytes: number): Promise<void> {
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % this.opts.sectorSize !== 0) {
      return Promise.reject(new PlatformError('XEN_EINVAL', `bad size ${bytes}`));
    }
    if (bytes > this.capacity)
      return Promise.reject(new PlatformError('XEN_EINVAL', `size ${bytes} is past the memory disk's maxSize ${this.capacity}`));
    return this.serialize(async () => {
      if (this.disk.kind === 'file') truncateSync(this.disk.path, bytes);
      else if (bytes < this.bytes) new Uint8Array(this.disk.buffer).fill(0, bytes, this.bytes);
      this.bytes = bytes;
      setSectors(this.ctl, bytes / BLKIF_SECTOR_SIZE);
      await this.xs.write(`${this.backendPath}/sectors`, String(bytes / BLKIF_SECTOR_SIZE));
      if (this.state === XenbusState.Connected) await this.setState(XenbusState.Connected);
    });
  }

  /**
   * Unplugs the device, as `xl block-detach` does: Closing, then (once the
   * frontend closed, or after `timeoutMs`) Closed, and both directories removed.
   */
  /**
   * The frontend's domain was saved: its device goes, as the toolstack
   * destroys it (queues stopped, every grant unmapped, both directories
   * removed). The storage stays for {@link restoredAs}.
   */
  async destroy(): Promise<void> {
    await this.close();
    await this.xs.rm(this.backendPath).catch(() => undefined);
    await this.xs.rm(this.frontendPath).catch(() => undefined);
  }

  /**
   * The device of the restored domain `frontendDomid` (`hostHandle`: the
   * host as it is after the restore): a new backend serving the same
   * storage with the same options, started (InitWait).
   */
  async restoredAs(frontendDomid: number, hostHandle: SimHostHandle): Promise<SimBlkback> {
    const next = new SimBlkback(this.xs, hostHandle, this.backendDomid, frontendDomid, this.options, this);
    await next.start();
    return next;
  }

  async detach(timeoutMs = 5000): Promise<void> {
    await this.serialize(async () => {
      await this.stopQueues();
      await this.setState(XenbusState.Closing);
    });
    await waitForState(this.xs, this.frontendPath, [XenbusState.Closed, XenbusState.Unknown], { timeoutMs }).catch(() => undefined);
    await this.close();
    await this.xs.rm(this.backendPath).catch(() => undefined);
    await this.xs.rm(this.frontendPath).catch(() => undefined);
  }

  stats(): SimBlkbackStats {
    const c = this.ctl;
    const sum = (f: number): number => {
      let n = 0;
      for (let q = 0; q < MAX_QUEUES; q++) n += qstat(c, q, f);
      return n;
    };
    return {
      connections: this.connections,
      queues: this.workers.length,
      requests: sum(QStat.requests),
      requestsByQueue: this.workers.map((_, q) => qstat(c, q, QStat.requests)),
      responses: sum(QStat.responses),
      errors: sum(QStat.errors),
      persistentMaps: sum(QStat.persistentMaps),
      transientMaps: sum(QStat.transientMaps),
      unmaps: sum(QStat.unmaps),
      notifications: sum(QStat.notifications),
      wakeups: sum(QStat.wakeups),
      indirectRequests: sum(QStat.indirect),
      faultsInjected: sum(QStat.faultsInjected),
      persistentHeld: sum(QStat.persistentHeld),
    };
  }

  /** Waits until this backend has published `state` (for tests and tools). */
  waitForState(state: XenbusState, timeoutMs = 10000): Promise<XenbusState> {
    return waitForState(this.xs, this.backendPath, state, { timeoutMs });
  }

  /** Stops the queues and the watch; leaves xenstore as it is. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.watch?.unwatch().catch(() => undefined);
    await this.steps.idle();
    await this.stopQueues();
  }
}
