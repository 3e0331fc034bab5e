/**
 * The platform a frontend is given: everything it needs from Xen, behind one
 * interface with two implementations, a real Xen guest ({@link openXenPlatform})
 * and the simulated host (`createSimHost` in `xen-blkfront/sim`). Nothing
 * above this layer knows which one it has.
 */
import type { XenstoreClient } from '../xenbus/client.js';
import type { GrantSharer } from '../gnttab/types.js';
import type { EventChannels } from '../evtchn/types.js';
import type { VbdOwnership } from './ownership.js';
import type { EvtchnWakeup } from '../evtchn/xenevtchn.js';
import type { SimHostHandle } from '../sim/host/hypervisor.js';
import type { SimGrantShare } from '../sim/host/grants.js';

/**
 * What a worker thread needs to share pages and bind event channels of this
 * domain on its own (src/platform/thread.ts opens them): plain data, posted to it.
 * On a real guest the thread opens its own libxengnttab and libxenevtchn
 * handles; on the simulated host it gets grant refs and memory of its own.
 */
export type ThreadPlatformSpec =
  | { readonly kind: 'xen'; readonly domid: number; readonly wakeup?: EvtchnWakeup }
  | { readonly kind: 'sim'; readonly domid: number; readonly host: SimHostHandle; readonly grants: SimGrantShare };

/** A thread's share of a platform: its spec, and how to take the share back once the thread has closed it. */
export interface ThreadShare {
  readonly spec: ThreadPlatformSpec;
  /** Takes back what was set apart (the thread must have closed its platform). */
  release(): void;
}

export interface XenPlatform {
  /** This domain's id (a restore may change it: see {@link resume}). */
  readonly domid: number;
  /** A xenstore connection for this domain. */
  readonly xenstore: XenstoreClient;
  /** Shares this domain's pages with another domain. */
  readonly grants: GrantSharer;
  /** Event channels to other domains (a new set after each {@link resume}). */
  readonly evtchn: EventChannels;
  /**
   * Who holds each of this domain's vbds (the guest's kernel, or a process
   * of ours), and the claim a frontend takes before its first xenstore write.
   */
  readonly vbds: VbdOwnership;
  /** Save/restores this platform has resumed from. */
  readonly restores: number;
  /**
   * After the domain was saved and restored (or migrated): re-reads the
   * domid, abandons the event channels (their ports died with the old
   * domain, and must not be touched) and opens a new set. Grants made before
   * are dead too; their owners share again. `seen` is the {@link restores}
   * count the caller last saw: when another caller has resumed since, this
   * does nothing, so every device of a platform may call it.
   */
  resume(seen: number): Promise<void>;
  /** True when this domain's id is no longer the one it had: it was restored as another domain. */
  domidChanged(): Promise<boolean>;
  /**
   * Sets apart what one worker thread needs to run a device's queues on its
   * own (its own grants and event channels, nothing of this thread's per
   * I/O). Absent on a platform that cannot.
   */
  threadShare?(): ThreadShare;
  /** Closes the event channels, unshares what is left, closes xenstore. */
  close(): Promise<void>;
}
