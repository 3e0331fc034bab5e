/**
 * The part of a platform that a save/restore changes, the same for a real
 * guest and the simulated host: the domid (a restored domain may get a new
 * one) and the event channels (their ports died with the old domain).
 */
import type { XenstoreClient } from '../xenbus/client.js';
import type { GrantSharer } from '../gnttab/types.js';
import type { EventChannels } from '../evtchn/types.js';
import type { ThreadShare, XenPlatform } from './types.js';
import type { VbdOwnership } from './ownership.js';

export interface PlatformParts {
  domid: number;
  xenstore: XenstoreClient;
  grants: GrantSharer;
  vbds: VbdOwnership;
  /** Opens a new set of event channels for `domid` (at start, and after each restore). */
  openEvtchn(domid: number): EventChannels;
  /** Sets apart a worker thread's share of the platform for domain `domid` (see XenPlatform.threadShare). */
  threadShare?: (domid: number) => ThreadShare;
  /** Releases what the platform owns beyond xenstore, grants and event channels. */
  release?(): void;
}

export function resumablePlatform(parts: PlatformParts): XenPlatform {
  let domid = parts.domid;
  let evtchn = parts.openEvtchn(domid);
  let restores = 0;
  let resuming: Promise<void> | null = null;
  const readDomid = (): Promise<number> => parts.xenstore.readInt('domid');
  const share = parts.threadShare;
  return {
    ...(share === undefined ? {} : { threadShare: () => share(domid) }),
    get domid() {
      return domid;
    },
    get evtchn() {
      return evtchn;
    },
    get restores() {
      return restores;
    },
    xenstore: parts.xenstore,
    grants: parts.grants,
    vbds: parts.vbds,
    domidChanged: async () => (await readDomid()) !== domid,
    resume: async (seen) => {
      if (seen !== restores) return;
      // Devices that notice the same restore together wait for one resume.
      resuming ??= (async () => {
        // A relative path reads the restored domain's own home.
        domid = await readDomid();
        evtchn.abandon();
        evtchn = parts.openEvtchn(domid);
        restores++;
      })().finally(() => (resuming = null));
      await resuming;
    },
    close: async () => {
      evtchn.close();
      parts.grants.close();
      parts.xenstore.close();
      parts.release?.();
    },
  };
}
