/**
 * What the control path knows of a device: where it is, what the caller
 * wished, its rings, and the geometry and features negotiated.
 */
import type { SharedPages } from '../gnttab/types.js';
import type { EventChannel } from '../evtchn/types.js';

/** What the frontend was told where to find. */
export interface DeviceLocation {
  /** Our directory, absolute. */
  frontend: string;
  backend: string;
  backendId: number;
  vdev: number;
}

/** The frontend's wishes; each is capped by what the backend offers. */
export interface NegotiationWishes {
  queues: number;
  ringPages: number;
  maxIndirectSegments: number;
  persistent: boolean;
  timeoutMs: number;
}

/** One queue's shared ring and event channel. */
export interface RingSetup {
  pages: SharedPages;
  channel: EventChannel;
}

/** Disk geometry and features, as negotiated. */
export interface BlockDeviceInfo {
  /** Size in 512-byte sectors (the unit of `sectors` whatever the sector size). */
  readonly sectors: number;
  /** Size in bytes. */
  readonly size: number;
  /** Logical sector size: offsets and lengths must be multiples of it. */
  readonly sectorSize: number;
  readonly physicalSectorSize: number;
  readonly readOnly: boolean;
  readonly removable: boolean;
  readonly cdrom: boolean;
  /**
   * The toolstack trusts the backend (the frontend's `trusted` key, 1 when
   * absent, as Linux reads it since XSA-403). When false, none of the
   * caller's memory is granted: device buffers are plain memory and every
   * I/O is bounced through pool pages zeroed before their first grant.
   */
  readonly trusted: boolean;
  /**
   * Set when the vbd was found still engaged by a frontend whose process
   * ended without closing it (killed), and this device took it over: the
   * state that frontend left, and its pid when known.
   */
  readonly takenOver: TakeOver | null;
  readonly features: NegotiatedFeatures;
}

/** What {@link BlockDeviceInfo.takenOver} says. */
export interface TakeOver {
  /** The frontend state it was found in (Connected, Initialised, Closing). */
  readonly state: string;
  /** The pid of the process that left it, when its lock file said. */
  readonly pid: number | null;
}

export interface NegotiatedFeatures {
  /** Both ends keep grants mapped (feature-persistent). */
  readonly persistentGrants: boolean;
  /** Segments per indirect request (0: indirect descriptors not in use; requests carry at most 11). */
  readonly indirectSegments: number;
  /** Pages per ring. */
  readonly ringPages: number;
  readonly queues: number;
  /** FLUSH_DISKCACHE is available. */
  readonly flush: boolean;
  /** WRITE_BARRIER is available. */
  readonly barrier: boolean;
  /** DISCARD is available, with its granularity and alignment in bytes. */
  readonly discard: { readonly granularity: number; readonly alignment: number; readonly secure: boolean } | null;
  /** The ABI spoken on the rings. */
  readonly protocol: string;
}

export interface Negotiated {
  rings: RingSetup[];
  info: DiskInfo;
}

/** What the disk is, before this device knows whether it took the vbd over. */
export type DiskInfo = Omit<BlockDeviceInfo, 'takenOver'>;
