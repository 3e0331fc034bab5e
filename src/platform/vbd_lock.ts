/**
 * Vbd ownership on a real Linux guest: the kernel's binding read from
 * sysfs, and a claim that is an exclusive flock(2) on a lock file per vbd
 * (/run/lock/xen-blkfront/vbd-<key>.lock). flock rather than a pid file:
 * the kernel drops the lock when the holder's last descriptor closes, so a
 * process killed with SIGKILL never blocks the next one. The holder writes
 * its pid into the file for the messages, and empties it on a clean
 * release; a pid found there by the next holder names one that was killed.
 *
 * The file is named by the vbd key alone, not the domid: a restored domain
 * gets a new domid but keeps its /run, and a process that held the vbd
 * across the restore must still be seen by the next.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readSync,
  readdirSync,
  readlinkSync,
  chmodSync,
  writeSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { PlatformError } from '../errors.js';
import { errnoName, loadLibc, type Libc } from '../ffi/koffi.js';
import { busyError, checkVbdKey, claimOf, type VbdClaim, type VbdOwner, type VbdOwnership } from './ownership.js';

/** Where the lock files live by default (Debian's /run/lock is a tmpfs with mode 1777). */
export const DEFAULT_VBD_LOCK_DIR = '/run/lock/xen-blkfront';
/** Where Linux lists xenbus devices. */
export const DEFAULT_XEN_SYSFS = '/sys/bus/xen/devices';

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

export interface HostVbdOwnershipOptions {
  /** Lock directory (default {@link DEFAULT_VBD_LOCK_DIR}). */
  lockDir?: string;
  /** The xenbus devices directory (default {@link DEFAULT_XEN_SYSFS}). */
  sysfs?: string;
  /** libc, for flock (default: loaded through koffi). */
  /** @internal libc, for flock (tests may pass their own). */
  libc?: Pick<Libc, 'flock' | 'errno'>;
}

/** The claims of a real guest: sysfs for the kernel, flock for processes. */
export class HostVbdOwnership implements VbdOwnership {
  private readonly lockDir: string;
  private readonly sysfs: string;
  private libcNow: Pick<Libc, 'flock' | 'errno'> | undefined;

  constructor(opts: HostVbdOwnershipOptions = {}) {
    this.lockDir = opts.lockDir ?? DEFAULT_VBD_LOCK_DIR;
    this.sysfs = opts.sysfs ?? DEFAULT_XEN_SYSFS;
    this.libcNow = opts.libc;
  }

  private get libc(): Pick<Libc, 'flock' | 'errno'> {
    return (this.libcNow ??= loadLibc());
  }

  /** The kernel driver bound to the vbd, and the disk it made, or null. */
  kernelOwner(key: string): VbdOwner | null {
    const dir = join(this.sysfs, `vbd-${checkVbdKey(key)}`);
    let driver: string;
    try {
      driver = basename(readlinkSync(join(dir, 'driver')));
    } catch {
      return null; // no such device, or no driver bound
    }
    let disk: string | null = null;
    try {
      disk = readdirSync(join(dir, 'block'))[0] ?? null;
    } catch {
      // a driver without a block device (yet)
    }
    return { kind: 'kernel', driver, disk };
  }

  lockPath(key: string): string {
    return join(this.lockDir, `vbd-${checkVbdKey(key)}.lock`);
  }

  async owner(key: string): Promise<VbdOwner | null> {
    const k = this.kernelOwner(key);
    if (k !== null) return k;
    let fd: number;
    try {
      fd = openSync(this.lockPath(key), constants.O_RDONLY);
    } catch {
      return null; // never claimed, or not readable: nobody we can see
    }
    try {
      // A shared lock taken and dropped at once: it fails only while someone holds the exclusive one.
      if (this.libc.flock(fd, LOCK_SH | LOCK_NB) === 0) {
        this.libc.flock(fd, LOCK_UN);
        return null;
      }
      const pid = readPid(fd);
      return { kind: 'process', pid, self: pid === process.pid };
    } finally {
      closeSync(fd);
    }
  }

  async claim(key: string, name: string): Promise<VbdClaim> {
    const kernel = this.kernelOwner(key);
    if (kernel !== null) throw busyError(key, name, kernel);
    const path = this.lockPath(key);
    const fd = this.openLock(path);
    let abandonedBy: number | null;
    try {
      // A few tries: a listing's probe holds a shared lock for a moment.
      for (let attempt = 0; ; attempt++) {
        if (this.libc.flock(fd, LOCK_EX | LOCK_NB) === 0) break;
        const errno = errnoName(this.libc.errno());
        if (errno !== 'EWOULDBLOCK' && errno !== 'EAGAIN') throw new PlatformError('XEN_ESYS', `flock ${path} failed (${errno})`);
        if (attempt === 3) {
          const pid = readPid(fd);
          throw busyError(key, name, { kind: 'process', pid, self: pid === process.pid }, path);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      // The kernel may have bound it between the check and the lock.
      const late = this.kernelOwner(key);
      if (late !== null) throw busyError(key, name, late);
      abandonedBy = readPid(fd);
      ftruncateSync(fd, 0);
      writeSync(fd, `${process.pid}\n`, 0);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    // Emptied first: a pid left in the file means its holder was killed.
    return claimOf(abandonedBy, () => {
      try {
        ftruncateSync(fd, 0);
      } finally {
        closeSync(fd); // drops the lock
      }
    });
  }

  /** Opens (creating) a lock file every local user may lock. */
  private openLock(path: string): number {
    try {
      mkdirSync(this.lockDir, { recursive: true });
      // Sticky and world-writable, as /run/lock itself: any user may lock, nobody may remove another's file.
      try {
        chmodSync(this.lockDir, 0o1777);
      } catch {
        // made by someone else: its mode is theirs
      }
      const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o666);
      try {
        fchmodSync(fd, 0o666);
      } catch {
        // another user's file: it is already lockable by us, or the open failed
      }
      return fd;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new PlatformError(
          'XEN_EACCES',
          `${path}: cannot create the vbd lock (${code}); make ${this.lockDir} writable for this user ` +
            `(Debian's /run/lock is mode 1777) or run as root: see docs/guest.md`,
          { cause: err },
        );
      }
      throw new PlatformError('XEN_ESYS', `${path}: cannot open the vbd lock (${code ?? String(err)})`, { cause: err });
    }
  }
}

/** The pid a lock file holds, or null when it is empty or not a pid. */
function readPid(fd: number): number | null {
  const buf = Buffer.alloc(32);
  let n = 0;
  try {
    n = readSync(fd, buf, 0, buf.length, 0);
  } catch {
    return null;
  }
  const text = buf.subarray(0, n).toString('latin1').trim();
  return /^\d{1,10}$/.test(text) ? Number(text) : null;
}
