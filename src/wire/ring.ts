/**
 * Shared ring semantics (xen/io/ring.h). Pure: the sring header layout, ring
 * sizing, free-running u32 index arithmetic and the two event-suppression
 * rules (push-and-check-notify, final-check). The indices live in an
 * Int32Array over the shared page, read and written with Atomics so the
 * ordering ring.h gets from xen_wmb()/xen_mb() holds between threads.
 *
 *   struct __name##_sring {
 *       RING_IDX req_prod, req_event;
 *       RING_IDX rsp_prod, rsp_event;
 *       union { ... uint8_t pvt_pad[4]; } pvt;
 *       uint8_t __pad[44];
 *       union __name##_sring_entry ring[1];
 *   };
 */

/** Offsets in the sring header. */
export const SringOffset = { reqProd: 0, reqEvent: 4, rspProd: 8, rspEvent: 12, pvt: 16, ring: 64 } as const;
/** offsetof(sring, ring): entries start after a 64-byte header. */
export const SRING_HEADER_SIZE = 64;
/** Word index (in an Int32Array over the page) of each header field. */
export const SringWord = { reqProd: 0, reqEvent: 1, rspProd: 2, rspEvent: 3 } as const;

/** __RD32: round down to a power of two (0 stays 0). */
export function roundDownPow2(x: number): number {
  if (x <= 0) return 0;
  return 2 ** Math.floor(Math.log2(x));
}

/**
 * __CONST_RING_SIZE: how many entries a ring of `bytes` holds with entries of
 * `entrySize`: the largest power of two that fits after the header.
 */
export function ringEntries(bytes: number, entrySize: number): number {
  return roundDownPow2(Math.floor((bytes - SRING_HEADER_SIZE) / entrySize));
}

/** u32 subtraction: `a - b` modulo 2^32, as RING_IDX arithmetic does. */
export function idxSub(a: number, b: number): number {
  return (a - b) >>> 0;
}

/** u32 addition modulo 2^32. */
export function idxAdd(a: number, b: number): number {
  return (a + b) >>> 0;
}

/**
 * The notify rule of RING_PUSH_{REQUESTS,RESPONSES}_AND_CHECK_NOTIFY: after
 * moving the producer from `oldProd` to `newProd`, the other side asked to be
 * woken iff its event index lies in (oldProd, newProd].
 */
export function needsNotify(oldProd: number, newProd: number, event: number): boolean {
  return idxSub(newProd, event) < idxSub(newProd, oldProd);
}

/**
 * SHARED_RING_INIT: zero indices, both event fields 1 (so the first message
 * in either direction notifies).
 */
export function sringInit(words: Int32Array): void {
  Atomics.store(words, SringWord.reqProd, 0);
  Atomics.store(words, SringWord.rspProd, 0);
  Atomics.store(words, SringWord.reqEvent, 1);
  Atomics.store(words, SringWord.rspEvent, 1);
}

/** Reads a u32 ring index with acquire semantics. */
export function loadIdx(words: Int32Array, word: number): number {
  return Atomics.load(words, word) >>> 0;
}

/** Writes a u32 ring index with release semantics (the entries before it are visible first). */
export function storeIdx(words: Int32Array, word: number, v: number): void {
  Atomics.store(words, word, v | 0);
}

/**
 * RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish `reqProdPvt` as req_prod and
 * say whether the backend must be notified.
 */
export function pushRequestsAndCheckNotify(words: Int32Array, reqProdPvt: number): boolean {
  const old = loadIdx(words, SringWord.reqProd);
  storeIdx(words, SringWord.reqProd, reqProdPvt); // Atomics.store is a full barrier (xen_wmb + xen_mb)
  return needsNotify(old, reqProdPvt >>> 0, loadIdx(words, SringWord.reqEvent));
}

/** RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: the backend's mirror of the above. */
export function pushResponsesAndCheckNotify(words: Int32Array, rspProdPvt: number): boolean {
  const old = loadIdx(words, SringWord.rspProd);
  storeIdx(words, SringWord.rspProd, rspProdPvt);
  return needsNotify(old, rspProdPvt >>> 0, loadIdx(words, SringWord.rspEvent));
}

/**
 * RING_FINAL_CHECK_FOR_RESPONSES: before the frontend sleeps, ask to be woken
 * by the next response (rsp_event = rsp_cons + 1), then look again so a
 * response that raced with the store is not missed. True: there is work.
 */
export function finalCheckForResponses(words: Int32Array, rspCons: number): boolean {
  if (loadIdx(words, SringWord.rspProd) !== rspCons >>> 0) return true;
  storeIdx(words, SringWord.rspEvent, idxAdd(rspCons, 1));
  return loadIdx(words, SringWord.rspProd) !== rspCons >>> 0;
}

/** RING_FINAL_CHECK_FOR_REQUESTS: the backend's mirror of the above. */
export function finalCheckForRequests(words: Int32Array, reqCons: number): boolean {
  if (loadIdx(words, SringWord.reqProd) !== reqCons >>> 0) return true;
  storeIdx(words, SringWord.reqEvent, idxAdd(reqCons, 1));
  return loadIdx(words, SringWord.reqProd) !== reqCons >>> 0;
}

/** Byte offset of entry `idx` (free running) in a ring of `entries` slots. */
export function entryOffset(idx: number, entries: number, entrySize: number): number {
  return SRING_HEADER_SIZE + (idx & (entries - 1)) * entrySize;
}
