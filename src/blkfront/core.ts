/**
 * The engine behind a BlockDevice: its lifecycle as one state value, the
 * queues over the negotiated rings, and what the backend's state changes
 * mean (a later Connected is a resize; Closing means reconnect and replay
 * what was in flight, as Linux's blkif_recover does; a restore of our own
 * domain means resume: everything shared anew). A backend that breaks the
 * protocol becomes a typed error for everything in flight instead of
 * corrupt data.
 *
 * A call goes one way: device.ts checks it and hands it here, this hands
 * it to the submitter (submit.ts: split, route, complete, reuse), which
 * puts its pieces on a queue (queue.ts), which puts them on the ring
 * (ring.ts). This file only tells the submitter where pieces go as the
 * state changes. The grant budget is in budget.ts, the handshake in
 * negotiate.ts.
 */
import type { EventEmitter } from 'node:events';
import { BlkifError } from '../errors.js';
import { BLKIF_NATIVE_ABI } from '../wire/blkif.js';
import { XenbusState } from '../wire/xenbus_state.js';
import { readState, switchState } from '../xenbus/device.js';
import type { Watch } from '../xenbus/watch.js';
import type { XenPlatform } from '../platform/types.js';
import type { GrantPool } from '../gnttab/pool.js';
import { SerialQueue } from '../util/serial.js';
import { BlkQueue, addQueueStats, zeroQueueStats } from './queue.js';
import { spinsFor } from './ring.js';
import { DeviceBuffers } from './buffers.js';
import type { IoOp } from './request.js';
import { grantBudget, makePool, poolPlan, segmentCap, sumPoolStats } from './budget.js';
import { CLOSED, CONNECTED, refusal, routeFor, type DeviceState } from './state.js';
import { Submitter, type CallKind } from './submit.js';
import { BackendRestarted, locateDevice, talkToBackend, waitForBackend, withoutFeature } from './negotiate.js';
import { readDiskInfo } from './disk_info.js';
import { closeHandshake, resetFrontend, takeOver, undoOpen } from './frontend_state.js';
import type { BlockDeviceInfo, DeviceLocation, Negotiated, RingSetup, TakeOver } from './types.js';
import { vdevName } from './enumerate.js';
import type { VbdClaim } from '../platform/ownership.js';
import { resolveOptions, type BlockDeviceEvents, type BlockDeviceOptions, type BlockDeviceStats, type DeviceSettings } from './options.js';

/** Backend states after which our rings are dead: closing or gone, or a backend that started over. */
const RESTART_STATES: readonly XenbusState[] = [
  XenbusState.Closing,
  XenbusState.Closed,
  XenbusState.Unknown,
  XenbusState.InitWait,
  XenbusState.Initialising,
];

/** Where the device's events go: the public BlockDevice. */
export type DeviceEvents = Pick<EventEmitter<BlockDeviceEvents>, 'emit'>;

export class DeviceCore {
  private stateNow: DeviceState = CONNECTED;
  private infoNow!: BlockDeviceInfo;
  private queues: BlkQueue[] = [];
  private rings: RingSetup[] = [];
  private readonly pools: GrantPool[] = [];
  /** Pieces that failed while the backend may still write their pages: released once it is disconnected. */
  private readonly quarantine: IoOp[] = [];
  private readonly buffers: DeviceBuffers;
  private readonly submitter: Submitter;
  private watch: Watch | undefined;
  /** Reactions to the backend's state, one at a time. */
  private readonly steps: SerialQueue;
  private readonly past = zeroQueueStats();
  private readonly counts = { reconnects: 0, resumes: 0, replayed: 0 };
  private closing: Promise<void> | null = null;
  /** This process's hold on the vbd, from before the first write until the close has settled. */
  private claim: VbdClaim | null = null;
  private takenOver: TakeOver | null = null;

  /** Restores of the platform this device has resumed from. */
  private seenRestores: number;

  private constructor(
    private readonly platform: XenPlatform,
    private loc: DeviceLocation,
    private readonly wish: DeviceSettings,
    /** The key under device/vbd/ it was opened by (found again after a restore). */
    private readonly vdevKey: number | string,
    private readonly events: DeviceEvents,
  ) {
    this.buffers = new DeviceBuffers(platform.grants, loc.backendId);
    this.seenRestores = platform.restores;
    this.submitter = new Submitter(this.buffers, (op) => {
      // As Linux does on EOPNOTSUPP: stop using the feature.
      this.infoNow = { ...this.infoNow, features: withoutFeature(this.infoNow.features, op) };
      this.submitter.setFeatures(this.infoNow.features);
    });
    this.steps = new SerialQueue((err) => {
      if (this.state.kind !== 'closed')
        process.emitWarning(`blkfront ${this.loc.vdev}: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  /** Finds the device, runs the handshake and watches the backend (see openBlockDevice). */
  static async open(options: BlockDeviceOptions, events: DeviceEvents): Promise<DeviceCore> {
    const wish = resolveOptions(options);
    const loc = await locateDevice(options.platform, options.vdev);
    const dev = new DeviceCore(options.platform, loc, wish, options.vdev, events);
    // Nothing is written to the vbd's directory before it is ours: a vbd the
    // guest's kernel or another opener drives is refused with BLKIF_EBUSY.
    dev.claim = await options.platform.vbds.claim(String(options.vdev), vdevName(loc.vdev).name);
    let negotiated = false;
    try {
      dev.takenOver = await takeOver(dev.platform, loc, dev.claim.abandonedBy, wish.timeoutMs);
      await resetFrontend(dev.platform, loc);
      await talkToBackend(dev.platform, loc, wish, (n) => dev.build(n));
      dev.setState(CONNECTED);
      negotiated = true;
      await dev.watchBackend();
    } catch (err) {
      // Leave the vbd as a close() would, ready for the next open: both ends
      // Closed (the backend goes back to InitWait when we start over). A
      // backend that never got going has nothing to undo: we only go Closed.
      dev.setState(CLOSED);
      if (!negotiated) {
        // talkToBackend has unshared the rings and closed their channels itself.
        dev.rings = [];
        dev.queues = [];
      }
      await undoOpen(dev.platform, loc, wish.timeoutMs, () => dev.release(), dev.claim);
      throw err;
    }
    return dev;
  }

  /** Geometry and negotiated features (replaced on resize and reconnect, and when a feature turns out unsupported). */
  get info(): BlockDeviceInfo {
    return this.infoNow;
  }

  get state(): DeviceState {
    return this.stateNow;
  }

  /** The state behind a close under way (what the reactions to the backend still follow). */
  private get live(): DeviceState {
    return this.stateNow.kind === 'closing' ? this.stateNow.from : this.stateNow;
  }

  /**
   * One transition: the state, and where the submitter sends pieces from
   * now on. While closing, a reconnect or failure still under way changes
   * the state the close will find, and new calls stay refused.
   */
  private setState(s: DeviceState): void {
    if (this.stateNow.kind === 'closing' && s.kind !== 'closed' && s.kind !== 'closing') this.stateNow = { kind: 'closing', from: s };
    else this.stateNow = s;
    const route = routeFor(s, this.loc.vdev);
    if (route !== null) this.submitter.follow(route);
  }

  /** A checked call, down to the submitter. */
  submit(kind: CallKind, op: number, offset: number, length: number, data: Uint8Array | null, flag = 0): Promise<void> {
    return this.submitter.submit(kind, op, offset, length, data, flag);
  }

  /** A flush with nothing to flush (the backend has no volatile cache): counted as done. */
  countFlush(): void {
    this.submitter.counts.flushes++;
  }

  allocBuffer(length: number): Uint8Array {
    this.checkUsable();
    return this.buffers.alloc(length);
  }

  freeBuffer(buf: Uint8Array): void {
    this.buffers.free(buf);
  }

  /** Builds the queues over freshly negotiated rings; pools are kept across reconnects. */
  private build(n: Negotiated): void {
    this.infoNow = { ...n.info, takenOver: this.takenOver };
    this.rings = n.rings;
    // An untrusted backend gets none of the caller's memory (Linux's blkfront bounces likewise).
    if (!n.info.trusted) this.buffers.distrust();
    const f = n.info.features;
    const plan = poolPlan(n.info, this.wish);
    const nq = n.rings.length;
    const budget = grantBudget(this.platform.grants, nq);
    for (let q = 0; q < nq; q++) this.pools[q] ??= makePool(this.platform.grants, this.loc.backendId, plan, budget);
    const maxSegments = segmentCap(plan.maxSegments, this.pools.slice(0, nq));
    const params = {
      abi: BLKIF_NATIVE_ABI,
      handle: this.loc.vdev & 0xffff,
      maxSegments,
      persistent: f.persistentGrants,
      pollSpins: spinsFor(this.wish.pollMicros),
    };
    const hooks = { ...this.submitter.hooks, broken: this.broken };
    this.queues = n.rings.map((r, q) => new BlkQueue(q, r.pages.bytes, r.channel, this.pools[q]!, params, hooks));
    this.submitter.connect(this.queues, f, maxSegments);
  }

  private async watchBackend(): Promise<void> {
    this.watch = await this.platform.xenstore.watch(
      `${this.loc.backend}/state`,
      () => {
        this.steps.push(() => this.backendChanged());
      },
      { group: `blkfront:${this.loc.vdev}` },
    );
  }

  /** The backend's state changed: a resize, or it is closing and we reconnect, or the domain was restored and we resume. */
  private async backendChanged(): Promise<void> {
    if (this.live.kind !== 'connected') return;
    if (await this.restored()) return this.resume();
    const s = await readState(this.platform.xenstore, this.loc.backend).catch(() => XenbusState.Unknown);
    if (s === XenbusState.Connected) {
      const info = await readDiskInfo(this.platform, this.loc, this.wish, {
        ringPages: this.infoNow.features.ringPages,
        queues: this.queues.length,
      });
      if (info.sectors !== this.infoNow.sectors) {
        this.infoNow = { ...this.infoNow, ...info, features: this.infoNow.features };
        this.events.emit('resize', this.infoNow);
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
    const { held, replay } = this.stopQueues(true);
    const xs = this.platform.xenstore;
    const timeoutMs = this.wish.reconnectTimeoutMs;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const left = Math.max(1, deadline - Date.now());
        await switchState(xs, this.loc.frontend, XenbusState.Closed);
        await waitForBackend(this.platform, this.loc, [XenbusState.Closed, XenbusState.InitWait], left);
        await switchState(xs, this.loc.frontend, XenbusState.Initialising);
        await talkToBackend(this.platform, this.loc, { ...this.wish, timeoutMs: left }, (n) => this.build(n), true);
        break;
      } catch (err) {
        // The backend closed again before it connected: close our end again and start over, while time is left.
        if (err instanceof BackendRestarted && Date.now() < deadline) continue;
        this.giveUp(err, `backend ${this.loc.backend} did not come back`, [...replay, ...held]);
        return;
      }
    }
    this.counts.reconnects++;
    this.resumed(replay, held);
    this.events.emit('reconnect', { replayed: replay.length });
  }

  /**
   * Whether this domain was saved and restored (or migrated) since we
   * connected: another device of the platform resumed it already, the domid
   * changed, or the toolstack wrote our directory afresh (Initialising,
   * which we never are while connected) for a restore that kept the domid.
   */
  private async restored(): Promise<boolean> {
    if (this.platform.restores !== this.seenRestores) return true;
    if (await this.platform.domidChanged().catch(() => false)) return true;
    return (await readState(this.platform.xenstore, this.loc.frontend).catch(() => XenbusState.Unknown)) === XenbusState.Initialising;
  }

  /**
   * blkfront_resume + blkif_recover after a save/restore: everything the old
   * domain had is gone (its ports, every grant, maybe its domid), so nothing
   * of it is touched or reused. In-flight pieces keep only their data; the
   * platform opens new event channels; the device is found again under the
   * new domid; rings, pools and bounce pages are shared anew; then the
   * handshake and the replay, split to the new limits. Device buffers stay
   * valid for their owners but are bounced from now on.
   */
  private async resume(): Promise<void> {
    const t0 = Date.now();
    // The ports died with the old domain: they are not closed.
    const { held, replay } = this.stopQueues(false);
    for (const op of replay) op.forgetGrants();
    for (const op of this.quarantine.splice(0)) op.releasePages();
    await Promise.all(this.pools.map((p) => p.close()));
    this.pools.length = 0;
    this.buffers.invalidate();
    try {
      await this.platform.resume(this.seenRestores);
      this.seenRestores = this.platform.restores;
      await this.watch?.unwatch().catch(() => undefined);
      this.loc = await locateDevice(this.platform, this.vdevKey);
      await this.watchBackend();
      await resetFrontend(this.platform, this.loc);
      await talkToBackend(this.platform, this.loc, { ...this.wish, timeoutMs: this.wish.reconnectTimeoutMs }, (n) => this.build(n));
    } catch (err) {
      this.giveUp(err, 'could not resume after a restore', [...replay, ...held]);
      return;
    }
    this.counts.resumes++;
    this.resumed(replay, held);
    this.events.emit('resume', { replayed: replay.length, domid: this.platform.domid, downtimeMs: Date.now() - t0 });
  }

  /**
   * The rings are dead: new calls are held from now on, each queue hands
   * back what was in flight (in ring order) then what waited, and the ring
   * pages go.
   */
  private stopQueues(closeChannels: boolean): { held: IoOp[]; replay: IoOp[] } {
    const held: IoOp[] = [];
    this.setState({ kind: 'reconnecting', held });
    const replay: IoOp[] = [];
    for (const q of this.queues) {
      addQueueStats(this.past, q.stats);
      replay.push(...q.detach(closeChannels));
    }
    this.dropRings();
    return { held, replay };
  }

  /** Back after a reconnect or resume: counts, then replays in order and sends what was held. */
  private resumed(replay: IoOp[], held: IoOp[]): void {
    this.setState(CONNECTED);
    this.counts.replayed += replay.length;
    this.submitter.sendAll(replay);
    this.submitter.sendAll(held);
  }

  /** The backend did not come back: every piece waiting fails with BLKIF_ENODEV, and so will every call. */
  private giveUp(err: unknown, why: string, waiting: IoOp[]): void {
    const e =
      err instanceof BlkifError
        ? err
        : new BlkifError('BLKIF_ENODEV', `${why}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    this.setState({ kind: 'gone', error: e });
    for (const op of waiting) op.fail(e);
    this.events.emit('gone', e);
  }

  private dropRings(): void {
    // The backend has unmapped them (or will, deferring the end until it does).
    for (const r of this.rings) this.platform.grants.unshare(r.pages);
    this.rings = [];
    this.queues = [];
  }

  private readonly broken = (err: BlkifError): void => {
    if (this.live.kind !== 'connected') return;
    this.setState({ kind: 'broken', error: err });
    for (const q of this.queues) q.fail(err, this.quarantine);
    this.events.emit('broken', err);
  };

  /** Throws what a call made now fails with (BLKIF_CLOSED, or the error that broke the device). */
  checkUsable(): void {
    if (this.stateNow === CONNECTED) return; // the hot path: one comparison
    const err = refusal(this.stateNow, this.loc.vdev);
    if (err !== null) throw err;
  }

  /** Counters since open (see {@link BlockDeviceStats}). */
  stats(): BlockDeviceStats {
    const s = { ...this.past };
    for (const q of this.queues) addQueueStats(s, q.stats);
    return {
      ...this.submitter.counts,
      ...this.counts,
      ...s,
      pool: sumPoolStats(this.pools),
      bufferPages: this.buffers.pages,
      responsesPerInterrupt: s.interrupts === 0 ? 0 : s.responses / s.interrupts,
      pending: this.submitter.active,
    };
  }

  /** See BlockDevice.close: every caller waits for the one close. */
  close(): Promise<void> {
    // Every caller waits for the one close.
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const from = this.state;
    const wasConnected = from.kind === 'connected' || from.kind === 'reconnecting';
    this.setState({ kind: 'closing', from });
    await this.watch?.unwatch().catch(() => undefined);
    this.watch = undefined;
    await this.steps.idle();
    const timeoutMs = this.wish.timeoutMs;
    if (this.live.kind === 'connected') await this.submitter.idleWithin(timeoutMs);
    const closedErr = new BlkifError('BLKIF_CLOSED', `block device ${this.loc.vdev} closed`);
    const before = this.live;
    this.setState(CLOSED);
    if (before.kind === 'connected') for (const q of this.queues) q.fail(closedErr, this.quarantine);
    if (before.kind === 'reconnecting') for (const op of before.held) op.fail(closedErr);
    try {
      await closeHandshake(this.platform, this.loc, wasConnected, this.wish.timeoutMs);
      await this.release();
    } finally {
      this.claim?.release();
    }
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
