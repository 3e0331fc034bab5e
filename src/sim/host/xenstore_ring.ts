/**
 * Connects a domain to the simulated xenstored over the xenstore shared ring,
 * as the toolstack and xenstored do on Xen: a page of the guest's memory is
 * granted to the xenstore domain (dom0 here), an unbound event-channel port is
 * allocated for it, and xenstored maps the page and binds the port (the work
 * of XS_INTRODUCE). The guest then talks over the ring, the unikernel way.
 */
import { XsRingStream } from '../../transport/xs_ring.js';
import type { EventChannel } from '../../evtchn/types.js';
import { GTF_permit_access } from '../../wire/grant_table.js';
import type { SimXenstored } from '../xenstored/server.js';
import type { SimEventChannels } from './evtchn.js';
import type { GrantMapping, SimGrantMapper, SimGrantSharer } from './grants.js';
import type { SharedPages } from '../../gnttab/types.js';
import { PlatformError } from '../../errors.js';

export interface XenstoreRingOptions {
  xenstored: SimXenstored;
  /** The guest. */
  domid: number;
  guestGrants: SimGrantSharer;
  guestEvtchn: SimEventChannels;
  /** xenstored's side, in dom0. */
  dom0Mapper: SimGrantMapper;
  dom0Evtchn: SimEventChannels;
  /** Use this reserved grant ref (GNTTAB_RESERVED_XENSTORE) rather than a fresh grant. */
  reservedRef?: number;
  privileged?: boolean;
}

export interface XenstoreRingLink {
  /** The guest's end, for a XenstoreClient. */
  readonly stream: XsRingStream;
  /** xenstored's end. */
  readonly server: XsRingStream;
  /** What start_info gives a guest: the ring's grant ref and event-channel port. */
  readonly ringRef: number;
  readonly port: number;
  /** Unbinds, unmaps and unshares. */
  close(): void;
}

export function linkXenstoreRing(o: XenstoreRingOptions): XenstoreRingLink {
  let ringRef: number;
  let page: Uint8Array;
  let shared: SharedPages | null = null;
  let frame = -1;
  if (o.reservedRef !== undefined) {
    frame = o.guestGrants.frames.alloc(1);
    if (frame < 0) throw new PlatformError('XEN_ENOSPC', 'no page left for the xenstore ring');
    page = o.guestGrants.page(frame);
    page.fill(0);
    o.guestGrants.grantAccess(o.reservedRef, 0, frame, GTF_permit_access);
    ringRef = o.reservedRef;
  } else {
    shared = o.guestGrants.share(0, 1, true);
    page = shared.bytes;
    ringRef = shared.refs[0]!;
  }
  const guestCh: EventChannel = o.guestEvtchn.allocUnbound(0);
  const serverCh = o.dom0Evtchn.bindInterdomain(o.domid, guestCh.port);
  const mapping: GrantMapping = o.dom0Mapper.map(o.domid, ringRef, true);
  const server = new XsRingStream(mapping.bytes, serverCh, 'back');
  o.xenstored.serve(server, { domid: o.domid, privileged: o.privileged });
  const stream = new XsRingStream(page, guestCh, 'front');
  let closed = false;
  return {
    stream,
    server,
    ringRef,
    port: guestCh.port,
    close: () => {
      if (closed) return;
      closed = true;
      server.close();
      stream.close();
      serverCh.close();
      guestCh.close();
      o.dom0Mapper.unmap(mapping);
      if (shared !== null) o.guestGrants.unshare(shared);
      else {
        o.guestGrants.endAccess(ringRef);
        o.guestGrants.frames.release(frame, 1);
      }
    },
  };
}
