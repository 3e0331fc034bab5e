/**
 * The backend's end of a shared ring (ring.h's BACK_RING), beside the
 * frontend's FrontRing: request consumption, response production and
 * ring.h's notification rules, over the ring's pages as the backend mapped
 * them (separately: an entry may straddle two pages, where blkback vmaps
 * them contiguously).
 */
import { PAGE_SIZE } from '../../wire/page.js';
import {
  SRING_HEADER_SIZE,
  SringWord,
  finalCheckForRequests,
  idxAdd,
  idxSub,
  loadIdx,
  pushResponsesAndCheckNotify,
  ringEntries,
} from '../../wire/ring.js';

export class BackRing {
  readonly entries: number;
  private readonly words: Int32Array;
  /** Next request to consume. */
  private reqCons: number;
  /** Next response slot to fill (pushed by {@link push}). */
  private rspProdPvt: number;

  constructor(
    private readonly pages: readonly Uint8Array[],
    private readonly entrySize: number,
  ) {
    this.entries = ringEntries(pages.length * PAGE_SIZE, entrySize);
    const p0 = pages[0]!;
    this.words = new Int32Array(p0.buffer, p0.byteOffset, SRING_HEADER_SIZE / 4);
    // BACK_RING_ATTACH: everything up to rsp_prod has been answered.
    this.rspProdPvt = loadIdx(this.words, SringWord.rspProd);
    this.reqCons = this.rspProdPvt;
  }

  /** The frontend's req_prod now. */
  requestProducer(): number {
    return loadIdx(this.words, SringWord.reqProd);
  }

  /**
   * RING_REQUEST_PROD_OVERFLOW: why `reqProd` cannot be believed (a
   * frontend claiming more than a ring's worth of requests), or null.
   */
  overflow(reqProd: number): string | null {
    return idxSub(reqProd, this.rspProdPvt) > this.entries
      ? `req_prod ${reqProd} is more than ${this.entries} past rsp_prod ${this.rspProdPvt}`
      : null;
  }

  /** Whether requests up to `reqProd` are left to consume. */
  unconsumed(reqProd: number): boolean {
    return this.reqCons !== reqProd;
  }

  /** Copies the next request into `dst` (one copy: the backend acts on it, never on the ring) and consumes it. */
  takeRequest(dst: Uint8Array): void {
    this.span(this.reqCons, dst, false);
    this.reqCons = idxAdd(this.reqCons, 1);
  }

  /** RING_FINAL_CHECK_FOR_REQUESTS: true when more came in; else req_event is armed. */
  finalCheck(): boolean {
    return finalCheckForRequests(this.words, this.reqCons);
  }

  /** Writes `rsp` into the next response slot; `claim` slots are taken (more than 1 only to inject a fault). */
  putResponse(rsp: Uint8Array, claim = 1): void {
    this.span(this.rspProdPvt, rsp, true);
    this.rspProdPvt = idxAdd(this.rspProdPvt, claim);
  }

  /** RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: true when the frontend asked to be told. */
  push(): boolean {
    return pushResponsesAndCheckNotify(this.words, this.rspProdPvt);
  }

  /** Copies between `buf` and ring entry `idx`, across the pages it lies in. */
  private span(idx: number, buf: Uint8Array, toRing: boolean): void {
    let off = SRING_HEADER_SIZE + (idx & (this.entries - 1)) * this.entrySize;
    for (let done = 0; done < buf.byteLength;) {
      const page = this.pages[Math.floor(off / PAGE_SIZE)]!;
      const at = off % PAGE_SIZE;
      const n = Math.min(buf.byteLength - done, PAGE_SIZE - at);
      if (toRing) page.set(buf.subarray(done, done + n), at);
      else buf.set(page.subarray(at, at + n), done);
      done += n;
      off += n;
    }
  }
}
