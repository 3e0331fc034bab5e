/**
 * Who owns a vbd. A frontend writes the xenstore directory of the vbd it
 * drives; if anything else drives it too (the guest's kernel, or another
 * process), the backend follows whichever wrote last and tears the other's
 * rings away: on Linux the kernel's xen-blkfront then hits a BUG_ON in its
 * xenwatch thread and the guest stops handling xenstore watches. So before
 * the first write a frontend takes a claim, and is refused with
 * BLKIF_EBUSY when the kernel has bound the vbd or another opener holds it.
 */
import { BlkifError } from '../errors.js';

/** Who holds a vbd now. */
export type VbdOwner =
  /** The guest's kernel has bound it (Linux: the `driver` link under /sys/bus/xen/devices/vbd-N). */
  | { readonly kind: 'kernel'; readonly driver: string; readonly disk: string | null }
  /** A process holds its claim (this one when `self`); `pid` is null when it has not said yet. */
  | { readonly kind: 'process'; readonly pid: number | null; readonly self: boolean };

/** A vbd taken for this process, until {@link release}. */
export interface VbdClaim {
  /**
   * The pid of a holder that ended without releasing its claim (it was
   * killed): the frontend directory it left may still say Connected.
   */
  readonly abandonedBy: number | null;
  /** Gives the vbd back (idempotent). A process that dies releases it too. */
  release(): void;
}

/** The vbds of one domain, as the platform sees their owners. */
export interface VbdOwnership {
  /** The owner of the vbd under `device/vbd/<key>`, or null when nobody holds it. */
  owner(key: string): Promise<VbdOwner | null>;
  /**
   * Takes the vbd. BLKIF_EBUSY (nothing written anywhere) when the kernel
   * has bound it or another opener holds it; `name` is Linux's name for
   * the disk (xvdb), for the message.
   */
  claim(key: string, name: string): Promise<VbdClaim>;
}

/** A claim whose `release` runs `drop` once, however often it is called. */
export function claimOf(abandonedBy: number | null, drop: () => void): VbdClaim {
  let held = true;
  return {
    abandonedBy,
    release: () => {
      if (!held) return;
      held = false;
      drop();
    },
  };
}

/** The refusal for a vbd someone else owns, as a user sees it. */
export function busyError(key: string, name: string, owner: VbdOwner, where?: string): BlkifError {
  const disk = `vbd ${key} (${name})`;
  if (owner.kind === 'kernel') {
    const dev = owner.disk ?? name;
    return new BlkifError(
      'BLKIF_EBUSY',
      `${disk} belongs to the guest's kernel (its ${owner.driver} driver, xen-blkfront, has bound it as ` +
        `/dev/${dev}); nothing was written. To hand it over, stop using /dev/${dev} and run ` +
        `"echo vbd-${key} > /sys/bus/xen/drivers/${owner.driver}/unbind", or keep the kernel off the disks you want ` +
        `("echo 0 > /sys/bus/xen/drivers_autoprobe" before xen-blkfront loads); see docs/guest.md`,
    );
  }
  const who = owner.self
    ? `this process (pid ${process.pid}): close the other BlockDevice on it first`
    : owner.pid === null
      ? 'another process'
      : `process ${owner.pid}`;
  return new BlkifError('BLKIF_EBUSY', `${disk} is held by ${who}${where === undefined ? '' : ` (lock ${where})`}; nothing was written`);
}

/** A vbd key that may name a file: digits, letters, '-' and '_' only. */
export function checkVbdKey(key: string): string {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(key)) throw new BlkifError('BLKIF_EINVAL', `vdev "${key}" is not a vbd key`);
  return key;
}
