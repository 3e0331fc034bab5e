/**
 * The device's share of the grant table. Linux's gntalloc caps the grants
 * all of a guest's users hold together (1024 by default): a device's pools
 * may grow to three quarters of what is free when it connects, split evenly
 * over its queues, and its fresh grants (taken only while a pool grows, see
 * GrantPool's keepFresh) to the last quarter, so a device alone never asks
 * for more than there is. A request must always fit its queue's pool, so the
 * segments per request are capped by the smallest pool.
 */
import { PlatformError } from '../errors.js';
import { GrantPool } from '../gnttab/pool.js';
import type { GrantSharer } from '../gnttab/types.js';
import { BLKIF_MAX_SEGMENTS_PER_REQUEST, SEGS_PER_INDIRECT_FRAME } from '../wire/blkif.js';
import type { BlockDeviceStats, DeviceSettings } from './options.js';
import type { DiskInfo } from './types.js';
import { PAGE_SIZE } from '../wire/page.js';
import { ringEntries } from '../wire/ring.js';
import { BLKIF_NATIVE_ABI } from '../wire/blkif.js';

/** Most pages one queue's pool grows to by keeping fresh grants (Linux keeps at most a ring's worth). */
export const MAX_POOL_PAGES = 8192;

export interface PoolPlan {
  /** Bounce through a pool at all (false: a fresh grant per page). */
  pool: boolean;
  /** Pages shared up front, when the caller chose (default: a ring's worth of 11-segment requests). */
  poolPages: number | undefined;
  /** Ring slots per queue. */
  entries: number;
  /** Segments per ring request as negotiated (11, or the indirect maximum). */
  maxSegments: number;
  /** Zero pages before their first grant (an untrusted backend). */
  zero: boolean;
}

/** The pools a connection with `info` needs, as the caller wished: segments per request as negotiated. */
export function poolPlan(info: DiskInfo, wish: Pick<DeviceSettings, 'pool' | 'poolPages'>): PoolPlan {
  const f = info.features;
  return {
    pool: wish.pool,
    poolPages: wish.poolPages,
    maxSegments: f.indirectSegments > 0 ? f.indirectSegments : BLKIF_MAX_SEGMENTS_PER_REQUEST,
    entries: ringEntries(f.ringPages * PAGE_SIZE, BLKIF_NATIVE_ABI.entrySize),
    zero: !info.trusted,
  };
}

/**
 * Pages this process may still share under gntalloc's limit (Infinity where
 * there is none). Other users of gntalloc on the guest are not known here:
 * the share itself can still fail.
 */
export function grantsLeft(grants: GrantSharer): number {
  const limit = grants.limit?.();
  return limit === undefined ? Infinity : Math.max(0, limit - grants.stats().sharedPages);
}

/** Pages each queue's pool may take, and the fresh pages it may have out: three quarters and a quarter of what is free, by queue. */
export function grantBudget(grants: GrantSharer, queues: number): { pool: number; fresh: number } {
  const free = grantsLeft(grants);
  if (free === Infinity) return { pool: Infinity, fresh: Infinity };
  return { pool: Math.floor((free * 3) / 4 / queues), fresh: Math.floor(free / 4 / queues) };
}

/** A queue's pool within `budget` pages; XEN_ENOSPC when not even one 11-segment request fits. */
export function makePool(grants: GrantSharer, domid: number, plan: PoolPlan, budget: { pool: number; fresh: number }): GrantPool {
  if (!plan.pool) return new GrantPool(grants, domid, { pages: 0, zero: plan.zero });
  const perRequest = plan.maxSegments + Math.ceil(plan.maxSegments / SEGS_PER_INDIRECT_FRAME);
  const pages = Math.min(plan.poolPages ?? plan.entries * BLKIF_MAX_SEGMENTS_PER_REQUEST, budget.pool);
  if (pages < BLKIF_MAX_SEGMENTS_PER_REQUEST + 1) {
    throw new PlatformError(
      'XEN_ENOSPC',
      `only ${budget.pool} grant pages available for each of the device's queues; ` +
        "raise gntalloc's limit (/sys/module/xen_gntalloc/parameters/limit) or close other users",
    );
  }
  return new GrantPool(grants, domid, {
    pages,
    // Keep fresh pages (up to a full ring's worth, within the budget): with persistent grants the backend
    // keeps what it mapped, and either way a kept page spares a share and an unshare on the next request.
    keepFresh: true,
    maxPages: Math.min(plan.entries * perRequest, MAX_POOL_PAGES, budget.pool),
    // Fresh grants beyond the pool (while it grows) may use the last quarter of what was free.
    maxFallbackPages: budget.fresh,
    zero: plan.zero,
  });
}

/**
 * Segments per ring request: the negotiated maximum, capped so one request
 * (data pages plus its indirect page) fits the smallest pool, or a take
 * could wait for pages that never come. Never below 11.
 */
export function segmentCap(negotiated: number, pools: readonly GrantPool[]): number {
  let smallest = Infinity;
  for (const p of pools) smallest = Math.min(smallest, p.size || Infinity);
  return Math.max(BLKIF_MAX_SEGMENTS_PER_REQUEST, Math.min(negotiated, smallest - 1));
}

/** The pools' counters, summed (fresh pages in use count as in use). */
export function sumPoolStats(pools: readonly GrantPool[]): BlockDeviceStats['pool'] {
  const sum = { hits: 0, fallbacks: 0, kept: 0, waits: 0, size: 0, inUse: 0 };
  for (const p of pools) {
    const ps = p.stats();
    sum.hits += ps.hits;
    sum.fallbacks += ps.fallbacks;
    sum.kept += ps.kept;
    sum.waits += ps.waits;
    sum.size += ps.size;
    sum.inUse += ps.inUse + ps.freshInUse;
  }
  return sum;
}
