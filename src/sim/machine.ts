/**
 * A whole simulated Xen machine in one call: the hypervisor state (memory,
 * grant tables, event channels in SharedArrayBuffers), xenstored, dom0 and a
 * guest domain whose platform is a {@link XenPlatform} like a real guest's.
 * The guest reaches xenstore over the shared ring, as a unikernel does.
 * Backends run in dom0, on this thread or in workers given {@link SimHost.handle}.
 */
import { XenstoreClient } from '../xenbus/client.js';
import { PlatformError } from '../errors.js';
import { GNTTAB_RESERVED_XENSTORE } from '../wire/grant_table.js';
import type { XenPlatform } from '../platform/types.js';
import { SimXenstored, type SimXenstoredOptions } from './xenstored/server.js';
import { Counter, SimHypervisor, type SimHostHandle } from './host/hypervisor.js';
import { SimEventChannels } from './host/evtchn.js';
import { SimGrantMapper, SimGrantSharer } from './host/grants.js';
import { linkXenstoreRing, type XenstoreRingLink } from './host/xenstore_ring.js';
import { SimBlkback, type SimDiskOptions } from './blkback/backend.js';
import { resumablePlatform } from '../platform/resumable.js';
import { SimVbdOwners } from './host/ownership.js';

/**
 * Another process of the guest: its own xenstore connection and vbd
 * claims, sharing the guest's grant table and event channels (as processes
 * of one Linux guest share its gntalloc and evtchn devices).
 */
export interface SimGuestProcess {
  /** Its pid as the guest's claims record it. */
  readonly pid: number;
  readonly platform: XenPlatform;
  /**
   * Kills it, as SIGKILL would: its claims are dropped, its xenstore
   * connection (and so its watches) goes, and its frontend directories stay
   * as it left them, Connected or not.
   */
  kill(): void;
}

export interface SimHostOptions {
  /** The guest's domid (default 1). */
  guestDomid?: number;
  /** The guest's name in xenstore (default "guest"). */
  guestName?: string;
  /** Pages of guest memory (default 65536 = 256 MiB, allocated lazily by the OS). */
  guestPages?: number;
  /** Grant-table entries per domain (default 32768). */
  grantEntries?: number;
  xenstored?: SimXenstoredOptions;
  /**
   * Grant refs and pages set apart for each worker thread that runs queues
   * of the guest's devices (`platform.threadShare()`; default 6144: 24 MiB,
   * room for a queue's ring, pool and bounce pages, and for four such threads
   * within the default grant table).
   */
  threadGrants?: number;
}

/** What dom0 holds: its xenstore connection and what a backend needs. */
export interface SimDom0 {
  readonly domid: 0;
  readonly xenstore: XenstoreClient;
  readonly mapper: SimGrantMapper;
  readonly evtchn: SimEventChannels;
}

export interface SimGrantCounters {
  maps: number;
  unmaps: number;
  mapFailures: number;
}

export interface SimHost {
  readonly hypervisor: SimHypervisor;
  /** Pass to a worker (postMessage) so it can attach with `attachSimHost`. */
  readonly handle: SimHostHandle;
  readonly xenstored: SimXenstored;
  /** The guest's platform, to give to a frontend. */
  readonly guest: XenPlatform & { readonly grants: SimGrantSharer; readonly evtchn: SimEventChannels };
  readonly dom0: SimDom0;
  /** Grant maps and unmaps done by domain `domid` (default dom0, where backends run). */
  grantCounters(domid?: number): SimGrantCounters;
  /**
   * Plugs a virtual disk into the guest, served by a simulated blkback in dom0
   * (one worker thread per queue), and returns the backend once it waits for
   * the frontend (InitWait). Closed with the host.
   */
  addDisk(options?: SimDiskOptions): Promise<SimBlkback>;
  /**
   * The guest kernel's side of vbd ownership: `kernelBind(vdev, 'xvdb')`
   * makes the vbd look bound by the kernel's xen-blkfront, so frontends are
   * refused with BLKIF_EBUSY.
   */
  readonly vbdOwners: SimVbdOwners;
  /** Starts another process in the guest (see {@link SimGuestProcess}). */
  spawnGuestProcess(): SimGuestProcess;
  /** The disks plugged into the guest now (new backends after a restore). */
  readonly disks: readonly SimBlkback[];
  /**
   * Saves and restores the guest, as `xl save` then `xl restore` (the
   * mechanism under live migration) would: the guest keeps its memory and
   * its process keeps running, but it comes back as another domain (a new
   * domid, unless `keepDomid`), with an empty grant table, every userspace
   * event-channel port gone (an operation on one is counted as
   * Counter.staleEvtchnOps: it crashes a real kernel), its xenstore watches
   * firing again and its open transactions gone. The toolstack re-creates
   * the guest's home and its devices, whose new backends (InitWait) serve
   * the same storage. Returns the new domid.
   */
  saveRestore(opts?: { keepDomid?: boolean }): Promise<number>;
  close(): Promise<void>;
}

export async function createSimHost(options: SimHostOptions = {}): Promise<SimHost> {
  const guestDomid = options.guestDomid ?? 1;
  const hypervisor = new SimHypervisor();
  hypervisor.createDomain({ domid: 0, pages: 4096, grants: options.grantEntries });
  hypervisor.createDomain({ domid: guestDomid, pages: options.guestPages ?? 65536, grants: options.grantEntries });
  const xenstored = new SimXenstored(options.xenstored);

  const dom0Evtchn = new SimEventChannels(hypervisor, 0);
  dom0Evtchn.listen();
  const dom0: SimDom0 = {
    domid: 0,
    xenstore: new XenstoreClient(xenstored.connect({ domid: 0 })),
    mapper: new SimGrantMapper(hypervisor, 0),
    evtchn: dom0Evtchn,
  };

  const guestGrants = new SimGrantSharer(hypervisor, guestDomid);
  // The guest kernel's own channel, for its xenstore ring: it survives a restore; the
  // userspace channels (the platform's) do not.
  const kernelEvtchn = new SimEventChannels(hypervisor, guestDomid);
  kernelEvtchn.listen();
  const link: XenstoreRingLink = linkXenstoreRing({
    xenstored,
    domid: guestDomid,
    guestGrants,
    guestEvtchn: kernelEvtchn,
    dom0Mapper: dom0.mapper,
    dom0Evtchn,
    reservedRef: GNTTAB_RESERVED_XENSTORE,
  });
  let current = guestDomid;
  // The toolstack's part of domain creation (libxl): the guest's home, owned by it.
  const makeHome = (domid: number): Promise<void> =>
    dom0.xenstore.transaction(async (tx) => {
      const home = `/local/domain/${domid}`;
      await tx.mkdir(home);
      await tx.setPerms(home, [
        { perm: 'n', domid },
        { perm: 'r', domid: 0 },
      ]);
      await tx.write(`${home}/name`, options.guestName ?? 'guest');
      await tx.write(`${home}/domid`, String(domid));
      await tx.mkdir(`${home}/device`);
      await tx.write(`${home}/store/ring-ref`, String(link.ringRef));
      await tx.write(`${home}/store/port`, String(link.port));
    });
  await makeHome(guestDomid);
  xenstored.introduceDomain(guestDomid);

  const guestXs = new XenstoreClient(link.stream);
  let closed = false;
  const vbdOwners = new SimVbdOwners();
  const processes = new Set<SimGuestProcess>();
  let nextPid = 0x40000000; // apart from any real pid: these processes live in this one
  const platform = resumablePlatform({
    domid: guestDomid,
    xenstore: guestXs,
    grants: guestGrants,
    vbds: vbdOwners.forProcess(process.pid),
    openEvtchn: (domid) => {
      const e = new SimEventChannels(hypervisor, domid);
      e.listen();
      return e;
    },
    threadShare: (domid) => {
      if (closed) throw new PlatformError('XEN_CLOSED', 'simulated host closed');
      const n = options.threadGrants ?? 6144;
      const grants = guestGrants.carve(n, n);
      let given = false;
      return {
        spec: { kind: 'sim', domid, host: hypervisor.handle, grants },
        release: () => {
          // Refs the thread left granted (a backend still mapping them) stay set apart: reusing them would grant them twice.
          if (!given) given = guestGrants.giveBack(grants);
        },
      };
    },
    release: () => {
      link.close();
      kernelEvtchn.close();
    },
  });
  const guest = platform as XenPlatform & { readonly grants: SimGrantSharer; readonly evtchn: SimEventChannels };

  let disks: SimBlkback[] = [];
  return {
    hypervisor,
    handle: hypervisor.handle,
    xenstored,
    guest,
    dom0,
    grantCounters: (domid = 0) => {
      const d = hypervisor.domain(domid);
      return { maps: d.counter(Counter.maps), unmaps: d.counter(Counter.unmaps), mapFailures: d.counter(Counter.mapFailures) };
    },
    addDisk: async (opts = {}) => {
      if (closed) throw new PlatformError('XEN_CLOSED', 'simulated host closed');
      const disk = new SimBlkback(dom0.xenstore, hypervisor.handle, 0, current, opts);
      disks.push(disk);
      await disk.start();
      return disk;
    },
    get disks() {
      return disks;
    },
    vbdOwners,
    spawnGuestProcess: () => {
      if (closed) throw new PlatformError('XEN_CLOSED', 'simulated host closed');
      const pid = nextPid++;
      const xenstore = new XenstoreClient(xenstored.connect({ domid: current }));
      let alive = true;
      /** The process ends; killed, what it held is left abandoned (a clean exit closed its devices first). */
      const end = (killed: boolean): void => {
        if (!alive) return;
        alive = false;
        processes.delete(proc);
        if (killed) vbdOwners.kill(pid);
        xenstore.close();
      };
      const domid = current;
      const proc: SimGuestProcess = {
        pid,
        platform: {
          domid,
          xenstore,
          grants: guest.grants,
          evtchn: guest.evtchn,
          vbds: vbdOwners.forProcess(pid),
          restores: 0,
          resume: async () => undefined,
          domidChanged: async () => (await xenstore.readInt('domid')) !== domid,
          close: async () => end(false),
        },
        kill: () => end(true),
      };
      processes.add(proc);
      return proc;
    },
    saveRestore: async ({ keepDomid = false } = {}) => {
      if (closed) throw new PlatformError('XEN_CLOSED', 'simulated host closed');
      const from = current;
      const to = keepDomid ? from : Math.max(...hypervisor.handle.domains.map((d) => d.domid)) + 1;
      // xl save: the domain is suspended (it sees no watch event), saved, and destroyed with its devices.
      xenstored.suspendDomain(from);
      for (const d of disks) await d.destroy();
      // xl restore: the same memory under the new id, a new grant table; the kernel drops every userspace port.
      hypervisor.restoreDomain(from, to);
      guest.evtchn.dropBindings();
      if (to !== from) {
        await dom0.xenstore.rm(`/local/domain/${from}`).catch(() => undefined);
        await makeHome(to);
      }
      current = to;
      const handle = hypervisor.handle;
      disks = await Promise.all(disks.map((d) => d.restoredAs(to, handle)));
      // The domain runs again: its kernel reconnects to xenstore and registers every watch again.
      xenstored.restoreDomain(from, to);
      return to;
    },
    close: async () => {
      if (closed) return;
      closed = true;
      for (const p of [...processes]) p.kill();
      await Promise.all(disks.map((d) => d.close()));
      await guest.close();
      dom0.xenstore.close();
      dom0Evtchn.close();
      xenstored.close();
    },
  };
}

/** A worker's view of a host built elsewhere, from {@link SimHost.handle}. */
export function attachSimHost(handle: SimHostHandle): SimHypervisor {
  return new SimHypervisor(handle);
}
