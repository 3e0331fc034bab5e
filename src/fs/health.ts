/**
 * The superblock's record of a file system's health, kept as e2fsprogs'
 * own userspace driver (fuse2fs) and the kernel keep it, so that a crash
 * while mounted read-write is never mistaken for a clean file system:
 *
 * - a read-write mount clears EXT2_VALID_FS, counts the mount and stamps its
 *   time, and flushes that before the first change; a clean unmount sets
 *   the state back to what it was at mount (plus EXT2_ERROR_FS if errors
 *   happened). A machine that stops in between leaves the file system "not
 *   clean", which makes e2fsck (and the kernel's boot-time fsck) check it;
 * - a journal that needs recovery (the kernel had it mounted when its
 *   machine stopped) holds the newest metadata: writing around it corrupts
 *   the file system when the kernel later replays it, so only a read-only
 *   mount is allowed, with a warning that it may read stale data;
 * - errors recorded in the superblock (EXT2_ERROR_FS, s_error_count) mean
 *   the file system needs e2fsck: read-only unless the caller forces it;
 * - an unchecked file system, the maximal mount count or check interval
 *   reached, and orphan inodes are warnings, as fuse2fs prints them.
 *
 * These are plain superblock edits (with its crc32c under metadata_csum),
 * written at byte 1024 of the disk outside the library, when the library
 * has not opened the file system or has closed it.
 */
import { FsError } from '../errors.js';
import type { BlockTarget } from '../blkfront/target.js';
import { writeRange } from '../disk/range.js';
import { crc32c } from '../wire/crc32c.js';
import {
  EXT2_ERROR_FS,
  EXT2_VALID_FS,
  EXT3_FEATURE_COMPAT_HAS_JOURNAL,
  EXT3_FEATURE_INCOMPAT_RECOVER,
  EXT4_FEATURE_RO_COMPAT_METADATA_CSUM,
  EXT_SUPERBLOCK_OFFSET,
  EXT_SUPERBLOCK_SIZE,
  ExtSuperOffset as O,
} from '../wire/ext_superblock.js';

/** What the superblock says of the file system's health. */
export interface FsCondition {
  /** The journal holds transactions not yet written home (needs_recovery). */
  readonly needsRecovery: boolean;
  /** EXT2_ERROR_FS is set, or errors are counted. */
  readonly errors: boolean;
  readonly errorCount: number;
  /** EXT2_VALID_FS: unmounted cleanly (or checked) since the last read-write mount. */
  readonly valid: boolean;
  readonly mountCount: number;
  /** Mounts allowed between checks (0 or less: no limit). */
  readonly maxMountCount: number;
  /** The check interval has passed since the last check. */
  readonly checkDue: boolean;
  /** Inodes were being deleted when it was last mounted (s_last_orphan). */
  readonly orphans: boolean;
  readonly hasJournal: boolean;
}

/** The fix named in every refusal: where the file system can be repaired. */
const FIX = 'run e2fsck -fy on it where nothing has it mounted (in dom0, on the backing image or device)';

export function conditionOf(sb: DataView, nowSec = Math.floor(Date.now() / 1000)): FsCondition {
  const u32 = (o: number): number => sb.getUint32(o, true);
  const state = sb.getUint16(O.state, true);
  const errorCount = u32(O.errorCount);
  const interval = u32(O.checkinterval);
  return {
    needsRecovery: (u32(O.featureIncompat) & EXT3_FEATURE_INCOMPAT_RECOVER) !== 0,
    errors: (state & EXT2_ERROR_FS) !== 0 || errorCount > 0,
    errorCount,
    valid: (state & EXT2_VALID_FS) !== 0,
    mountCount: sb.getUint16(O.mntCount, true),
    maxMountCount: sb.getInt16(O.maxMntCount, true),
    checkDue: interval > 0 && u32(O.lastcheck) + interval <= nowSec,
    orphans: u32(O.lastOrphan) !== 0,
    hasJournal: (u32(O.featureCompat) & EXT3_FEATURE_COMPAT_HAS_JOURNAL) !== 0,
  };
}

/**
 * Whether a mount may go ahead: throws FS_EDIRTY when it must not write
 * (a journal needing recovery; recorded errors unless `force`), and returns
 * the warnings a careful user should see.
 */
export function admit(c: FsCondition, readOnly: boolean, force: boolean): string[] {
  if (c.needsRecovery && !readOnly) {
    throw new FsError(
      'FS_EDIRTY',
      'the journal needs recovery (the file system was mounted when its machine stopped): writing now would be undone or ' +
        `corrupted when the journal is replayed; ${FIX}, or mount it once with a kernel (which replays the journal), or mount it read-only`,
    );
  }
  if (c.errors && !readOnly && !force) {
    throw new FsError(
      'FS_EDIRTY',
      `errors are recorded in the file system (${c.errorCount} counted${c.valid ? '' : ', state not clean'}); ${FIX}, ` +
        'or mount it read-only, or with { force: true } to write anyway',
    );
  }
  const w: string[] = [];
  if (c.needsRecovery) {
    w.push('the journal needs recovery and was not replayed: what was written last before the crash may be missing, or read stale');
  }
  if (c.errors) w.push(`errors are recorded in the file system: ${FIX}`);
  else if (!c.valid) w.push(`the file system was not unmounted cleanly and not checked since: ${FIX}`);
  if (c.maxMountCount > 0 && c.mountCount >= c.maxMountCount) w.push(`maximal mount count reached (${c.mountCount}): ${FIX}`);
  if (c.checkDue) w.push(`the time between checks has passed: ${FIX}`);
  if (c.orphans) w.push(`orphan inodes are listed (files being deleted when it was last mounted): ${FIX}`);
  return w;
}

const setTime = (sb: DataView, lo: number, nowSec: number): void => sb.setUint32(lo, nowSec >>> 0, true);

/** Marks a read-write mount: not clean, one more mount, the mount and write times. */
export function markMounted(sb: DataView, nowSec = Math.floor(Date.now() / 1000)): void {
  sb.setUint16(O.state, sb.getUint16(O.state, true) & ~EXT2_VALID_FS, true);
  sb.setUint16(O.mntCount, (sb.getUint16(O.mntCount, true) + 1) & 0xffff, true);
  setTime(sb, O.mtime, nowSec);
  setTime(sb, O.wtime, nowSec);
}

/**
 * Marks a clean unmount: the state it had at mount (so an unchecked file
 * system stays unchecked), with EXT2_ERROR_FS and the error fields when
 * `errors` happened while mounted (`where` names what failed, ≤ 32 bytes).
 */
export function markUnmounted(
  sb: DataView,
  validAtMount: boolean,
  errors: number,
  where: string,
  nowSec = Math.floor(Date.now() / 1000),
): void {
  let state = sb.getUint16(O.state, true);
  if (validAtMount) state |= EXT2_VALID_FS;
  if (errors > 0) {
    state |= EXT2_ERROR_FS;
    sb.setUint32(O.errorCount, sb.getUint32(O.errorCount, true) + errors, true);
    const func = new Uint8Array(32);
    func.set(new TextEncoder().encode(where).subarray(0, 32));
    if (sb.getUint32(O.firstErrorTime, true) === 0) {
      setTime(sb, O.firstErrorTime, nowSec);
      for (let i = 0; i < 32; i++) sb.setUint8(O.firstErrorFunc + i, func[i]!);
    }
    setTime(sb, O.lastErrorTime, nowSec);
    for (let i = 0; i < 32; i++) sb.setUint8(O.lastErrorFunc + i, func[i]!);
  }
  sb.setUint16(O.state, state, true);
  setTime(sb, O.wtime, nowSec);
}

/** Recomputes s_checksum when the file system has metadata_csum (crc32c type 1); a no-op otherwise. */
export function sealSuperblock(sb: DataView): void {
  if ((sb.getUint32(O.featureRoCompat, true) & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) === 0) return;
  const bytes = new Uint8Array(sb.buffer, sb.byteOffset, O.checksum);
  sb.setUint32(O.checksum, crc32c(0xffffffff, bytes), true);
}

/** True when a metadata_csum superblock's s_checksum matches its bytes (always true without the feature). */
export function superblockSealed(sb: DataView): boolean {
  if ((sb.getUint32(O.featureRoCompat, true) & EXT4_FEATURE_RO_COMPAT_METADATA_CSUM) === 0) return true;
  return sb.getUint32(O.checksum, true) === crc32c(0xffffffff, new Uint8Array(sb.buffer, sb.byteOffset, O.checksum));
}

/** Writes the superblock back (sealed) and flushes the disk, so the state is durable before anything relies on it. */
export async function writeSuperblock(target: BlockTarget, sb: DataView): Promise<void> {
  sealSuperblock(sb);
  await writeRange(target, EXT_SUPERBLOCK_OFFSET, new Uint8Array(sb.buffer, sb.byteOffset, EXT_SUPERBLOCK_SIZE));
  await target.flush();
}
