/**
 * The data path of one queue: its ring, shadow slots, event channel and
 * grant pool. Requests are encoded straight into the ring slot (no
 * allocation, no BigInt), data is bounced through pooled pages so the
 * backend never sees caller memory, the ring is pushed once per event-loop
 * turn and the backend notified only when ring.h says it is waiting, and
 * every response is checked against the shadow before it completes anything.
 *
 * When the ring or the pool is full, requests wait in order (backpressure);
 * nothing fails for lack of room.
 */
import { BlkifError, isXenError } from '../errors.js';
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_SEGMENT_SIZE,
  BlkifOp,
  BlkifRsp,
  SECTORS_PER_PAGE,
  SEGS_PER_INDIRECT_FRAME,
  segmentOffset,
  setDiscardRequest,
  setIndirectGref,
  setIndirectHeader,
  setRequestHeader,
  setSegment,
  type BlkifAbi,
} from '../wire/blkif.js';
import type { GrantLease, GrantPool } from '../gnttab/pool.js';
import type { EventChannel } from '../evtchn/types.js';
import { FrontRing, ShadowIds } from './ring.js';
import { IoOp, detachedError, opName, statusError } from './request.js';
import { Fifo } from '../util/fifo.js';

/** Schedules the once-per-turn push as a plain microtask. */
const RESOLVED = Promise.resolve();

export interface QueueParams {
  abi: BlkifAbi;
  /** blkif handle written in requests (the virtual-device number, as Linux writes it). */
  handle: number;
  /** Segments one ring request may carry: 11, or the negotiated indirect maximum. */
  maxSegments: number;
  /** Grant fresh pages writable even for writes (persistent grants: the backend maps them read-write). */
  persistent: boolean;
  /**
   * rsp_prod reads of a busy poll after each push (0: none, wait for the
   * event). While a poll is under way the ring asks for no event.
   */
  pollSpins?: number;
}

export interface QueueHooks {
  /** A piece finished (err: null or its typed error); called before the caller hears of it. */
  completed(op: IoOp, err: BlkifError | null): void;
  /** The backend broke the protocol on this queue. */
  broken(err: BlkifError): void;
  /** A piece completed normally and nothing holds it any more: its owner may reuse it. */
  recycle?(op: IoOp): void;
  /**
   * A piece needs more ring requests than the ring has slots (replayed onto
   * a backend with smaller limits): it is off this queue, its owner splits it.
   */
  oversize(op: IoOp): void;
}

export interface QueueStats {
  /** Ring requests put on the ring. */
  requests: number;
  indirectRequests: number;
  /** Event-channel notifications sent to the backend. */
  notifications: number;
  /** Event handler runs that found responses. */
  interrupts: number;
  responses: number;
  /** Busy polls that found responses, and those that gave up and waited for the event. */
  polls: number;
  pollMisses: number;
}

export const zeroQueueStats = (): QueueStats => ({
  requests: 0,
  indirectRequests: 0,
  notifications: 0,
  interrupts: 0,
  responses: 0,
  polls: 0,
  pollMisses: 0,
});

export function addQueueStats(into: QueueStats, from: QueueStats): void {
  for (const k of Object.keys(into) as Array<keyof QueueStats>) into[k] += from[k];
}

/** Fails a piece whose pool acquire has just settled: off its queue's waiting list if it is on one. */
function failWaiting(op: IoOp, err: BlkifError): void {
  if (op.queue !== null) op.queue.abandon(op, err);
  else op.fail(err);
}

export class BlkQueue {
  readonly ring: FrontRing;
  private readonly ids: ShadowIds;
  private readonly shadow: Array<IoOp | null>;
  private readonly shadowOp: Uint8Array;
  /** Pieces waiting for ring slots or pages, in order. */
  private readonly pending = new Fifo<IoOp>();
  /** In flight, in the order they went on the ring (replayed in this order). */
  readonly inFlight = new Set<IoOp>();
  private pushQueued = false;
  private live = true;
  /** The busy poll waiting for its turn of the event loop, if any. */
  private pollTimer: NodeJS.Immediate | null = null;
  private readonly pollSpins: number;
  /** Work queued or in flight here, in pages (plus one per piece): the device sends new work to the least loaded queue. */
  load = 0;
  readonly stats: QueueStats = zeroQueueStats();

  constructor(
    readonly index: number,
    ring: Uint8Array,
    private readonly channel: EventChannel,
    private readonly pool: GrantPool,
    private readonly params: QueueParams,
    private readonly hooks: QueueHooks,
  ) {
    this.ring = new FrontRing(ring, params.abi);
    this.ids = new ShadowIds(this.ring.entries);
    this.shadow = new Array<IoOp | null>(this.ring.entries).fill(null);
    this.shadowOp = new Uint8Array(this.ring.entries);
    this.pollSpins = params.pollSpins ?? 0;
    channel.onEvent(this.onEvent);
  }

  /** Queues a piece and puts it on the ring as soon as there is room. */
  enqueue(op: IoOp): void {
    op.queue = this;
    op.keep = false; // dispatched again: a pool closing under it now fails it as any other
    this.load += op.pages + 1;
    this.pending.push(op);
    this.pump();
  }

  /** Puts waiting pieces on the ring, in order, while the ring and the pool have room. */
  pump(): void {
    for (let op = this.pending.peek(); this.live && op !== undefined; op = this.pending.peek()) {
      if (op.acquiring) break;
      const nreq = op.requestsFor(this.params.maxSegments);
      if (nreq > this.ids.size) {
        // It could never go on this ring whole: waiting would wait forever.
        this.pending.shift();
        this.load -= op.pages + 1;
        op.queue = null;
        this.hooks.oversize(op);
        continue;
      }
      if (this.ids.free < nreq) break;
      if (!this.lendPages(op)) break;
      this.pending.shift();
      this.put(op, nreq);
    }
    if (!this.pushQueued && this.live && this.ring.unpushed) {
      this.pushQueued = true;
      // A resolved promise's then(), not queueMicrotask: Node wraps each of those in an AsyncResource, dear on this path.
      void RESOLVED.then(this.pushNow);
    }
  }

  /**
   * Gives `op` its data pages (once; they stay with it across a reconnect)
   * and indirect pages (per submission). False: it must wait, and an
   * acquire is under way that pumps again when it resolves.
   */
  private lendPages(op: IoOp): boolean {
    const writable = this.params.persistent || op.op === BlkifOp.Read;
    if (op.refs === null && op.pages > 0) {
      const lease = this.take(op, op.pages, writable);
      if (lease === undefined) return false;
      if (lease === null) return this.waitForPages(op, op.pages, 'data');
      if (!this.giveData(op, lease, this.pool)) {
        this.drop(op, detachedError(op));
        return false;
      }
    }
    const ind = op.indirectPagesFor(this.params.maxSegments);
    if (ind > 0 && op.indirect === null) {
      const lease = this.take(op, ind, this.params.persistent);
      if (lease === undefined) return false;
      if (lease === null) return this.waitForPages(op, ind, 'indirect');
      op.indirect = lease;
      op.indirectPool = this.pool;
    }
    return true;
  }

  /**
   * pool.take, with a failure to share (other than running out, which is
   * waited for) failing this piece alone: undefined then, and the piece is gone.
   */
  private take(op: IoOp, n: number, writable: boolean): GrantLease | null | undefined {
    try {
      return this.pool.take(n, writable);
    } catch (err) {
      const code = isXenError(err, 'XEN_CLOSED') ? 'BLKIF_CLOSED' : 'BLKIF_EIO';
      this.drop(
        op,
        new BlkifError(code, `${opName(op.op)}: could not share its pages: ${err instanceof Error ? err.message : String(err)}`, {
          cause: err,
        }),
      );
      return undefined;
    }
  }

  /** Fails the head piece, which pump() is lending to, and carries on with the next. */
  private drop(op: IoOp, err: BlkifError): void {
    this.pending.shift();
    this.load -= op.pages + 1;
    op.fail(err);
    queueMicrotask(() => this.pump());
  }

  /** Gives `op` its bounce pages and, for a write, its data; false when the data is gone (the pages are its to give back). */
  private giveData(op: IoOp, lease: NonNullable<IoOp['lease']>, pool: GrantPool): boolean {
    op.lease = lease;
    op.pool = pool;
    op.refs = lease.refs;
    op.refBase = 0;
    return op.op !== BlkifOp.Write || op.copyIn();
  }

  private waitForPages(op: IoOp, n: number, what: 'data' | 'indirect'): false {
    const pool = this.pool;
    op.acquiring = true;
    pool.acquire(n).then(
      (lease) => {
        op.acquiring = false;
        if (op.keep) {
          // Held for a replay after a restore: these pages are the old domain's, and its pool waits for them to close.
          pool.release(lease);
          return;
        }
        if (what === 'data') {
          if (!this.giveData(op, lease, pool) && op.orphaned === null) return failWaiting(op, detachedError(op));
        } else {
          op.indirect = lease;
          op.indirectPool = pool;
        }
        if (op.orphaned !== null) op.fail(op.orphaned);
        else op.queue?.pump();
      },
      (err: unknown) => {
        op.acquiring = false;
        // A piece the device is replaying after a restore (its pool went with the old grants): it waits for its replay.
        if (op.keep) return;
        // Otherwise only a closed pool rejects: the device is closing and fails what waits.
        failWaiting(op, op.orphaned ?? new BlkifError('BLKIF_CLOSED', `${opName(op.op)}: device closed`, { cause: err }));
      },
    );
    return false;
  }

  /** Writes `op`'s ring requests into the ring (not yet pushed). */
  private put(op: IoOp, nreq: number): void {
    const abi = this.params.abi;
    const v = this.ring.view;
    const per = this.params.maxSegments;
    op.parts = nreq;
    op.status = BlkifRsp.Okay;
    let indirectPage = 0;
    for (let k = 0; k < nreq; k++) {
      const slot = this.ids.alloc();
      const gen = this.ids.generation(slot);
      this.shadow[slot] = op;
      this.shadowOp[slot] = op.op;
      const off = this.ring.requestOffset();
      switch (op.op) {
        case BlkifOp.Read:
        case BlkifOp.Write: {
          const first = k * per;
          const nseg = Math.min(per, op.pages - first);
          const sector = op.sector + first * SECTORS_PER_PAGE;
          const refs = op.refs!;
          const rb = op.refBase;
          if (nseg <= BLKIF_MAX_SEGMENTS_PER_REQUEST) {
            setRequestHeader(abi, v, off, op.op, nseg, this.params.handle, slot, gen, sector);
            for (let i = 0; i < nseg; i++) {
              setSegment(v, segmentOffset(abi, off, i), refs[rb + first + i]!, 0, op.lastSect(first + i));
            }
          } else {
            this.stats.indirectRequests++;
            setIndirectHeader(abi, v, off, op.op, nseg, this.params.handle, slot, gen, sector);
            const ind = op.indirect!;
            for (let p = 0; p * SEGS_PER_INDIRECT_FRAME < nseg; p++) {
              const page = ind.pages[indirectPage]!;
              setIndirectGref(abi, v, off, p, ind.refs[indirectPage]!);
              indirectPage++;
              const pv = this.viewOf(page);
              const at = page.byteOffset;
              const base = first + p * SEGS_PER_INDIRECT_FRAME;
              const n = Math.min(SEGS_PER_INDIRECT_FRAME, nseg - p * SEGS_PER_INDIRECT_FRAME);
              for (let i = 0; i < n; i++) setSegment(pv, at + i * BLKIF_SEGMENT_SIZE, refs[rb + base + i]!, 0, op.lastSect(base + i));
            }
          }
          break;
        }
        case BlkifOp.Discard:
          setDiscardRequest(abi, v, off, op.flag, this.params.handle, slot, gen, op.sector, op.sectors);
          break;
        default: // FlushDiskcache, WriteBarrier: no data
          setRequestHeader(abi, v, off, op.op, 0, this.params.handle, slot, gen, 0);
      }
      this.ring.produced();
      this.stats.requests++;
    }
    this.inFlight.add(op);
  }

  /** A DataView over the memory `page` lies in (kept: pool pages share a few blocks of memory). */
  private viewOf(page: Uint8Array): DataView {
    if (page.buffer !== this.indirectBuffer) {
      this.indirectBuffer = page.buffer;
      this.indirectView = new DataView(page.buffer);
    }
    return this.indirectView!;
  }

  private indirectBuffer: ArrayBufferLike | null = null;
  private indirectView: DataView | null = null;

  private readonly pushNow = (): void => {
    this.pushQueued = false;
    if (this.live && this.ring.push()) {
      this.channel.notify();
      this.stats.notifications++;
    }
    // Polled in a later turn (setImmediate), never here: the loop gets its turn between polls, so timers and I/O still run.
    if (this.pollSpins > 0 && this.pollTimer === null && this.live) this.pollTimer = setImmediate(this.pollNow);
  };

  /** An event: take the responses, and ask for the next event unless a poll will look again. */
  private readonly onEvent = (): void => {
    const n = this.drain(this.pollTimer === null);
    if (n > 0) this.stats.interrupts++;
  };

  /**
   * The busy poll: reads rsp_prod up to pollSpins times. Found: takes what is
   * there without asking for an event, and polls again next turn while
   * requests are out. Nothing: asks for the event (the final check, which
   * catches a response that came meanwhile) and sleeps on it.
   */
  private readonly pollNow = (): void => {
    this.pollTimer = null;
    if (!this.live) return;
    if (this.ring.spin(this.pollSpins)) {
      this.stats.polls++;
      // Nothing out afterwards needs no event: the next push starts a poll.
      if (this.drain(false) >= 0 && this.ring.outstanding > 0 && this.pollTimer === null) {
        this.pollTimer = setImmediate(this.pollNow);
      }
    } else {
      this.stats.pollMisses++;
      this.drain(true);
    }
  };

  /** Takes every response there is (asking for the next event if `arm`); how many, or -1 when the backend broke the ring. */
  private drain(arm: boolean): number {
    if (!this.live) return 0;
    let n: number;
    try {
      n = this.ring.consume(this.onResponse, arm);
    } catch (err) {
      this.hooks.broken(err instanceof BlkifError ? err : new BlkifError('BLKIF_EPROTO', String(err), { cause: err }));
      return -1;
    }
    this.stats.responses += n;
    if (this.pending.length > 0) this.pump();
    return n;
  }

  /** Drops a poll that has not run (the queue is stopping). */
  private stopPolling(): void {
    if (this.pollTimer !== null) clearImmediate(this.pollTimer);
    this.pollTimer = null;
  }

  private readonly onResponse = (idLo: number, idHi: number, operation: number, status: number): void => {
    if (!this.ids.valid(idLo, idHi)) {
      throw new BlkifError(
        'BLKIF_EPROTO',
        `queue ${this.index}: response for id ${idHi}:${idLo}, which is not in flight (unknown or answered twice)`,
      );
    }
    const expect = this.shadowOp[idLo]!;
    if (operation !== expect) {
      throw new BlkifError('BLKIF_EPROTO', `queue ${this.index}: response for a ${opName(expect)} says operation ${operation}`);
    }
    const op = this.shadow[idLo]!;
    this.shadow[idLo] = null;
    this.ids.release(idLo);
    if (status !== BlkifRsp.Okay && op.status === BlkifRsp.Okay) op.status = status;
    if (--op.parts === 0) this.complete(op);
  };

  private complete(op: IoOp): void {
    this.inFlight.delete(op);
    this.load -= op.pages + 1;
    const ok = op.status === BlkifRsp.Okay;
    const copied = !ok || op.op !== BlkifOp.Read || op.lease === null || op.copyOut();
    op.releasePages();
    const err = !ok ? statusError(op) : copied ? null : detachedError(op);
    this.hooks.completed(op, err);
    op.done.pieceDone(err);
    this.hooks.recycle?.(op);
  }

  /** Fails a piece that was still waiting (its pages never reached the backend). */
  abandon(op: IoOp, err: BlkifError): void {
    if (this.pending.remove(op)) this.load -= op.pages + 1;
    op.fail(err);
    this.pump();
  }

  /**
   * Stops the queue for a reconnect: unbinds the channel and hands back every
   * piece in flight (in ring order) then every waiting one, for replay. Data
   * pages stay with their pieces; indirect pages go back (a new ring may
   * split differently).
   */
  detach(closeChannel = true): IoOp[] {
    this.live = false;
    this.stopPolling();
    this.channel.onEvent(null);
    // After a restore the port died with the old domain: it must not be touched.
    if (closeChannel) this.channel.close();
    const out = [...this.inFlight];
    for (const op of out) {
      op.releaseIndirect();
      op.parts = 0;
      op.queue = null;
    }
    for (const op of this.pending.drain()) {
      op.queue = null;
      out.push(op);
    }
    this.inFlight.clear();
    this.load = 0;
    this.shadow.fill(null);
    return out;
  }

  /**
   * Fails everything (the backend broke the protocol, or is gone). Pages the
   * backend may still write are not given back to the pool, so they cannot
   * end up under another request: the pieces keep them and go into
   * `quarantine`, whose owner releases them once the backend is disconnected.
   */
  fail(err: BlkifError, quarantine: IoOp[]): void {
    this.live = false;
    this.stopPolling();
    this.channel.onEvent(null);
    for (const op of this.inFlight) {
      quarantine.push(op);
      op.done.pieceDone(err);
    }
    this.inFlight.clear();
    this.load = 0;
    for (const op of this.pending.drain()) {
      op.queue = null;
      op.fail(err);
    }
    this.shadow.fill(null);
  }

  /** Unbinds the event channel (the queue must be detached or failed). */
  close(): void {
    this.live = false;
    this.stopPolling();
    this.channel.onEvent(null);
    try {
      this.channel.close();
    } catch {
      // already closed by detach()
    }
  }
}
