/**
 * The platform a frontend is given: everything it needs from Xen, behind one
 * interface with two implementations, a real Xen guest ({@link openXenPlatform})
 * and the simulated host (`createSimHost` in `xen-blkfront/sim`). Nothing
 * above this layer knows which one it has.
 */
import type { XenstoreClient } from '../xenbus/client.js';
import type { GrantSharer } from '../gnttab/types.js';
import type { EventChannels } from '../evtchn/types.js';

export interface XenPlatform {
  /** This domain's id. */
  readonly domid: number;
  /** A xenstore connection for this domain. */
  readonly xenstore: XenstoreClient;
  /** Shares this domain's pages with another domain. */
  readonly grants: GrantSharer;
  /** Event channels to other domains. */
  readonly evtchn: EventChannels;
  /** Closes the event channels, unshares what is left, closes xenstore. */
  close(): Promise<void>;
}
