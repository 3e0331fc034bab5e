/**
 * The shared control block between a simulated blkback's controller (main
 * thread) and its queue workers: the disk size, stop/stall switches, the
 * fault to inject, and per-queue counters. Int32 words in a
 * SharedArrayBuffer, so a worker blocked in its event wait sees a change on
 * its next wake-up (at most {@link WORKER_POLL_MS} later) without messages.
 */

/** Fault kinds a backend can be told to inject. */
export const FaultKind = {
  none: 0,
  /** Answer BLKIF_RSP_ERROR (without doing the I/O). */
  error: 1,
  /** Answer BLKIF_RSP_EOPNOTSUPP. */
  eopnotsupp: 2,
  /** Answer with an id that was never issued. */
  unknownId: 3,
  /** Answer the request twice. */
  duplicateId: 4,
  /** Answer with a different operation than the request's. */
  wrongOp: 5,
  /** Move rsp_prod past the responses written (answers nobody asked for). */
  rspOverflow: 6,
} as const;
export type FaultKind = (typeof FaultKind)[keyof typeof FaultKind];

export const Ctl = {
  /** Disk size in 512-byte sectors, low and high halves. */
  sectorsLo: 0,
  sectorsHi: 1,
  /** 1: workers unmap everything and exit. */
  stop: 2,
  /** 1: workers stop taking requests off the ring (they stay in flight). */
  stall: 3,
  /** The fault to inject (FaultKind). */
  faultKind: 4,
  /** Bitmask of operations (1 << BLKIF_OP_*) the fault applies to. */
  faultOps: 5,
  /** Requests left to fault; -1: every one. */
  faultCount: 6,
  /** Microseconds to hold each response. */
  delayUs: 7,
} as const;

/** Per-queue counters, at QUEUE_BASE + queue * QUEUE_WORDS + field. */
export const QStat = {
  requests: 0,
  responses: 1,
  errors: 2,
  /** Grants mapped and kept (persistent). */
  persistentMaps: 3,
  /** Grants mapped for one request and unmapped after it. */
  transientMaps: 4,
  unmaps: 5,
  /** Event-channel notifications the worker sent. */
  notifications: 6,
  /** Times the worker woke up to find work. */
  wakeups: 7,
  indirect: 8,
  faultsInjected: 9,
  /** Persistent grants held now. */
  persistentHeld: 10,
} as const;
export const QUEUE_BASE = 16;
export const QUEUE_WORDS = 16;
export const MAX_QUEUES = 16;
export const CONTROL_BYTES = (QUEUE_BASE + MAX_QUEUES * QUEUE_WORDS) * 4;

/** How long a worker sleeps between looks at the control block when idle. */
export const WORKER_POLL_MS = 20;

export function setSectors(ctl: Int32Array, sectors: number): void {
  Atomics.store(ctl, Ctl.sectorsHi, Math.floor(sectors / 0x100000000));
  Atomics.store(ctl, Ctl.sectorsLo, (sectors % 0x100000000) | 0);
}

export function getSectors(ctl: Int32Array): number {
  return (Atomics.load(ctl, Ctl.sectorsHi) >>> 0) * 0x100000000 + (Atomics.load(ctl, Ctl.sectorsLo) >>> 0);
}

export function qstat(ctl: Int32Array, queue: number, field: number): number {
  return Atomics.load(ctl, QUEUE_BASE + queue * QUEUE_WORDS + field) >>> 0;
}
