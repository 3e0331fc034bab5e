/**
 * The ext superblock read straight from the disk, without the library:
 * whether there is an ext2/3/4 file system at all (its magic), and its
 * account of space, label and kind, from the wire offsets.
 */
import { FsError } from '../errors.js';
import type { BlockTarget } from '../blkfront/target.js';
import { readRangeInto } from '../disk/range.js';
import {
  EXT2_SUPER_MAGIC,
  EXT3_FEATURE_COMPAT_HAS_JOURNAL,
  EXT3_FEATURE_INCOMPAT_EXTENTS,
  EXT4_FEATURE_INCOMPAT_64BIT,
  EXT4_FEATURE_INCOMPAT_FLEX_BG,
  EXT4_FEATURE_RO_COMPAT_DIR_NLINK,
  EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE,
  EXT4_FEATURE_RO_COMPAT_GDT_CSUM,
  EXT4_FEATURE_RO_COMPAT_HUGE_FILE,
  EXT_SUPERBLOCK_OFFSET,
  EXT_SUPERBLOCK_SIZE,
  ExtSuperOffset as O,
} from '../wire/ext_superblock.js';

/** The superblock's account of space (as of the last flush of the metadata). */
export interface FsUsage {
  readonly blockSize: number;
  readonly blocks: number;
  readonly freeBlocks: number;
  readonly inodes: number;
  readonly freeInodes: number;
  readonly label: string;
  readonly uuid: string;
  /** "ext2", "ext3" or "ext4", from the feature flags. */
  readonly kind: string;
}

/** Reads the ext superblock of `target`, or null when there is none. */
export async function readSuperblock(target: BlockTarget): Promise<DataView | null> {
  if (target.size < EXT_SUPERBLOCK_OFFSET + EXT_SUPERBLOCK_SIZE) return null;
  const buf = new Uint8Array(EXT_SUPERBLOCK_SIZE);
  await readRangeInto(target, EXT_SUPERBLOCK_OFFSET, buf);
  const sb = new DataView(buf.buffer);
  return sb.getUint16(O.magic, true) === EXT2_SUPER_MAGIC ? sb : null;
}

export function usageOf(sb: DataView): FsUsage {
  const lo = (o: number): number => sb.getUint32(o, true);
  const incompat = lo(O.featureIncompat);
  const is64 = (incompat & EXT4_FEATURE_INCOMPAT_64BIT) !== 0;
  const hi = (o: number): number => (is64 ? sb.getUint32(o, true) * 2 ** 32 : 0);
  const bytes = new Uint8Array(sb.buffer, sb.byteOffset, EXT_SUPERBLOCK_SIZE);
  const label = Buffer.from(bytes.subarray(O.volumeName, O.volumeName + 16))
    .toString('latin1')
    .replace(/\0.*$/s, '');
  const u = Buffer.from(bytes.subarray(O.uuid, O.uuid + 16)).toString('hex');
  const ext4Incompat = EXT3_FEATURE_INCOMPAT_EXTENTS | EXT4_FEATURE_INCOMPAT_64BIT | EXT4_FEATURE_INCOMPAT_FLEX_BG;
  const ext4RoCompat =
    EXT4_FEATURE_RO_COMPAT_HUGE_FILE |
    EXT4_FEATURE_RO_COMPAT_GDT_CSUM |
    EXT4_FEATURE_RO_COMPAT_DIR_NLINK |
    EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE;
  const kind =
    (incompat & ext4Incompat) !== 0 || (lo(O.featureRoCompat) & ext4RoCompat) !== 0
      ? 'ext4'
      : (lo(O.featureCompat) & EXT3_FEATURE_COMPAT_HAS_JOURNAL) !== 0
        ? 'ext3'
        : 'ext2';
  return {
    blockSize: 1024 << lo(O.logBlockSize),
    blocks: lo(O.blocksCount) + hi(O.blocksCountHi),
    freeBlocks: lo(O.freeBlocksCount) + hi(O.freeBlocksHi),
    inodes: lo(O.inodesCount),
    freeInodes: lo(O.freeInodesCount),
    label,
    uuid: `${u.slice(0, 8)}-${u.slice(8, 12)}-${u.slice(12, 16)}-${u.slice(16, 20)}-${u.slice(20)}`,
    kind,
  };
}

/** Reads the superblock of `target` without mounting: its usage, or FS_ENOFS. */
export async function probeExt(target: BlockTarget): Promise<FsUsage> {
  const sb = await readSuperblock(target);
  if (sb === null) throw new FsError('FS_ENOFS', 'no ext2/3/4 file system found (no superblock magic at byte 1080)');
  return usageOf(sb);
}
