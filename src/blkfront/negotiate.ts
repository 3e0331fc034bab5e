/**
 * The control path: the xenbus handshake with the backend (docs/protocol.md,
 * "Connect sequence", as Linux's talk_to_blkback and blkfront_connect do it).
 * It shares the rings and allocates the event channels, publishes them with
 * everything else in one transaction (retried as a whole on EAGAIN), and
 * reads what the backend offers. No I/O happens here.
 */
import { BlkifKey, queueDir, ringRefKey, vbdFrontendDir } from '../wire/blkif_keys.js';
import { BlkifError, XenstoreError, isXenError } from '../errors.js';
import {
  BLKIF_MAX_INDIRECT_SEGMENTS,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_NATIVE_ABI,
  BLKIF_SECTOR_SIZE,
  BlkifOp,
  VDISK_CDROM,
  VDISK_READONLY,
  VDISK_REMOVABLE,
} from '../wire/blkif.js';
import { XenbusState, xenbusStateName } from '../wire/xenbus_state.js';
import { readState, switchState, waitForState } from '../xenbus/device.js';
import type { XenPlatform } from '../platform/types.js';
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

/** Ring keys (`ring-ref`, `ring-refN`) in a ring's directory that 2^order-page rings do not use. */
export function staleRingKeys(children: readonly string[], order: number): string[] {
  const pages = 1 << order;
  return children.filter((k) => {
    if (k === BlkifKey.ringRef) return order !== 0;
    const m = /^ring-ref(\d+)$/.exec(k);
    return m !== null && (order === 0 || Number(m[1]) >= pages);
  });
}

/**
 * The keys in our directory that a connection with 2^order-page rings and
 * `queues` queues does not write: the other layout's queue directories and
 * ring keys. (Keys the toolstack owns are never touched.)
 */
export function staleKeys(children: readonly string[], order: number, queues: number): string[] {
  const ringKeys = new Set(staleRingKeys(children, order));
  return children.filter((k) => {
    if (k === 'ring-page-order') return order === 0;
    if (k === 'multi-queue-num-queues') return queues === 1;
    if (/^queue-\d+$/.test(k)) return queues === 1 || Number(k.slice(6)) >= queues;
    // With several queues, rings and ports live under queue-N/ only.
    if (k === 'event-channel') return queues > 1;
    if (k === BlkifKey.ringRef || /^ring-ref\d+$/.test(k)) return queues > 1 || ringKeys.has(k);
    return false;
  });
}

/** False for a flush, barrier or discard the features do not include (every other operation is always offered). */
export function offers(f: NegotiatedFeatures, op: number): boolean {
  return !(
    (op === BlkifOp.Discard && f.discard === null) ||
    (op === BlkifOp.FlushDiskcache && !f.flush) ||
    (op === BlkifOp.WriteBarrier && !f.barrier)
  );
}

/** The features without the one `op` needs (after the backend answered EOPNOTSUPP to it). */
export function withoutFeature(f: NegotiatedFeatures, op: number): NegotiatedFeatures {
  if (op === BlkifOp.FlushDiskcache) return { ...f, flush: false };
  if (op === BlkifOp.WriteBarrier) return { ...f, barrier: false };
  if (op === BlkifOp.Discard) return { ...f, discard: null };
  return f;
}

/** Reads where our device and its backend are (`device/vbd/<vdev>`). BLKIF_ENODEV when absent. */
export async function locateDevice(platform: XenPlatform, vdev: number | string): Promise<DeviceLocation> {
  const xs = platform.xenstore;
  const frontend = vbdFrontendDir(platform.domid, vdev);
  try {
    const backend = await xs.read(`${frontend}/${BlkifKey.backend}`);
    const backendId = await xs.readInt(`${frontend}/${BlkifKey.backendId}`);
    const v = Number((await xs.readOptional(`${frontend}/${BlkifKey.virtualDevice}`)) ?? vdev);
    return { frontend, backend, backendId, vdev: Number.isInteger(v) ? v : 0 };
  } catch (err) {
    if (isXenError(err, 'XS_ENOENT'))
      throw new BlkifError('BLKIF_ENODEV', `no virtual block device ${vdev} in ${frontend}`, { cause: err });
    throw err;
  }
}

function stateWait(what: string, loc: DeviceLocation) {
  return (err: unknown): never => {
    if (isXenError(err, 'XS_TIMEOUT')) throw new BlkifError('BLKIF_ENODEV', `backend ${loc.backend} did not reach ${what}`, { cause: err });
    throw err;
  };
}

/** Waits for the backend to reach `want`; BLKIF_ENODEV when its directory goes away or time runs out. */
export async function waitForBackend(
  platform: XenPlatform,
  loc: DeviceLocation,
  want: readonly XenbusState[],
  timeoutMs: number,
): Promise<XenbusState> {
  const s = await waitForState(platform.xenstore, loc.backend, [...want, XenbusState.Unknown], {
    timeoutMs,
    group: `blkfront:${loc.vdev}`,
  }).catch(stateWait(want.map(xenbusStateName).join(' or '), loc));
  if (s === XenbusState.Unknown) throw new BlkifError('BLKIF_ENODEV', `backend ${loc.backend} is gone`);
  return s;
}

/**
 * Runs the handshake from "backend in InitWait" to "frontend Connected".
 * `makeQueues` is called with the rings once the backend is Connected, so the
 * event handlers exist before we say Connected. On failure everything shared
 * or bound here is undone.
 */
export async function talkToBackend(
  platform: XenPlatform,
  loc: DeviceLocation,
  wish: NegotiationWishes,
  makeQueues: (n: Negotiated) => void,
): Promise<Negotiated> {
  const xs = platform.xenstore;
  const be = loc.backend;
  const fe = loc.frontend;
  await waitForBackend(platform, loc, [XenbusState.InitWait], wish.timeoutMs);

  const maxOrder = await xs.readInt(`${be}/${BlkifKey.maxRingPageOrder}`, { fallback: 0 }).catch(backendValue(loc));
  const maxQueues = await xs.readInt(`${be}/${BlkifKey.multiQueueMaxQueues}`, { fallback: 1 }).catch(backendValue(loc));
  let order = 0;
  while (order < maxOrder && 1 << (order + 1) <= wish.ringPages) order++;
  const nq = Math.max(1, Math.min(wish.queues, maxQueues));
  const pages = 1 << order;

  const rings: RingSetup[] = [];
  const undo = (): void => {
    for (const r of rings) {
      r.channel.close();
      platform.grants.unshare(r.pages);
    }
  };
  try {
    for (let q = 0; q < nq; q++) {
      const ringPages = platform.grants.share(loc.backendId, pages, true);
      try {
        rings.push({ pages: ringPages, channel: platform.evtchn.allocUnbound(loc.backendId) });
      } catch (err) {
        platform.grants.unshare(ringPages);
        throw err;
      }
    }
    await xs.transaction(async (tx) => {
      // What an earlier connection published and this one does not (a
      // backend that now offers fewer pages or queues, as after a migration)
      // goes in the same transaction, or the backend would read it as ours.
      for (const key of staleKeys(await tx.directory(fe), order, nq)) await tx.rm(`${fe}/${key}`);
      for (let q = 0; nq > 1 && q < nq; q++) {
        const dir = `${fe}/${queueDir(q)}`;
        const kids = await tx.directory(dir).catch((err: unknown) => {
          if (isXenError(err, 'XS_ENOENT')) return [];
          throw err;
        });
        for (const key of staleRingKeys(kids, order)) await tx.rm(`${dir}/${key}`);
      }
      if (order > 0) await tx.write(`${fe}/${BlkifKey.ringPageOrder}`, String(order));
      if (nq > 1) await tx.write(`${fe}/${BlkifKey.multiQueueNumQueues}`, String(nq));
      for (const [q, r] of rings.entries()) {
        const dir = nq === 1 ? fe : `${fe}/${queueDir(q)}`;
        if (order === 0) await tx.write(`${dir}/${BlkifKey.ringRef}`, String(r.pages.refs[0]));
        else for (const [i, ref] of r.pages.refs.entries()) await tx.write(`${dir}/${ringRefKey(i)}`, String(ref));
        await tx.write(`${dir}/${BlkifKey.eventChannel}`, String(r.channel.port));
      }
      await tx.write(`${fe}/${BlkifKey.protocol}`, BLKIF_NATIVE_ABI.protocol);
      await tx.write(`${fe}/${BlkifKey.featurePersistent}`, wish.persistent ? '1' : '0');
    });
    await switchState(xs, fe, XenbusState.Initialised);
    await waitForBackend(platform, loc, [XenbusState.Connected], wish.timeoutMs);
    const info = await readDiskInfo(platform, loc, wish, { ringPages: pages, queues: nq });
    const n = { rings, info };
    makeQueues(n);
    await switchState(xs, fe, XenbusState.Connected);
    return n;
  } catch (err) {
    undo();
    throw err;
  }
}

/**
 * A value the backend wrote that no backend may write (XS_EINVAL from the
 * checks or the client's integer parse) is the backend breaking the
 * protocol: BLKIF_EPROTO, naming the key.
 */
function backendValue(loc: DeviceLocation) {
  return (err: unknown): never => {
    if (isXenError(err, 'XS_EINVAL')) throw new BlkifError('BLKIF_EPROTO', `backend ${loc.backend}: ${err.message}`, { cause: err });
    throw err;
  };
}

/** What the disk is, before this device knows whether it took the vbd over. */
export type DiskInfo = Omit<BlockDeviceInfo, 'takenOver'>;

/** blkfront_connect's reads: geometry and the features both ends agreed on; BLKIF_EPROTO for a value out of range. */
export function readDiskInfo(platform: XenPlatform, loc: DeviceLocation, wish: NegotiationWishes, rings: RingShape): Promise<DiskInfo> {
  return readDiskKeys(platform, loc, wish, rings).catch(backendValue(loc));
}

/** The rings as negotiated. */
interface RingShape {
  ringPages: number;
  queues: number;
}

async function readDiskKeys(platform: XenPlatform, loc: DeviceLocation, wish: NegotiationWishes, rings: RingShape): Promise<DiskInfo> {
  const xs = platform.xenstore;
  const be = loc.backend;
  const sectorsText = await xs.read(`${be}/${BlkifKey.sectors}`);
  const sectors = Number(sectorsText);
  if (!/^\d+$/.test(sectorsText) || !Number.isSafeInteger(sectors * BLKIF_SECTOR_SIZE)) {
    throw new XenstoreError('XS_EINVAL', `${be}/sectors: "${sectorsText}" is not a disk size`, { path: `${be}/${BlkifKey.sectors}` });
  }
  const info = await xs.readInt(`${be}/${BlkifKey.info}`, { fallback: 0 });
  const sectorSize = await xs.readInt(`${be}/${BlkifKey.sectorSize}`);
  if (!isSectorSize(sectorSize, BLKIF_SECTOR_SIZE)) {
    throw new XenstoreError('XS_EINVAL', `${be}/sector-size: ${sectorSize} is not a power of two from 512 to ${MAX_SECTOR_SIZE}`, {
      path: `${be}/${BlkifKey.sectorSize}`,
    });
  }
  const physicalSectorSize = await xs.readInt(`${be}/${BlkifKey.physicalSectorSize}`, { fallback: sectorSize });
  if (!isSectorSize(physicalSectorSize, sectorSize)) {
    throw new XenstoreError(
      'XS_EINVAL',
      `${be}/physical-sector-size: ${physicalSectorSize} is not a power of two from the ${sectorSize}-byte ` +
        `sector size to ${MAX_SECTOR_SIZE}`,
      { path: `${be}/${BlkifKey.physicalSectorSize}` },
    );
  }
  const flush = await xs.readBool(`${be}/${BlkifKey.featureFlushCache}`, { fallback: false });
  const barrier = await xs.readBool(`${be}/${BlkifKey.featureBarrier}`, { fallback: false });
  const discard = await xs.readBool(`${be}/${BlkifKey.featureDiscard}`, { fallback: false });
  const persistent = wish.persistent && (await xs.readBool(`${be}/${BlkifKey.featurePersistent}`, { fallback: false }));
  const beIndirect = await xs.readInt(`${be}/${BlkifKey.featureMaxIndirectSegments}`, { fallback: 0 });
  let indirect = Math.min(wish.maxIndirectSegments, beIndirect, BLKIF_MAX_INDIRECT_SEGMENTS);
  if (indirect <= BLKIF_MAX_SEGMENTS_PER_REQUEST) indirect = 0;
  return {
    sectors,
    size: sectors * BLKIF_SECTOR_SIZE,
    sectorSize,
    physicalSectorSize,
    readOnly: (info & VDISK_READONLY) !== 0,
    removable: (info & VDISK_REMOVABLE) !== 0,
    cdrom: (info & VDISK_CDROM) !== 0,
    trusted: await xs.readBool(`${loc.frontend}/${BlkifKey.trusted}`, { fallback: true }),
    features: {
      persistentGrants: persistent,
      indirectSegments: indirect,
      ringPages: rings.ringPages,
      queues: rings.queues,
      flush,
      barrier,
      discard: discard ? await readDiscard(platform, be, physicalSectorSize) : null,
      protocol: BLKIF_NATIVE_ABI.protocol,
    },
  };
}

/** Largest logical or physical sector size taken from a backend (the largest any block layer uses). */
export const MAX_SECTOR_SIZE = 64 * 1024;

/** A power of two from `min` to MAX_SECTOR_SIZE (checked without 32-bit bit operations). */
function isSectorSize(v: number, min: number): boolean {
  return Number.isSafeInteger(v) && v >= min && v <= MAX_SECTOR_SIZE && Number.isInteger(Math.log2(v));
}

/**
 * The discard rules: granularity (0 or absent: the physical sector size, as
 * Linux reads it) a power-of-two multiple of 512, and alignment a multiple
 * of 512 below the granularity. Anything else is XS_EINVAL.
 */
async function readDiscard(
  platform: XenPlatform,
  be: string,
  physicalSectorSize: number,
): Promise<NonNullable<NegotiatedFeatures['discard']>> {
  const xs = platform.xenstore;
  const granularity = (await xs.readInt(`${be}/${BlkifKey.discardGranularity}`, { fallback: 0 })) || physicalSectorSize;
  if (!Number.isSafeInteger(granularity) || granularity < BLKIF_SECTOR_SIZE || !Number.isInteger(Math.log2(granularity))) {
    throw new XenstoreError('XS_EINVAL', `${be}/discard-granularity: ${granularity} is not a power-of-two multiple of 512`, {
      path: `${be}/${BlkifKey.discardGranularity}`,
    });
  }
  const alignment = await xs.readInt(`${be}/${BlkifKey.discardAlignment}`, { fallback: 0 });
  if (alignment < 0 || alignment % BLKIF_SECTOR_SIZE !== 0 || alignment >= granularity) {
    throw new XenstoreError(
      'XS_EINVAL',
      `${be}/discard-alignment: ${alignment} is not a multiple of 512 below the granularity ${granularity}`,
      { path: `${be}/${BlkifKey.discardAlignment}` },
    );
  }
  return { granularity, alignment, secure: await xs.readBool(`${be}/${BlkifKey.discardSecure}`, { fallback: false }) };
}

/**
 * Before (re)connecting: our state back to Initialising, after Closed when
 * we were connected, as blkfront does when it starts over.
 */
export async function resetFrontend(platform: XenPlatform, loc: DeviceLocation): Promise<void> {
  const xs = platform.xenstore;
  const s = await readState(xs, loc.frontend);
  if (s !== XenbusState.Initialising) await switchState(xs, loc.frontend, XenbusState.Initialising);
}

/** Frontend states a frontend leaves behind while it drives the vbd. */
const ENGAGED_STATES: readonly XenbusState[] = [
  XenbusState.Initialised,
  XenbusState.Connected,
  XenbusState.Closing,
  XenbusState.Reconfiguring,
  XenbusState.Reconfigured,
];

/**
 * Before the reset, with the vbd claimed: a frontend state that says a
 * frontend still drives the vbd was left by a process that ended without
 * closing (the claim proves nobody holds it). The backend may still have
 * its rings mapped and would not answer a new Initialising, so the close is
 * handshaken first (Closing, then Closed, as Linux's blkfront does before
 * it starts over). Returns what was found, or null when the vbd was idle.
 */
export async function takeOver(
  platform: XenPlatform,
  loc: DeviceLocation,
  abandonedBy: number | null,
  timeoutMs: number,
): Promise<TakeOver | null> {
  const s = await readState(platform.xenstore, loc.frontend).catch(() => XenbusState.Unknown);
  if (!ENGAGED_STATES.includes(s)) return null;
  await closeHandshake(platform, loc, await backendEngaged(platform, loc), timeoutMs);
  return { state: xenbusStateName(s), pid: abandonedBy };
}

/** True when the backend has gone past waiting for us (InitWait or later, and not Closed): a close must be handshaken. */
export async function backendEngaged(platform: XenPlatform, loc: DeviceLocation): Promise<boolean> {
  const s = await readState(platform.xenstore, loc.backend).catch(() => XenbusState.Unknown);
  return s !== XenbusState.Unknown && s !== XenbusState.Initialising && s !== XenbusState.Closed;
}

/**
 * The xenbus side of closing: Closing, then Closed once the backend
 * follows, and wait for it to be Closed (or back in InitWait), so the
 * backend has unmapped everything before the grants end. With `engaged`
 * false (a backend that never got going) only our state goes Closed.
 */
export async function closeHandshake(platform: XenPlatform, loc: DeviceLocation, engaged: boolean, timeoutMs: number): Promise<void> {
  const xs = platform.xenstore;
  if (engaged) {
    try {
      await switchState(xs, loc.frontend, XenbusState.Closing);
      await waitForState(xs, loc.backend, [XenbusState.Closing, XenbusState.Closed, XenbusState.Unknown], { timeoutMs });
    } catch (err) {
      if (!isXenError(err)) throw err;
    }
  }
  await switchState(xs, loc.frontend, XenbusState.Closed).catch(() => undefined);
  if (engaged) {
    await waitForState(xs, loc.backend, [XenbusState.Closed, XenbusState.InitWait, XenbusState.Unknown], { timeoutMs }).catch(
      () => undefined,
    );
  }
}
