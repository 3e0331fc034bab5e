/**
 * The submission path, one way down: a checked call (from core.ts) is
 * split into pieces of at most one ring request, each piece routed to a
 * queue (or held while the rings are down, or refused), and the call
 * settled when its last piece completes, on the way back up. Finished
 * pieces and completions are reused and every call's promise is made by
 * one shared executor, so the hot path allocates little more than the
 * caller's promise.
 */
import { BlkifError } from '../errors.js';
import { BLKIF_SECTOR_SIZE, BlkifOp, SECTORS_PER_PAGE } from '../wire/blkif.js';
import { PAGE_SIZE } from '../wire/page.js';
import type { DeviceBuffers } from './buffers.js';
import type { BlkQueue, QueueHooks } from './queue.js';
import { offers } from './negotiate.js';
import type { NegotiatedFeatures } from './types.js';
import { Completion, IoOp, opName } from './request.js';
import type { Route } from './state.js';

/** Call kinds, as Completion.kind; CALL_KINDS names their counters. */
export const CallKind = { read: 0, write: 1, flush: 2, discard: 3 } as const;
export type CallKind = (typeof CallKind)[keyof typeof CallKind];
const CALL_KINDS = ['reads', 'writes', 'flushes', 'discards'] as const;

/** Finished ops and completions kept for reuse, at most (a few rings' worth). */
const FREE_LIST_MAX = 1024;

/** Counters of calls, kept by the submitter for the device's stats. */
export interface CallCounts {
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  errors: number;
  zeroCopy: number;
  bytesRead: number;
  bytesWritten: number;
}

export const zeroCallCounts = (): CallCounts => ({
  reads: 0,
  writes: 0,
  flushes: 0,
  discards: 0,
  errors: 0,
  zeroCopy: 0,
  bytesRead: 0,
  bytesWritten: 0,
});

/**
 * Load (pages plus one per piece) the first queue takes before work spreads:
 * about 1 MiB in flight. Below it one ring serves everything, so one event
 * channel wakes the driver for a whole batch of responses (small I/O gains
 * most from that); above it a second ring lets the backend's second thread
 * work, which is what large I/O gains from.
 */
export const SPREAD_AT = 256;

/** Choices between looks at how the first ring's backend keeps up. */
const WINDOW = 512;
/**
 * Responses per wake-up below which one ring is not worth keeping: the
 * backend answers about one request at a time (it, not the driver, is the
 * slower side), so a second ring's backend thread adds work done in
 * parallel where one ring only adds wake-ups.
 */
const MIN_BATCH = 4;
/** Windows of spreading before one ring is tried again (the load may have changed). */
const RETRY_WINDOWS = 128;

/**
 * The queue a piece goes to: with persistent grants, a device buffer's own
 * queue (the backend keeps a bounded set of persistent grants per queue);
 * else the first queue while its load is under {@link SPREAD_AT} and its
 * backend answers in batches, then the least loaded, round robin among
 * equals, so one ring backed up behind large requests does not hold up work
 * another could take and each queue's pages in use (the backend's persistent
 * grants) stay even.
 *
 * Which of one ring and all of them wins depends on which side is slower:
 * measured on a real Xen, xen-blkback answered 4 KiB reads in batches of
 * about 30 per wake-up on one ring (16 on two), and one ring saved the
 * driver's CPU; on the simulated host serving a file, a backend thread
 * answers one at a time and one ring only multiplied the wake-ups. So the
 * chooser looks every {@link WINDOW} choices: fewer than {@link MIN_BATCH}
 * responses per wake-up on the first ring, with enough work to batch, and it
 * spreads.
 */
export class QueueChooser {
  private next = 0;
  private spreading = false;
  private choices = 0;
  private windows = 0;
  private seenResponses = 0;
  private seenInterrupts = 0;
  /** The first queue the counts above are from: a reconnect brings new queues, counting from zero. */
  private watched: BlkQueue | null = null;

  choose(queues: readonly BlkQueue[], op: IoOp, persistent: boolean): BlkQueue {
    const n = queues.length;
    const region = op.done.region;
    if (region !== null && persistent) return queues[region.home % n]!;
    const first = queues[0]!;
    if (n === 1) return first;
    if (++this.choices === WINDOW) this.look(first);
    if (!this.spreading && first.load + op.pages < SPREAD_AT) return first;
    const start = this.next++ % n;
    let best = queues[start]!;
    for (let i = 1; i < n && best.load > 0; i++) {
      const q = queues[(start + i) % n]!;
      if (q.load < best.load) best = q;
    }
    return best;
  }

  /** Whether work is being spread over every queue (rather than filling the first). */
  get spread(): boolean {
    return this.spreading;
  }

  private look(first: BlkQueue): void {
    this.choices = 0;
    const s = first.stats;
    if (first !== this.watched) {
      // New queues after a reconnect: start counting again rather than judge by a negative window.
      this.watched = first;
      this.seenResponses = s.responses;
      this.seenInterrupts = s.interrupts;
      return;
    }
    const responses = s.responses - this.seenResponses;
    const interrupts = s.interrupts - this.seenInterrupts;
    this.seenResponses = s.responses;
    this.seenInterrupts = s.interrupts;
    if (this.spreading) {
      if (++this.windows >= RETRY_WINDOWS) {
        this.windows = 0;
        this.spreading = false;
      }
    } else if (interrupts > 0 && responses >= WINDOW / 2 && responses < MIN_BATCH * interrupts) {
      this.spreading = true;
      this.windows = 0;
    }
  }
}

export class Submitter {
  /** Segments per ring request; set by {@link connect} on each (re)connect. */
  maxSegments = 0;
  /** Calls not yet settled. */
  active = 0;
  readonly counts: CallCounts = zeroCallCounts();
  private queues: readonly BlkQueue[] = [];
  private features: NegotiatedFeatures | null = null;
  private route: Route = { kind: 'hold', held: [] };
  private readonly chooser = new QueueChooser();
  private drained: Array<() => void> = [];
  private readonly freeOps: IoOp[] = [];
  private readonly freeDone: Completion[] = [];
  // One executor for every call's promise: it hands out resolve and reject without a closure per call.
  private captured: (() => void) | null = null;
  private capturedReject: ((err: Error) => void) | null = null;
  private readonly capture = (resolve: () => void, reject: (err: Error) => void): void => {
    this.captured = resolve;
    this.capturedReject = reject;
  };

  /**
   * @param unsupported told when the backend answered EOPNOTSUPP to an
   *   operation (the device stops offering it, as Linux does)
   */
  constructor(
    private readonly buffers: DeviceBuffers,
    private readonly unsupported: (op: number) => void,
  ) {}

  /** What each queue tells the submitter: completions, and pieces too large for its ring. */
  readonly hooks: Pick<QueueHooks, 'completed' | 'recycle' | 'oversize'> = {
    completed: (op, err) => {
      if (err === null) {
        if (op.op === BlkifOp.Read) this.counts.bytesRead += op.sectors * BLKIF_SECTOR_SIZE;
        else if (op.op === BlkifOp.Write) this.counts.bytesWritten += op.sectors * BLKIF_SECTOR_SIZE;
      } else if (err.code === 'BLKIF_EOPNOTSUPP') this.unsupported(op.op);
    },
    recycle: (op) => this.recycle(op),
    oversize: (op) => {
      for (const piece of this.split(op)) this.send(piece);
    },
  };

  /** New rings: pieces go to these queues, split to `maxSegments` pages. */
  connect(queues: readonly BlkQueue[], features: NegotiatedFeatures, maxSegments: number): void {
    this.queues = queues;
    this.features = features;
    this.maxSegments = maxSegments;
  }

  /** The features changed (one turned out unsupported). */
  setFeatures(features: NegotiatedFeatures): void {
    this.features = features;
  }

  /** From now on pieces go where `route` says (the device's state decides). */
  follow(route: Route): void {
    this.route = route;
  }

  /** Sends pieces (a replay, then what was held) in order. */
  sendAll(ops: readonly IoOp[]): void {
    for (const op of ops) this.send(op);
  }

  /**
   * Splits a call into pieces of at most one ring request and dispatches
   * them. Data in a device buffer goes to the backend as it is; other data
   * is bounced through the pool.
   */
  submit(kind: CallKind, op: number, offset: number, length: number, data: Uint8Array | null, flag = 0): Promise<void> {
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
      this.send(io);
    }
    return promise;
  }

  /** A piece to its queue, the held list, or its failure. */
  private send(op: IoOp): void {
    const route = this.route;
    if (route.kind === 'hold') {
      route.held.push(op);
      return;
    }
    if (route.kind === 'refuse') {
      op.fail(route.error);
      return;
    }
    const f = this.features!;
    if (op.op > BlkifOp.Write && !offers(f, op.op)) {
      // Replayed onto a backend that no longer offers it.
      op.fail(new BlkifError('BLKIF_EOPNOTSUPP', `${opName(op.op)}: the backend does not offer it`));
      return;
    }
    this.chooser.choose(this.queues, op, f.persistentGrants).enqueue(op);
  }

  /**
   * Splits a piece into pieces of at most `maxSegments` pages over the same
   * call (a piece replayed onto a backend with smaller limits). Bounce pages
   * go back and are taken again, a write's data copied again from the
   * caller's buffer; a device buffer's pieces keep its grants.
   */
  private split(op: IoOp): IoOp[] {
    const per = this.maxSegments * SECTORS_PER_PAGE;
    const n = Math.ceil(op.sectors / per);
    const refs = op.lease === null ? op.refs : null;
    const refBase = op.refBase;
    op.releasePages();
    const done = op.done;
    done.remaining += n - 1;
    done.pieces += n - 1;
    const out: IoOp[] = [];
    for (let i = 0; i < n; i++) {
      const sectors = Math.min(per, op.sectors - i * per);
      const from = i * per * BLKIF_SECTOR_SIZE;
      const io = new IoOp(op.op, op.sector + i * per, sectors, op.data!.subarray(from, from + sectors * BLKIF_SECTOR_SIZE), done, op.flag);
      if (refs !== null) {
        io.refs = refs;
        io.refBase = refBase + i * this.maxSegments;
      }
      out.push(io);
    }
    return out;
  }

  /** A piece that completed normally; its call too, when it was the only piece. */
  private recycle(op: IoOp): void {
    const done = op.done;
    // submit() sets every field of a reused completion.
    if (done.pieces === 1 && done.remaining === 0 && this.freeDone.length < FREE_LIST_MAX) this.freeDone.push(done);
    if (this.freeOps.length < FREE_LIST_MAX) {
      op.data = null;
      this.freeOps.push(op);
    }
  }

  /** Resolves when no call is in flight. */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  /** Resolves when no call is in flight, or after `ms`, whichever comes first (a close that will not wait for ever). */
  async idleWithin(ms: number): Promise<void> {
    if (this.active === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.idle(), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  private readonly settled = (c: Completion): void => {
    if (c.region !== null) c.region.inflight--;
    if (c.error === null) this.counts[CALL_KINDS[c.kind]!]++;
    else this.counts.errors++;
    if (--this.active === 0 && this.drained.length > 0) {
      const waiting = this.drained;
      this.drained = [];
      for (const w of waiting) w();
    }
  };
}
