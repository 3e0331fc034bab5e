/**
 * blkfront_connect's reads: the disk's geometry and the features both ends
 * agreed on, each value checked as it is read. A value no backend may
 * publish fails the connect with BLKIF_EPROTO naming the key.
 */
import { BlkifError, XenstoreError, isXenError } from '../errors.js';
import {
  BLKIF_MAX_INDIRECT_SEGMENTS,
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_NATIVE_ABI,
  BLKIF_SECTOR_SIZE,
  VDISK_CDROM,
  VDISK_READONLY,
  VDISK_REMOVABLE,
} from '../wire/blkif.js';
import { BlkifKey } from '../wire/blkif_keys.js';
import type { XenPlatform } from '../platform/types.js';
import type { DeviceLocation, DiskInfo, NegotiatedFeatures, NegotiationWishes } from './types.js';

/**
 * A value the backend wrote that no backend may write (XS_EINVAL from the
 * checks or the client's integer parse) is the backend breaking the
 * protocol: BLKIF_EPROTO, naming the key.
 */
export function backendValue(loc: DeviceLocation) {
  return (err: unknown): never => {
    if (isXenError(err, 'XS_EINVAL')) throw new BlkifError('BLKIF_EPROTO', `backend ${loc.backend}: ${err.message}`, { cause: err });
    throw err;
  };
}

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
