/**
 * A worker thread's own part of a platform: grants and event channels it
 * opened itself, from the spec its parent's platform set apart
 * (XenPlatform.threadShare). A libxenevtchn port belongs to the handle
 * that allocated it and gntalloc's pages to the file that shared them, and
 * neither can move between threads, so a thread that runs a queue makes
 * that queue's ring, port and pool here. xenstore stays with the parent.
 */
import { XenGrantSharer, loadGntshrLib } from '../gnttab/gntshr.js';
import { XenEventChannels, loadEvtchnLib } from '../evtchn/xenevtchn.js';
import { loadLibc } from '../ffi/koffi.js';
import type { GrantSharer } from '../gnttab/types.js';
import type { EventChannels } from '../evtchn/types.js';
import type { ThreadPlatformSpec } from './types.js';

export interface ThreadPlatform {
  readonly domid: number;
  readonly grants: GrantSharer;
  readonly evtchn: EventChannels;
  /** Closes the event channels and unshares what is left. */
  close(): void;
}

export async function openThreadPlatform(spec: ThreadPlatformSpec): Promise<ThreadPlatform> {
  let grants: GrantSharer;
  let evtchn: EventChannels;
  if (spec.kind === 'xen') {
    grants = new XenGrantSharer(loadGntshrLib());
    try {
      evtchn = new XenEventChannels(loadEvtchnLib(), loadLibc(), { wakeup: spec.wakeup });
    } catch (err) {
      grants.close();
      throw err;
    }
  } else {
    // Loaded only here: a real guest's threads never load the simulator.
    const [{ SimHypervisor }, { SimGrantSharer }, { SimEventChannels }] = await Promise.all([
      import('../sim/host/hypervisor.js'),
      import('../sim/host/grants.js'),
      import('../sim/host/evtchn.js'),
    ]);
    const hv = new SimHypervisor(spec.host);
    grants = new SimGrantSharer(hv, spec.domid, spec.grants);
    const e = new SimEventChannels(hv, spec.domid);
    e.listen();
    evtchn = e;
  }
  return {
    domid: spec.domid,
    grants,
    evtchn,
    close: () => {
      evtchn.close();
      grants.close();
    },
  };
}
