/**
 * What a caller may ask of a block device, checked up front, and what the
 * device reports back in `stats()`.
 */
import { BlkifError } from '../errors.js';
import type { BlockDeviceInfo } from './types.js';
import type { XenPlatform } from '../platform/types.js';
import type { NegotiationWishes } from './types.js';

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
  /**
   * Busy-poll the response ring for up to this many microseconds after
   * sending requests, before sleeping on the event channel (default 0: off).
   * For latency-bound callers with few requests in flight: a response found
   * by polling costs no event-channel wake-up, but the poll burns CPU on the
   * event loop's thread for as long as it looks. Timers and I/O still run
   * between polls.
   */
  pollMicros?: number;
}

/** The events a {@link BlockDevice} emits. */
export interface BlockDeviceEvents {
  /** The backend reported a new size; `info` has it. */
  resize: [info: BlockDeviceInfo];
  /** The backend came back after closing; the pieces in flight were sent again. */
  reconnect: [detail: { replayed: number }];
  /**
   * The domain was saved and restored (or migrated) and the device is back:
   * everything re-established, the pieces in flight sent again. `downtimeMs`
   * is from noticing the restore to being connected again.
   */
  resume: [detail: { replayed: number; domid: number; downtimeMs: number }];
  /** The backend broke the protocol; every call fails with this error from now on. */
  broken: [error: BlkifError];
  /** The backend went away and did not come back; every call fails with this error from now on. */
  gone: [error: BlkifError];
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
  /** Busy polls (with `pollMicros`) that found responses, and those that gave up and waited for the event. */
  polls: number;
  pollMisses: number;
  /** Responses handled per interrupt (the batching event suppression buys). */
  responsesPerInterrupt: number;
  /** Grant pool, summed over queues. */
  pool: { hits: number; fallbacks: number; kept: number; waits: number; size: number; inUse: number };
  /** Calls whose data was in a device buffer, sent without a bounce copy. */
  zeroCopy: number;
  /** Pages granted for device buffers. */
  bufferPages: number;
  reconnects: number;
  /** Save/restores (or migrations) resumed from. */
  resumes: number;
  /** Pieces replayed after reconnects and resumes. */
  replayed: number;
  /** Calls not yet settled. */
  pending: number;
}

/** The options with their defaults filled in. */
export interface DeviceSettings extends NegotiationWishes {
  pool: boolean;
  poolPages: number | undefined;
  reconnectTimeoutMs: number;
  pollMicros: number;
}

function whole(name: string, v: number | undefined, fallback: number, min: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new BlkifError('BLKIF_EINVAL', `openBlockDevice: ${name} must be an integer of at least ${min}, not ${String(v)}`);
  }
  return v;
}

function flag(name: string, v: boolean | undefined, fallback: boolean): boolean {
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') throw new BlkifError('BLKIF_EINVAL', `openBlockDevice: ${name} must be a boolean, not ${String(v)}`);
  return v;
}

/** Checks the options (BLKIF_EINVAL naming the bad one) and fills in the defaults. */
export function resolveOptions(o: BlockDeviceOptions): DeviceSettings {
  if (typeof o !== 'object' || o === null) throw new BlkifError('BLKIF_EINVAL', 'openBlockDevice: options must be an object');
  const p = o.platform as Partial<XenPlatform> | null | undefined;
  if (typeof p !== 'object' || p === null || p.xenstore === undefined || p.grants === undefined || p.evtchn === undefined) {
    throw new BlkifError(
      'BLKIF_EINVAL',
      "openBlockDevice: platform must be a XenPlatform (openXenPlatform(), or a simulated host's guest)",
    );
  }
  if (typeof o.vdev !== 'number' && typeof o.vdev !== 'string') {
    throw new BlkifError('BLKIF_EINVAL', `openBlockDevice: vdev must be a number or a string, not ${String(o.vdev)}`);
  }
  return {
    queues: whole('queues', o.queues, 2, 1),
    ringPages: whole('ringPages', o.ringPages, 4, 1),
    maxIndirectSegments: whole('maxIndirectSegments', o.maxIndirectSegments, 256, 0),
    persistent: flag('persistentGrants', o.persistentGrants, true),
    timeoutMs: whole('timeoutMs', o.timeoutMs, 10000, 1),
    pool: flag('pool', o.pool, true),
    poolPages: o.poolPages === undefined ? undefined : whole('poolPages', o.poolPages, 0, 0),
    reconnectTimeoutMs: whole('reconnectTimeoutMs', o.reconnectTimeoutMs, 30000, 1),
    pollMicros: whole('pollMicros', o.pollMicros, 0, 0),
  };
}
