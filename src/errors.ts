/**
 * One small error hierarchy for the whole driver. Every error carries a stable
 * string `code` that callers can switch on; where Xen defines an errno name
 * (xs_wire.h `xsd_errors`), the code is that name behind a layer prefix.
 */

/** Xenstore errno names, in xs_wire.h `xsd_errors` order. */
export const XS_ERRNO_NAMES = [
  'EINVAL',
  'EACCES',
  'EEXIST',
  'EISDIR',
  'ENOENT',
  'ENOMEM',
  'ENOSPC',
  'EIO',
  'ENOTEMPTY',
  'ENOSYS',
  'EROFS',
  'EBUSY',
  'EAGAIN',
  'EISCONN',
  'E2BIG',
  'EPERM',
] as const;
export type XsErrno = (typeof XS_ERRNO_NAMES)[number];

/** Codes raised by the xenstore layer. */
export type XenstoreErrorCode =
  | `XS_${XsErrno}`
  /** The daemon answered with an errno name this client does not know. */
  | 'XS_EUNKNOWN'
  /** The byte stream broke the wire protocol (oversized frame, unknown type, bad reply). */
  | 'XS_EPROTO'
  /** The connection is closed; nothing more can be sent or answered on it. */
  | 'XS_CLOSED'
  /** The caller's timeout expired before the reply came. */
  | 'XS_TIMEOUT'
  /** The caller's AbortSignal fired before the reply came. */
  | 'XS_ABORTED';

/** Codes raised by the platform layer (grant tables, event channels, FFI). */
export type PlatformErrorCode =
  /** An argument is out of range (count, domid, port). */
  | 'XEN_EINVAL'
  /** The operation is not supported by this platform. */
  | 'XEN_ENOTSUP'
  /** A Xen userspace library (libxengnttab, libxenevtchn) or koffi could not be loaded. */
  | 'XEN_ENOLIB'
  /** A /dev/xen device is missing: not a Xen guest, or xen-gntalloc / xen-evtchn not loaded. */
  | 'XEN_ENODEV'
  /**
   * This process may not open a /dev/xen node (or the vbd lock directory):
   * the message names the node and how to grant access (docs/guest.md).
   */
  | 'XEN_EACCES'
  /** A system call behind the Xen libraries failed; the message carries its errno. */
  | 'XEN_ESYS'
  /** A grant-table operation was refused (see {@link GrantError}). */
  | 'XEN_EGRANT'
  /** No free grant refs, event-channel ports or guest pages are left. */
  | 'XEN_ENOSPC'
  /** An event-channel operation named a port that is not open or not bound. */
  | 'XEN_EEVTCHN'
  /** The object (pool, platform, channel) has been closed. */
  | 'XEN_CLOSED';

/** Codes raised by the block frontend. */
export type BlkifErrorCode =
  /** Bad I/O arguments: unaligned offset or length, zero length, not an integer. */
  | 'BLKIF_EINVAL'
  /** The I/O reaches past the end of the disk. */
  | 'BLKIF_ERANGE'
  /** A write or discard to a read-only disk. */
  | 'BLKIF_EROFS'
  /** The backend answered BLKIF_RSP_ERROR. */
  | 'BLKIF_EIO'
  /** The backend answered BLKIF_RSP_EOPNOTSUPP, or the feature was not negotiated. */
  | 'BLKIF_EOPNOTSUPP'
  /** The backend broke the protocol (bad response id, wrong operation, ring overflow); the device is dead. */
  | 'BLKIF_EPROTO'
  /** The device or its backend is gone: no such vdev, the backend was removed, or it did not come back. */
  | 'BLKIF_ENODEV'
  /**
   * The vbd belongs to someone else: the guest's kernel has bound it, or
   * another process (or another BlockDevice of this one) holds it. Nothing
   * was written to its xenstore directory.
   */
  | 'BLKIF_EBUSY'
  /** A wait for the device or one of its events ran out of time. */
  | 'BLKIF_ETIMEDOUT'
  /** The device was closed. */
  | 'BLKIF_CLOSED';

/** Codes raised when reading a disk's partition table. */
export type PartitionErrorCode =
  /** The disk has no partition table (no MBR signature, no GPT header). */
  | 'PART_ENOTABLE'
  /** A table is there but broken: bad CRC, overlapping or impossible entries. */
  | 'PART_EBADTABLE'
  /** No partition with that number. */
  | 'PART_ENOENT'
  /** A partition's table entry reaches past the end of the disk (I/O past a partition's end is BLKIF_ERANGE, as on a disk). */
  | 'PART_ERANGE';

/** Codes raised by the file-system layer (ext2/3/4). */
export type FsErrorCode =
  | 'FS_ENOENT'
  | 'FS_EEXIST'
  | 'FS_ENOTDIR'
  | 'FS_EISDIR'
  | 'FS_ENOTEMPTY'
  | 'FS_EINVAL'
  /** A write to a file system mounted read-only (or on a read-only disk). */
  | 'FS_EROFS'
  /** No ext2/3/4 file system on the device (no superblock magic), or one with features it cannot handle. */
  | 'FS_ENOFS'
  /**
   * The file system may not be written as it is: its journal needs recovery
   * (it was mounted when its machine stopped), or errors are recorded in it.
   * Check it with e2fsck first (or mount it read-only).
   */
  | 'FS_EDIRTY'
  /** The library or the device failed under a file operation. */
  | 'FS_EIO'
  /** The file system was unmounted. */
  | 'FS_CLOSED';

/** Every code the driver can raise. */
export type XenErrorCode = XenstoreErrorCode | PlatformErrorCode | BlkifErrorCode | PartitionErrorCode | FsErrorCode;

/** Base class: everything the driver throws on purpose is a `XenError`. */
export class XenError extends Error {
  /** Stable, machine-readable code (`XS_ENOENT`, `XS_CLOSED`, …). */
  readonly code: XenErrorCode;

  constructor(code: XenErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'XenError';
    this.code = code;
  }
}

/** A failure of the platform: grant tables, event channels, the Xen libraries and device nodes. */
export class PlatformError extends XenError {
  declare readonly code: PlatformErrorCode;
  constructor(code: PlatformErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'PlatformError';
  }
}

/** A failure from the xenstore layer: an error reply, or the connection itself. */
export class XenstoreError extends XenError {
  declare readonly code: XenstoreErrorCode;
  /** The errno name when the daemon answered with one (`ENOENT`), else undefined. */
  readonly errno: XsErrno | undefined;
  /** The path the request was about, when there was one. */
  readonly path: string | undefined;

  constructor(code: XenstoreErrorCode, message: string, options?: { path?: string; cause?: unknown }) {
    super(code, message, options);
    this.name = 'XenstoreError';
    this.path = options?.path;
    const name = code.slice(3);
    this.errno = (XS_ERRNO_NAMES as readonly string[]).includes(name) ? (name as XsErrno) : undefined;
  }

  /** Builds the error for an ERROR reply whose payload names `errno`. */
  static fromErrno(errno: string, op: string, path?: string): XenstoreError {
    const known = (XS_ERRNO_NAMES as readonly string[]).includes(errno);
    const code: XenstoreErrorCode = known ? (`XS_${errno}` as XenstoreErrorCode) : 'XS_EUNKNOWN';
    const where = path === undefined ? '' : ` ${path}`;
    return new XenstoreError(code, `xenstore ${op}${where}: ${errno}`, { path });
  }
}

/**
 * A grant-table operation refused by the hypervisor (or the simulated one),
 * with the grant_table.h status (`GNTST_general_error`, `GNTST_bad_gntref`, …)
 * and the grant it was about. A backend sees this when it maps a grant that is
 * not for it, is read-only and was mapped for writing, or has been ended.
 */
export class GrantError extends PlatformError {
  declare readonly code: 'XEN_EGRANT';
  /** The GNTST_* status Xen would return. */
  readonly status: number;
  /** The granting domain. */
  readonly domid: number;
  /** The grant reference. */
  readonly ref: number;

  constructor(status: number, domid: number, ref: number, reason: string) {
    super('XEN_EGRANT', `grant ${ref} of domain ${domid}: ${reason} (GNTST ${status})`);
    this.name = 'GrantError';
    this.status = status;
    this.domid = domid;
    this.ref = ref;
  }
}

/**
 * A block I/O failure: what the caller of `read`, `write`, `flush` or
 * `discard` sees. `status` is the blkif response status when the backend sent
 * one (BLKIF_RSP_ERROR = -1, BLKIF_RSP_EOPNOTSUPP = -2).
 */
export class BlkifError extends XenError {
  declare readonly code: BlkifErrorCode;
  /** The backend's response status, when the error came from one. */
  readonly status: number | undefined;

  constructor(code: BlkifErrorCode, message: string, options?: { status?: number; cause?: unknown }) {
    super(code, message, options);
    this.name = 'BlkifError';
    this.status = options?.status;
  }
}

/** A partition table that is missing or broken, or an I/O outside a partition. */
export class PartitionError extends XenError {
  declare readonly code: PartitionErrorCode;
  constructor(code: PartitionErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'PartitionError';
  }
}

/** A file operation that failed, with the path it was about. */
export class FsError extends XenError {
  declare readonly code: FsErrorCode;
  /** The path the operation was about, when there was one. */
  readonly path: string | undefined;
  constructor(code: FsErrorCode, message: string, options?: { path?: string; cause?: unknown }) {
    super(code, message, options);
    this.name = 'FsError';
    this.path = options?.path;
  }
}

/** `err` when it is an Error; else an Error saying what was thrown in its place. */
export function asError(err: unknown): Error {
  if (err instanceof Error) return err;
  return new Error(typeof err === 'string' ? err : `a non-Error was thrown: ${JSON.stringify(err) ?? typeof err}`);
}

/** True when `err` is a {@link XenError} with the given code. */
export function isXenError(err: unknown, code?: XenErrorCode): err is XenError {
  return err instanceof XenError && (code === undefined || err.code === code);
}
