/**
 * The grants one queue of the simulated blkback has mapped, as xen-blkback
 * keeps them: with persistent grants negotiated, a grant is mapped the first
 * time it is seen and kept (writable, as blkback maps persistent grants)
 * until the frontend disconnects, up to a bound per queue (Linux's
 * max_persistent_grants); past the bound, and without persistent grants, a
 * grant is mapped for one request and unmapped after it.
 */
import type { GrantMapping, SimGrantMapper } from '../host/grants.js';
import { QStat } from './control.js';

export class GrantCache {
  private readonly kept = new Map<number, GrantMapping>();

  /**
   * @param count adds to one of the queue's shared counters (QStat).
   */
  constructor(
    private readonly mapper: SimGrantMapper,
    private readonly domid: number,
    private readonly policy: { persistent: boolean; maxPersistentGrants: number },
    private readonly count: (field: number, by?: number) => void,
  ) {}

  /** Maps `gref`: from the kept set when it is there, into it while there is room, else for one request. */
  map(gref: number, writable: boolean): GrantMapping {
    if (this.policy.persistent) {
      const kept = this.kept.get(gref);
      if (kept !== undefined) return kept;
      if (this.kept.size < this.policy.maxPersistentGrants) {
        const m = this.mapper.map(this.domid, gref, true);
        this.kept.set(gref, m);
        this.count(QStat.persistentMaps);
        this.count(QStat.persistentHeld);
        return m;
      }
    }
    const m = this.mapper.map(this.domid, gref, writable);
    this.count(QStat.transientMaps);
    return m;
  }

  /** Done with a mapping for this request: a kept one stays, a transient one is unmapped. */
  unmap(m: GrantMapping): void {
    if (this.kept.get(m.ref) === m) return;
    this.mapper.unmap(m);
    this.count(QStat.unmaps);
  }

  /** Unmaps every kept grant, as blkback does on disconnect. */
  close(): void {
    for (const m of this.kept.values()) {
      this.mapper.unmap(m);
      this.count(QStat.unmaps);
    }
    this.count(QStat.persistentHeld, -this.kept.size);
    this.kept.clear();
  }
}
