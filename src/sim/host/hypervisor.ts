/**
 * The simulated hypervisor's state: each domain's memory, grant table and
 * event-channel table, all in SharedArrayBuffers. Every thread that takes part
 * (the guest on the main thread, a backend in a worker) builds a
 * {@link SimHypervisor} over the same buffers from one {@link SimHostHandle},
 * which postMessage() passes without copying. A backend that maps a grant
 * therefore reads and writes the guest's real page, as on Xen.
 *
 * What Xen keeps private (the "active" grant table with its pin counts, the
 * event-channel bindings) lives here too, beside what the guest shares
 * (grant entries), and is only touched under the same rules Xen applies.
 */
import { GNTTAB_NR_RESERVED_ENTRIES, GRANT_ENTRY_V1_SIZE } from '../../wire/grant_table.js';
import { PAGE_SIZE } from '../../wire/page.js';
import { PlatformError } from '../../errors.js';
import { EVTCHN_TABLE_BYTES } from './evtchn_layout.js';

/** Everything another thread needs to join the simulated host. Structured-cloneable. */
export interface SimHostHandle {
  domains: SimDomainHandle[];
}

export interface SimDomainHandle {
  domid: number;
  /** Guest memory: `pages * PAGE_SIZE` bytes; frame N is bytes [N*4096, (N+1)*4096). */
  memory: SharedArrayBuffer;
  /** grant_entry_v1[nrGrants], as the guest writes it. */
  grants: SharedArrayBuffer;
  /** Xen's side of each grant: a lock word and pin counts (Int32 × ACTIVE_WORDS per ref). */
  active: SharedArrayBuffer;
  /** Event-channel table (see evtchn_layout.ts). */
  evtchn: SharedArrayBuffer;
  /** Int32 counters (see {@link Counter}). */
  counters: SharedArrayBuffer;
}

/** Per-domain counters, readable from any thread. */
export const Counter = {
  /** Grants this domain mapped (as a backend). */
  maps: 0,
  /** Grants this domain unmapped. */
  unmaps: 1,
  /** Map attempts Xen refused. */
  mapFailures: 2,
  /** Event-channel notifications this domain sent. */
  notifications: 3,
  /**
   * Operations on an event-channel port that a restore had dropped (notify,
   * unbind, mask, unmask through a handle opened before the restore): on a
   * real kernel an unbind there hits a BUG_ON, so a frontend must make none.
   */
  staleEvtchnOps: 4,
} as const;
const COUNTERS = 8;

/** Words per active-grant entry: lock, read-only pins, writable pins, spare. */
export const ACTIVE_WORDS = 4;
export const ActiveWord = { lock: 0, readPins: 1, writePins: 2 } as const;

export interface DomainOptions {
  domid: number;
  /** Pages of memory (default 16384 = 64 MiB; untouched pages cost nothing). */
  pages?: number;
  /** Grant table entries (default 32768, i.e. 64 v1 grant frames). */
  grants?: number;
}

/** One domain's view, with typed arrays built once. */
export class SimDomain {
  readonly domid: number;
  readonly pages: number;
  readonly nrGrants: number;
  readonly memory: SharedArrayBuffer;
  /** Grant entries as 32-bit words: [2r] = flags | domid << 16, [2r+1] = frame. */
  readonly grantWords: Int32Array;
  readonly active: Int32Array;
  readonly evtchn: Int32Array;
  readonly counters: Int32Array;

  constructor(readonly handle: SimDomainHandle) {
    this.domid = handle.domid;
    this.memory = handle.memory;
    this.pages = handle.memory.byteLength / PAGE_SIZE;
    this.nrGrants = handle.grants.byteLength / GRANT_ENTRY_V1_SIZE;
    this.grantWords = new Int32Array(handle.grants);
    this.active = new Int32Array(handle.active);
    this.evtchn = new Int32Array(handle.evtchn);
    this.counters = new Int32Array(handle.counters);
  }

  /** A view of `count` pages from `frame`, without copying. */
  frames(frame: number, count = 1): Uint8Array {
    return new Uint8Array(this.memory, frame * PAGE_SIZE, count * PAGE_SIZE);
  }

  count(c: number, by = 1): void {
    Atomics.add(this.counters, c, by);
  }

  counter(c: number): number {
    return Atomics.load(this.counters, c) >>> 0;
  }
}

/** The simulated hypervisor as seen from one thread. */
export class SimHypervisor {
  private readonly domains = new Map<number, SimDomain>();

  constructor(handle: SimHostHandle = { domains: [] }) {
    for (const d of handle.domains) this.domains.set(d.domid, new SimDomain(d));
  }

  /** Creates a domain (on the thread that builds the host, before workers attach). */
  createDomain(opts: DomainOptions): SimDomain {
    const { domid } = opts;
    if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0) throw new PlatformError('XEN_EINVAL', `bad domid ${domid}`);
    if (this.domains.has(domid)) throw new PlatformError('XEN_EINVAL', `domain ${domid} exists`);
    const pages = opts.pages ?? 16384;
    const grants = opts.grants ?? 32768;
    const d = new SimDomain({
      domid,
      memory: new SharedArrayBuffer(pages * PAGE_SIZE),
      grants: new SharedArrayBuffer(grants * GRANT_ENTRY_V1_SIZE),
      active: new SharedArrayBuffer(grants * ACTIVE_WORDS * 4),
      evtchn: new SharedArrayBuffer(EVTCHN_TABLE_BYTES),
      counters: new SharedArrayBuffer(COUNTERS * 4),
    });
    this.domains.set(domid, d);
    return d;
  }

  /** The domain, or undefined when there is none with that id. */
  find(domid: number): SimDomain | undefined {
    return this.domains.get(domid);
  }

  domain(domid: number): SimDomain {
    const d = this.domains.get(domid);
    if (d === undefined) throw new PlatformError('XEN_EINVAL', `no domain ${domid} on the simulated host`);
    return d;
  }

  /**
   * A simulated restore of domain `from` as domain `to` (the same id for a
   * restore that keeps it): the same memory, but a new grant table (every
   * entry gone but the reserved ones, which the toolstack sets up again) and
   * no grant mapped. The domain stays reachable under its old id too, for
   * the kernel's own channels (the xenstore ring) that survive a restore.
   */
  restoreDomain(from: number, to: number): SimDomain {
    const d = this.domain(from);
    const g = d.grantWords;
    for (let w = 2 * GNTTAB_NR_RESERVED_ENTRIES; w < g.length; w++) Atomics.store(g, w, 0);
    d.active.fill(0);
    if (to === from) return d;
    if (this.domains.has(to)) throw new PlatformError('XEN_EINVAL', `domain ${to} exists`);
    const moved = new SimDomain({ ...d.handle, domid: to });
    this.domains.set(to, moved);
    return moved;
  }

  /** What to post to a worker so it can build its own view (a restored domain under each of its ids). */
  get handle(): SimHostHandle {
    return { domains: [...this.domains.entries()].map(([domid, d]) => (d.domid === domid ? d.handle : { ...d.handle, domid })) };
  }
}

/** Spins for a lock word: the sections it guards are a handful of loads and stores. */
export function lockWord(a: Int32Array, i: number): void {
  while (Atomics.compareExchange(a, i, 0, 1) !== 0) {
    // Another thread holds it for a few instructions; nothing to yield to.
  }
}

export function unlockWord(a: Int32Array, i: number): void {
  Atomics.store(a, i, 0);
}
