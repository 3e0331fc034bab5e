/**
 * One queue of the simulated blkback: the backend's end of a blkif ring,
 * served as Linux's xen-blkback serves it (drivers/block/xen-blkback/
 * blkback.c), in a worker thread of its own.
 *
 * Every request is copied out of the ring before it is looked at (the
 * frontend may rewrite the slot), checked as blkback checks it (segment
 * bounds, segment count, sector range and alignment, read-only, the grants
 * themselves) and answered BLKIF_RSP_ERROR when it fails; nothing a frontend
 * writes can crash the worker. Grants are mapped through the simulated
 * hypervisor, so a bad one is refused exactly where Xen would refuse it.
 */
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_SECTOR_SIZE,
  BLKIF_SEGMENT_SIZE,
  BlkifOp,
  BlkifRsp,
  SEGS_PER_INDIRECT_FRAME,
  SECTORS_PER_PAGE,
  getIndirectGref,
  getSegment,
  newRequestFields,
  readRequest,
  segmentOffset,
  setResponse,
  type BlkifAbi,
  type BlkifRequestFields,
} from '../../wire/blkif.js';
import { BackRing } from './back_ring.js';
import type { EventChannel } from '../../evtchn/types.js';
import type { GrantMapping, SimGrantMapper } from '../host/grants.js';
import type { DiskIo } from './disk.js';
import { Ctl, FaultKind, QStat, QUEUE_BASE, QUEUE_WORDS, getSectors } from './control.js';
import { GrantCache } from './grant_cache.js';

export interface QueueServerOptions {
  abi: BlkifAbi;
  /** The frontend's domain. */
  domid: number;
  /** Ring pages, mapped, in ring-ref order. */
  ring: GrantMapping[];
  channel: EventChannel;
  mapper: SimGrantMapper;
  disk: DiskIo;
  ctl: Int32Array;
  queue: number;
  policy: QueuePolicy;
}

/** What a queue serves and allows: the disk's settings and what was negotiated. Structured-cloneable. */
export interface QueuePolicy {
  readOnly: boolean;
  /** Logical sector size: requests must be aligned to it. */
  sectorSize: number;
  /** Persistent grants negotiated. */
  persistent: boolean;
  /** Most persistent grants kept (Linux's max_persistent_grants). */
  maxPersistentGrants: number;
  /** Segments allowed in an indirect request (0: indirect not offered). */
  maxIndirectSegments: number;
  flush: boolean;
  barrier: boolean;
  discard: boolean;
}

/**
 * A request as copied out of the ring: its fields as the codec reads them
 * (`dataOp` is what the response carries, blkback's req_operation), and
 * `rw`, the data direction it is served as.
 */
interface Req extends BlkifRequestFields {
  rw: number;
}

class BadRequest extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const RSP_SIZE_MAX = 16;

export class QueueServer {
  private readonly ring: BackRing;
  private readonly scratch: Uint8Array;
  private readonly sv: DataView;
  private readonly rspScratch = new Uint8Array(RSP_SIZE_MAX);
  private readonly rv = new DataView(this.rspScratch.buffer);
  private readonly grants: GrantCache;
  private readonly req: Req = { ...newRequestFields(), rw: 0 };
  /** Segments of the current request, checked: gref, first_sect, last_sect each. */
  private readonly segs: Int32Array;
  private readonly seg = { gref: 0, firstSect: 0, lastSect: 0 };
  /** A DataView over the memory the last indirect page lay in (pages share a few blocks of memory). */
  private pageView: DataView | null = null;
  /** Per-request scratch: the segments' mappings, and the I/O vector built from them. */
  private readonly maps: GrantMapping[];
  private readonly iov: Uint8Array[];
  private readonly stats: number;
  /** Set when the frontend broke the ring; the queue then serves nothing more. */
  broken: string | null = null;

  private readonly p: QueuePolicy;

  constructor(private readonly o: QueueServerOptions) {
    this.p = o.policy;
    this.ring = new BackRing(
      o.ring.map((m) => m.bytes),
      o.abi.entrySize,
    );
    this.scratch = new Uint8Array(o.abi.entrySize);
    this.sv = new DataView(this.scratch.buffer);
    // gref, first, last per segment, up to the indirect maximum.
    const maxSegs = Math.max(BLKIF_MAX_SEGMENTS_PER_REQUEST, o.policy.maxIndirectSegments);
    this.segs = new Int32Array(3 * maxSegs);
    this.maps = new Array<GrantMapping>(maxSegs);
    this.iov = new Array<Uint8Array>(maxSegs);
    this.stats = QUEUE_BASE + o.queue * QUEUE_WORDS;
    this.grants = new GrantCache(o.mapper, o.domid, o.policy, (field, by) => this.count(field, by));
  }

  private count(field: number, by = 1): void {
    Atomics.add(this.o.ctl, this.stats + field, by);
  }

  /**
   * Serves every request on the ring, then RING_FINAL_CHECK_FOR_REQUESTS.
   * Returns false when there was nothing to do and req_event is armed, so
   * the caller may sleep until the next event.
   */
  serve(): boolean {
    if (this.broken !== null || Atomics.load(this.o.ctl, Ctl.stall) !== 0) return false;
    let did = false;
    for (;;) {
      const rp = this.ring.requestProducer();
      // A frontend claiming more than a ring's worth is broken.
      this.broken = this.ring.overflow(rp);
      if (this.broken !== null) return did;
      while (this.ring.unconsumed(rp)) {
        if (Atomics.load(this.o.ctl, Ctl.stall) !== 0 || Atomics.load(this.o.ctl, Ctl.stop) !== 0) return true;
        this.ring.takeRequest(this.scratch);
        this.handle();
        did = true;
      }
      if (!this.ring.finalCheck()) return did;
    }
  }

  private handle(): void {
    const r = this.req;
    readRequest(this.o.abi, this.sv, 0, r);
    this.count(QStat.requests);
    let status: number = BlkifRsp.Okay;
    try {
      const fault = this.takeFault();
      if (fault === FaultKind.error) status = BlkifRsp.Error;
      else if (fault === FaultKind.eopnotsupp) status = BlkifRsp.EOpNotSupp;
      else {
        this.dispatch();
      }
      if (fault !== FaultKind.none) return this.respondFaulty(fault, status);
    } catch (err) {
      status = err instanceof BadRequest ? err.status : BlkifRsp.Error;
      this.count(QStat.errors);
    }
    this.respond(r.idLo, r.idHi, r.dataOp, status);
  }

  /** The fault to apply to the current request, if one is armed for its operation. */
  private takeFault(): number {
    const ctl = this.o.ctl;
    const kind = Atomics.load(ctl, Ctl.faultKind);
    if (kind === FaultKind.none) return kind;
    if ((Atomics.load(ctl, Ctl.faultOps) & (1 << this.req.dataOp)) === 0) return FaultKind.none;
    // Take one from the count with a compare-and-swap: the queues' workers share it, and a
    // decrement undone afterwards would let another worker read -1 ("every request") meanwhile.
    for (;;) {
      const left = Atomics.load(ctl, Ctl.faultCount);
      if (left === -1) return kind;
      if (left <= 0) return FaultKind.none;
      if (Atomics.compareExchange(ctl, Ctl.faultCount, left, left - 1) === left) return kind;
    }
  }

  private dispatch(): void {
    const r = this.req;
    const direct = segmentOffset(this.o.abi, 0, 0);
    switch (r.operation) {
      case BlkifOp.Read:
      case BlkifOp.Write:
        r.rw = r.operation;
        if (r.nrSegments === 0 || r.nrSegments > BLKIF_MAX_SEGMENTS_PER_REQUEST)
          throw new BadRequest(BlkifRsp.Error, `bad nr_segments ${r.nrSegments}`);
        this.readSegments(this.sv, direct, 0, r.nrSegments);
        return this.readWrite();
      case BlkifOp.WriteBarrier:
      case BlkifOp.FlushDiskcache: {
        if (!(r.operation === BlkifOp.WriteBarrier ? this.p.barrier : this.p.flush))
          throw new BadRequest(BlkifRsp.EOpNotSupp, 'not offered');
        r.rw = BlkifOp.Write;
        if (r.nrSegments > BLKIF_MAX_SEGMENTS_PER_REQUEST) throw new BadRequest(BlkifRsp.Error, `bad nr_segments ${r.nrSegments}`);
        // This queue serves one request at a time, so everything before it has completed (the drain a barrier asks for).
        if (r.nrSegments > 0) {
          this.readSegments(this.sv, direct, 0, r.nrSegments);
          this.readWrite();
        }
        this.o.disk.flush();
        return;
      }
      case BlkifOp.Indirect:
        return this.indirect();
      case BlkifOp.Discard:
        return this.discard();
      default:
        throw new BadRequest(BlkifRsp.EOpNotSupp, `unknown operation ${r.operation}`);
    }
  }

  private indirect(): void {
    const r = this.req;
    if (this.p.maxIndirectSegments === 0) throw new BadRequest(BlkifRsp.EOpNotSupp, 'indirect descriptors not offered');
    r.rw = r.dataOp;
    if (r.rw !== BlkifOp.Read && r.rw !== BlkifOp.Write) throw new BadRequest(BlkifRsp.Error, `bad indirect_op ${r.rw}`);
    if (r.nrSegments === 0 || r.nrSegments > this.p.maxIndirectSegments)
      throw new BadRequest(BlkifRsp.Error, `bad indirect nr_segments ${r.nrSegments}`);
    this.count(QStat.indirect);
    const pages = Math.ceil(r.nrSegments / SEGS_PER_INDIRECT_FRAME);
    for (let p = 0; p < pages; p++) {
      const m = this.mapGrant(getIndirectGref(this.o.abi, this.sv, 0, p), false);
      try {
        const n = Math.min(SEGS_PER_INDIRECT_FRAME, r.nrSegments - p * SEGS_PER_INDIRECT_FRAME);
        this.readSegments(this.viewOf(m.bytes), m.bytes.byteOffset, p * SEGS_PER_INDIRECT_FRAME, n);
      } finally {
        this.unmapGrant(m);
      }
    }
    this.readWrite();
  }

  private viewOf(page: Uint8Array): DataView {
    if (this.pageView === null || this.pageView.buffer !== page.buffer) this.pageView = new DataView(page.buffer);
    return this.pageView;
  }

  /** Reads and checks `n` segment descriptors from `view` at `off` into segs[first…]. */
  private readSegments(view: DataView, off: number, first: number, n: number): void {
    const s = this.segs;
    const seg = this.seg;
    for (let i = 0; i < n; i++) {
      getSegment(view, off + i * BLKIF_SEGMENT_SIZE, seg);
      if (seg.lastSect >= SECTORS_PER_PAGE || seg.lastSect < seg.firstSect) {
        throw new BadRequest(BlkifRsp.Error, `segment ${first + i}: sectors ${seg.firstSect}..${seg.lastSect}`);
      }
      s[3 * (first + i)] = seg.gref | 0;
      s[3 * (first + i) + 1] = seg.firstSect;
      s[3 * (first + i) + 2] = seg.lastSect;
    }
  }

  private readWrite(): void {
    const r = this.req;
    const s = this.segs;
    const write = r.rw === BlkifOp.Write;
    if (write && this.p.readOnly) throw new BadRequest(BlkifRsp.Error, 'write to a read-only disk');
    let nsec = 0;
    for (let i = 0; i < r.nrSegments; i++) nsec += s[3 * i + 2]! - s[3 * i + 1]! + 1;
    const align = this.p.sectorSize / BLKIF_SECTOR_SIZE - 1;
    if ((r.sector & align) !== 0 || (nsec & align) !== 0)
      throw new BadRequest(BlkifRsp.Error, `sector ${r.sector}+${nsec} not aligned to ${this.p.sectorSize}`);
    if (r.sector + nsec > getSectors(this.o.ctl)) throw new BadRequest(BlkifRsp.Error, `sector ${r.sector}+${nsec} past the end`);
    // Map every segment first, so a bad grant fails the request before any I/O.
    const maps = this.maps;
    let mapped = 0;
    try {
      for (; mapped < r.nrSegments; mapped++) maps[mapped] = this.mapGrant(s[3 * mapped]! >>> 0, !write);
      // One vectored transfer for the request, as blkback submits one bio: segments
      // that are adjacent in memory (often, with a pool handing pages out in order) merge.
      const iov = this.iov;
      let n = 0;
      let buf: ArrayBufferLike | null = null;
      let start = 0;
      let end = 0;
      for (let i = 0; i < r.nrSegments; i++) {
        const page = maps[i]!.bytes;
        const a = page.byteOffset + s[3 * i + 1]! * BLKIF_SECTOR_SIZE;
        const b = page.byteOffset + (s[3 * i + 2]! + 1) * BLKIF_SECTOR_SIZE;
        if (page.buffer === buf && a === end) end = b;
        else {
          if (buf !== null) iov[n++] = new Uint8Array(buf, start, end - start);
          buf = page.buffer;
          start = a;
          end = b;
        }
      }
      iov[n++] = new Uint8Array(buf!, start, end - start);
      const pos = r.sector * BLKIF_SECTOR_SIZE;
      if (write) this.o.disk.writev(pos, iov, n);
      else this.o.disk.readv(pos, iov, n);
    } finally {
      for (let i = 0; i < mapped; i++) {
        this.unmapGrant(maps[i]!);
        maps[i] = null as unknown as GrantMapping;
      }
    }
  }

  private discard(): void {
    const r = this.req;
    if (!this.p.discard) throw new BadRequest(BlkifRsp.EOpNotSupp, 'discard not offered');
    if (this.p.readOnly) throw new BadRequest(BlkifRsp.Error, 'discard on a read-only disk');
    const align = this.p.sectorSize / BLKIF_SECTOR_SIZE - 1;
    if ((r.sector & align) !== 0 || (r.nrSectors & align) !== 0) throw new BadRequest(BlkifRsp.Error, 'discard not aligned');
    if (r.sector + r.nrSectors > getSectors(this.o.ctl)) throw new BadRequest(BlkifRsp.Error, 'discard past the end');
    this.o.disk.discard(r.sector * BLKIF_SECTOR_SIZE, r.nrSectors * BLKIF_SECTOR_SIZE);
  }

  private mapGrant(gref: number, writable: boolean): GrantMapping {
    return this.grants.map(gref, writable);
  }

  private unmapGrant(m: GrantMapping): void {
    this.grants.unmap(m);
  }

  private respondFaulty(fault: number, status: number): void {
    const r = this.req;
    this.count(QStat.faultsInjected);
    switch (fault) {
      case FaultKind.unknownId:
        return this.respond((r.idLo + this.ring.entries) | 0x40000000, r.idHi ^ 0x5a5a5a5a, r.dataOp, status);
      case FaultKind.duplicateId:
        this.respond(r.idLo, r.idHi, r.dataOp, status);
        return this.respond(r.idLo, r.idHi, r.dataOp, status);
      case FaultKind.wrongOp:
        return this.respond(r.idLo, r.idHi, r.dataOp === BlkifOp.Read ? BlkifOp.Write : BlkifOp.Read, status);
      case FaultKind.rspOverflow:
        // The real response and 3 never written or asked for, published in one store: the
        // frontend cannot take the real one alone first and miss that the request was answered
        // by a broken ring.
        this.respond(r.idLo, r.idHi, r.dataOp, status, 3);
        this.o.channel.notify();
        return;
      default:
        return this.respond(r.idLo, r.idHi, r.dataOp, status);
    }
  }

  /** make_response: writes the response slot, pushes (with `bogus` more slots claimed, for the overflow fault), and notifies if the frontend asked. */
  private respond(idLo: number, idHi: number, op: number, status: number, bogus = 0): void {
    const delay = Atomics.load(this.o.ctl, Ctl.delayUs);
    if (delay > 0) Atomics.wait(this.o.ctl, Ctl.delayUs, delay, delay / 1000);
    setResponse(this.o.abi, this.rv, 0, idLo, idHi, op, status);
    this.ring.putResponse(this.rspScratch.subarray(0, this.o.abi.response.size), 1 + bogus);
    this.count(QStat.responses);
    if (this.ring.push()) {
      this.o.channel.notify();
      this.count(QStat.notifications);
    }
  }

  /** Unmaps every grant kept (persistent ones and the ring), as blkback does on disconnect. */
  close(): void {
    this.grants.close();
    for (const m of this.o.ring) this.o.mapper.unmap(m);
    this.o.channel.close();
  }
}
