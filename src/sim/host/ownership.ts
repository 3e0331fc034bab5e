/**
 * Vbd ownership on the simulated host, as a Linux guest has it: the
 * guest's kernel may bind a vbd (its xen-blkfront's "vbd" driver), and each
 * process of the guest claims vbds the way a real one flocks a lock file:
 * one holder at a time, dropped when the process dies, with the pid of a
 * holder that was killed left for the next one to see.
 */
import { busyError, checkVbdKey, claimOf, type VbdClaim, type VbdOwner, type VbdOwnership } from '../../platform/ownership.js';

export class SimVbdOwners {
  private readonly kernel = new Map<string, string>();
  private readonly holders = new Map<string, number>();
  private readonly abandoned = new Map<string, number>();

  /** The guest's kernel binds the vbd, as `/dev/<disk>` (xvdb). */
  kernelBind(key: string, disk: string): void {
    this.kernel.set(checkVbdKey(key), disk);
  }

  kernelUnbind(key: string): void {
    this.kernel.delete(key);
  }

  /** The process `pid` died: its claims go, and say who held them. */
  kill(pid: number): void {
    for (const [key, holder] of this.holders) {
      if (holder !== pid) continue;
      this.holders.delete(key);
      this.abandoned.set(key, pid);
    }
  }

  /** What process `pid` of the guest sees. */
  forProcess(pid: number): VbdOwnership {
    const ownerOf = (key: string): VbdOwner | null => {
      const disk = this.kernel.get(key);
      if (disk !== undefined) return { kind: 'kernel', driver: 'vbd', disk };
      const holder = this.holders.get(key);
      return holder === undefined ? null : { kind: 'process', pid: holder, self: holder === pid };
    };
    return {
      owner: async (key) => ownerOf(checkVbdKey(key)),
      claim: async (key, name): Promise<VbdClaim> => {
        const owner = ownerOf(checkVbdKey(key));
        if (owner !== null) throw busyError(key, name, owner);
        this.holders.set(key, pid);
        const abandonedBy = this.abandoned.get(key) ?? null;
        this.abandoned.delete(key);
        return claimOf(abandonedBy, () => {
          if (this.holders.get(key) === pid) this.holders.delete(key);
        });
      },
    };
  }
}
