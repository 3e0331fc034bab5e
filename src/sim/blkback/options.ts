/**
 * What a simulated blkback can be asked to be (every feature an option, so a
 * frontend can be tested against a backend that lacks it), the faults it can
 * inject, and what it counts.
 */
import { BlkifOp } from '../../wire/blkif.js';
import { FaultKind } from './control.js';

export interface SimDiskOptions {
  /** The virtual-device number (default 51712, xvda). */
  vdev?: number;
  /** Size in bytes of a memory disk (default 64 MiB). Ignored with `image`. */
  size?: number;
  /** Serve this image file instead of memory; the file's size is the disk's. */
  image?: string;
  /** Room a memory disk has to grow by {@link SimBlkback.resize} (default: `size`). */
  maxSize?: number;
  /** Logical sector size, 512 or 4096 (default 512). */
  sectorSize?: 512 | 4096;
  readOnly?: boolean;
  /** Offer persistent grants (default true). */
  persistent?: boolean;
  /** Most persistent grants kept per queue (default 1056, Linux's max_persistent_grants). */
  maxPersistentGrants?: number;
  /** feature-max-indirect-segments (default 256; 0: indirect descriptors not offered). */
  maxIndirectSegments?: number;
  /** max-ring-page-order (default 4; 0: the key is not written, one-page rings only). */
  maxRingPageOrder?: number;
  /** multi-queue-max-queues (default 4; 1: the key is not written). */
  maxQueues?: number;
  /** feature-flush-cache (default true). */
  flush?: boolean;
  /** feature-barrier (default true). */
  barrier?: boolean;
  /** feature-discard (default true), with its granularity (default: the sector size). */
  discard?: boolean | { granularity?: number; alignment?: number; secure?: boolean };
  /**
   * Backend keys written as they are, after the geometry and features and
   * in the same transaction (so they override them): a backend that
   * publishes hostile or unusual values, for testing a frontend against it.
   */
  keys?: Readonly<Record<string, string>>;
}

/** A fault for the backend to inject. */
export interface SimFault {
  kind: 'error' | 'eopnotsupp' | 'unknown-id' | 'duplicate-id' | 'wrong-op' | 'rsp-overflow';
  /** Operations it applies to (default: all). */
  ops?: Array<'read' | 'write' | 'barrier' | 'flush' | 'discard'>;
  /** How many requests to fault (default: every one until cleared). */
  count?: number;
}

export interface SimBlkbackStats {
  /** Times the frontend connected (1, then 1 more per reconnect). */
  connections: number;
  queues: number;
  requests: number;
  /** Requests by queue (how the frontend spread its work). */
  requestsByQueue: number[];
  responses: number;
  /** Requests answered BLKIF_RSP_ERROR or EOPNOTSUPP because they failed a check. */
  errors: number;
  /** Grant maps kept for reuse (persistent grants). */
  persistentMaps: number;
  /** Grant maps done for one request and undone after it. */
  transientMaps: number;
  unmaps: number;
  /** Event-channel notifications sent to the frontend. */
  notifications: number;
  /** Times a queue woke up to work. */
  wakeups: number;
  indirectRequests: number;
  faultsInjected: number;
  /** Persistent grants held now. */
  persistentHeld: number;
}

export const FAULTS: Record<SimFault['kind'], number> = {
  error: FaultKind.error,
  eopnotsupp: FaultKind.eopnotsupp,
  'unknown-id': FaultKind.unknownId,
  'duplicate-id': FaultKind.duplicateId,
  'wrong-op': FaultKind.wrongOp,
  'rsp-overflow': FaultKind.rspOverflow,
};
export const OPS = {
  read: BlkifOp.Read,
  write: BlkifOp.Write,
  barrier: BlkifOp.WriteBarrier,
  flush: BlkifOp.FlushDiskcache,
  discard: BlkifOp.Discard,
};
