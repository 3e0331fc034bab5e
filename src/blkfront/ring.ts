/**
 * The frontend's end of one blkif shared ring (ring.h's FRONT_RING): private
 * req_prod_pvt and rsp_cons, the shared indices read and written with
 * Atomics, event suppression exactly as RING_PUSH_REQUESTS_AND_CHECK_NOTIFY
 * and RING_FINAL_CHECK_FOR_RESPONSES do it, and no trust in rsp_prod.
 *
 * It knows slots and indices, not what a request means: the queue encodes
 * requests into {@link FrontRing.requestOffset} and checks the responses it is
 * handed. It works over any memory (granted pages, or a shared file mapped by
 * a C peer) as long as the bytes are the sring.
 */
import { BlkifError } from '../errors.js';
import { newResponseFields, readResponse, type BlkifAbi } from '../wire/blkif.js';
import {
  SRING_HEADER_SIZE,
  SringWord,
  finalCheckForResponses,
  idxAdd,
  idxSub,
  loadIdx,
  pushRequestsAndCheckNotify,
  ringEntries,
  sringInit,
} from '../wire/ring.js';

/** Called once per response with its fields, read once from the slot. */
export type ResponseHandler = (idLo: number, idHi: number, operation: number, status: number) => void;

export class FrontRing {
  /** Slots in the ring (a power of two). */
  readonly entries: number;
  readonly view: DataView;
  private readonly words: Int32Array;
  private readonly mask: number;
  private readonly stride: number;
  private reqProdPvt = 0;
  private rspCons = 0;
  /** The response being handled, read once from its slot (reused). */
  private readonly rsp = newResponseFields();

  /**
   * @param bytes the sring pages, contiguous.
   * @param init SHARED_RING_INIT first (a new ring); false to attach to one already set up.
   */
  constructor(
    bytes: Uint8Array,
    readonly abi: BlkifAbi,
    init = true,
  ) {
    this.entries = ringEntries(bytes.byteLength, abi.entrySize);
    if (this.entries < 1) throw new BlkifError('BLKIF_EINVAL', `${bytes.byteLength} bytes hold no ring entry`);
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.words = new Int32Array(bytes.buffer, bytes.byteOffset, SRING_HEADER_SIZE / 4);
    this.mask = this.entries - 1;
    this.stride = abi.entrySize;
    if (init) sringInit(this.words);
    else {
      // FRONT_RING_ATTACH: carry on from the shared producer.
      this.reqProdPvt = loadIdx(this.words, SringWord.reqProd);
      this.rspCons = loadIdx(this.words, SringWord.rspProd);
    }
  }

  /** Requests produced (pushed or not) and not yet answered. */
  get outstanding(): number {
    return idxSub(this.reqProdPvt, this.rspCons);
  }

  /** RING_FREE_REQUESTS: slots a new request may take. */
  get freeSlots(): number {
    return this.entries - this.outstanding;
  }

  /** Byte offset of the slot the next request goes into. Check {@link freeSlots} first. */
  requestOffset(): number {
    return SRING_HEADER_SIZE + (this.reqProdPvt & this.mask) * this.stride;
  }

  /** The request at {@link requestOffset} is written: move req_prod_pvt on. */
  produced(): void {
    this.reqProdPvt = idxAdd(this.reqProdPvt, 1);
  }

  /** True when requests were produced that the backend cannot see yet. */
  get unpushed(): boolean {
    return loadIdx(this.words, SringWord.reqProd) !== this.reqProdPvt;
  }

  /**
   * RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publishes what was produced and says
   * whether the backend asked to be woken for it.
   */
  push(): boolean {
    return pushRequestsAndCheckNotify(this.words, this.reqProdPvt);
  }

  /**
   * Consumes every response there is, then RING_FINAL_CHECK_FOR_RESPONSES so
   * the next one raises an event, and looks again. Each slot is read once.
   * Throws BLKIF_EPROTO, consuming nothing more, when rsp_prod claims more
   * responses than there are requests outstanding (a backend that overran
   * the ring or answered what was never asked). Returns how many it handled.
   * With `arm` false it takes what is there and does not ask for an event
   * (a poller that will look again).
   */
  consume(handle: ResponseHandler, arm = true): number {
    const r = this.rsp;
    let n = 0;
    for (;;) {
      const rp = loadIdx(this.words, SringWord.rspProd);
      const have = idxSub(rp, this.rspCons);
      if (have > this.outstanding) {
        throw new BlkifError(
          'BLKIF_EPROTO',
          `backend's rsp_prod ${rp} is ${have} past rsp_cons ${this.rspCons}, with only ${this.outstanding} requests outstanding`,
        );
      }
      while (this.rspCons !== rp) {
        readResponse(this.abi, this.view, SRING_HEADER_SIZE + (this.rspCons & this.mask) * this.stride, r);
        this.rspCons = idxAdd(this.rspCons, 1);
        n++;
        handle(r.idLo, r.idHi, r.operation, r.status);
      }
      // A poller that keeps looking leaves rsp_event where it is: the backend then raises no event for what it finds.
      if (!arm || !finalCheckForResponses(this.words, this.rspCons)) return n;
    }
  }

  /**
   * Reads rsp_prod up to `spins` times, stopping as soon as a response is
   * there: a busy poll that asks nothing of the backend. True when one is.
   */
  spin(spins: number): boolean {
    return spinForResponse(this.words, this.rspCons, spins);
  }
}

/** The poll loop, outside the class so the calibration below runs the very code (and JIT state) the rings run. */
function spinForResponse(words: Int32Array, rspCons: number, spins: number): boolean {
  const cons = rspCons >>> 0;
  for (let i = 0; i < spins; i++) {
    if (loadIdx(words, SringWord.rspProd) !== cons) return true;
  }
  return false;
}

let spinsPerMicro = 0;

/**
 * How many rsp_prod reads take about `micros` microseconds on this machine,
 * measured once per process with two clock reads (a clock read is dear on
 * some guests, so the poll loop itself counts reads, not time).
 */
export function spinsFor(micros: number): number {
  if (micros <= 0) return 0;
  if (spinsPerMicro === 0) {
    const words = new Int32Array(SRING_HEADER_SIZE / 4);
    const n = 1 << 16;
    spinForResponse(words, 0, n); // warm: measure the loop as it will run
    const t0 = performance.now();
    spinForResponse(words, 0, n);
    const us = (performance.now() - t0) * 1000;
    spinsPerMicro = Math.max(1, n / Math.max(us, 1));
  }
  return Math.max(1, Math.round(micros * spinsPerMicro));
}

/**
 * Request ids: shadow slots handed out from a FIFO free list, as Linux's
 * shadow_free, with a generation per slot in the id's upper half. A response
 * is accepted only for a slot in flight under the same generation, so a
 * duplicated or stale response cannot complete a request that reused the slot.
 */
export class ShadowIds {
  private readonly gen: Uint32Array;
  private readonly busy: Uint8Array;
  private readonly freeList: Uint32Array;
  private head = 0;
  private count: number;

  constructor(readonly size: number) {
    this.gen = new Uint32Array(size);
    this.busy = new Uint8Array(size);
    this.freeList = new Uint32Array(size);
    for (let i = 0; i < size; i++) this.freeList[i] = i;
    this.count = size;
  }

  get free(): number {
    return this.count;
  }

  /** Takes a slot (the caller checked {@link free}); its id is (slot, generation(slot)). */
  alloc(): number {
    const slot = this.freeList[this.head]!;
    this.head = (this.head + 1) % this.size;
    this.count--;
    this.busy[slot] = 1;
    this.gen[slot] = (this.gen[slot]! + 1) >>> 0;
    return slot;
  }

  generation(slot: number): number {
    return this.gen[slot]!;
  }

  /** True when (lo, hi) names a slot in flight under its current generation. */
  valid(lo: number, hi: number): boolean {
    return lo < this.size && this.busy[lo] === 1 && this.gen[lo] === hi;
  }

  /** Returns a slot to the tail of the free list. */
  release(slot: number): void {
    this.busy[slot] = 0;
    this.freeList[(this.head + this.count) % this.size] = slot;
    this.count++;
  }
}
