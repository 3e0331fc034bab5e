/**
 * The frontend ring and its shadow ids, over plain shared memory with the
 * backend's side played by the wire module's ring.h functions.
 */
import { describe, expect, it } from 'vitest';
import { FrontRing, ShadowIds, spinsFor } from '../../src/blkfront/ring.js';
import { BLKIF_NATIVE_ABI, BlkifOp, newRequestFields, readRequest, setRequestHeader, setResponse } from '../../src/wire/blkif.js';
import { SringWord, entryOffset, finalCheckForRequests, loadIdx, pushResponsesAndCheckNotify, storeIdx } from '../../src/wire/ring.js';
import { isXenError } from '../../src/errors.js';

const abi = BLKIF_NATIVE_ABI;

function ringOf(pages: number, start?: number): { ring: FrontRing; words: Int32Array; view: DataView } {
  const bytes = new Uint8Array(new SharedArrayBuffer(pages * 4096));
  const words = new Int32Array(bytes.buffer, 0, 16);
  if (start !== undefined) {
    // A ring whose indices are about to wrap: attach to it instead of initialising.
    for (const w of [SringWord.reqProd, SringWord.rspProd]) storeIdx(words, w, start);
    storeIdx(words, SringWord.reqEvent, start + 1);
    storeIdx(words, SringWord.rspEvent, start + 1);
  }
  return { ring: new FrontRing(bytes, abi, start === undefined), words, view: new DataView(bytes.buffer) };
}

/** The backend answers every request on the ring, ring.h style; returns whether it notified. */
function answer(words: Int32Array, view: DataView, entries: number, rspProd: number, n: number): { rspProd: number; notify: boolean } {
  let notify = false;
  for (let i = 0; i < n; i++) {
    const off = entryOffset(rspProd, entries, abi.entrySize);
    const r = readRequest(abi, view, off, newRequestFields());
    setResponse(abi, view, off, r.idLo, r.idHi, r.dataOp, 0);
    rspProd = (rspProd + 1) >>> 0;
    notify = pushResponsesAndCheckNotify(words, rspProd) || notify;
  }
  return { rspProd, notify };
}

describe('FrontRing', () => {
  it.each([
    [1, 32],
    [2, 64],
    [4, 128],
    [8, 256],
    [16, 512],
  ])('%i page(s) hold %i entries', (pages, entries) => {
    expect(ringOf(pages).ring.entries).toBe(entries);
  });

  it('fills to exactly its size, notifies once for a sleeping backend, and frees slots as responses come', () => {
    const { ring, words, view } = ringOf(1);
    const ids = new ShadowIds(ring.entries);
    for (let i = 0; i < 32; i++) {
      const slot = ids.alloc();
      setRequestHeader(abi, ring.view, ring.requestOffset(), BlkifOp.Read, 1, 0, slot, ids.generation(slot), i);
      ring.produced();
    }
    expect(ring.freeSlots).toBe(0);
    expect(ids.free).toBe(0);
    expect(ring.push()).toBe(true); // req_event was 1: the backend asked for the first request
    expect(ring.push()).toBe(false); // nothing new
    // The backend consumes 32 and goes back to sleep (req_event = 33).
    expect(finalCheckForRequests(words, 32)).toBe(false);
    const a = answer(words, view, 32, 0, 32);
    expect(a.notify).toBe(true);
    const seen: number[] = [];
    expect(
      ring.consume((lo, hi, op, status) => {
        expect(ids.valid(lo, hi)).toBe(true);
        expect([op, status]).toEqual([BlkifOp.Read, 0]);
        ids.release(lo);
        seen.push(lo);
      }),
    ).toBe(32);
    expect(seen).toEqual(Array.from({ length: 32 }, (_, i) => i));
    expect(ring.freeSlots).toBe(32);
    expect(loadIdx(words, SringWord.rspEvent)).toBe(33); // RING_FINAL_CHECK_FOR_RESPONSES armed the next one
  });

  it('keeps working across the u32 wrap of the indices', () => {
    const start = 0xffffffff - 20;
    const { ring, words, view } = ringOf(1, start);
    let rsp = start;
    let total = 0;
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 20; i++) {
        setRequestHeader(abi, ring.view, ring.requestOffset(), BlkifOp.Write, 1, 0, i, 0, i);
        ring.produced();
      }
      ring.push();
      rsp = answer(words, view, 32, rsp, 20).rspProd;
      total += ring.consume(() => undefined);
    }
    expect(total).toBe(80);
    expect(loadIdx(words, SringWord.reqProd)).toBe((start + 80) >>> 0);
  });

  it('does not trust an rsp_prod past what was asked, or past the ring', () => {
    const { ring, words } = ringOf(1);
    ring.produced();
    ring.produced();
    ring.push();
    const calls: number[] = [];
    storeIdx(words, SringWord.rspProd, 3); // three answers to two requests
    let err: unknown;
    try {
      ring.consume((lo) => calls.push(lo));
    } catch (e) {
      err = e;
    }
    expect(isXenError(err, 'BLKIF_EPROTO')).toBe(true);
    expect(calls).toEqual([]); // nothing was read from a slot
    storeIdx(words, SringWord.rspProd, 0x80000000);
    expect(() => ring.consume(() => undefined)).toThrow(/rsp_prod/);
  });
});

describe('ShadowIds', () => {
  it('hands out every slot once, recycles in FIFO order and rejects stale generations', () => {
    const ids = new ShadowIds(4);
    const a = [ids.alloc(), ids.alloc(), ids.alloc(), ids.alloc()];
    expect(a).toEqual([0, 1, 2, 3]);
    expect(ids.free).toBe(0);
    const g2 = ids.generation(2);
    ids.release(2);
    expect(ids.valid(2, g2)).toBe(false); // answered already: a duplicate is refused
    ids.release(0);
    expect(ids.alloc()).toBe(2); // oldest free first
    expect(ids.valid(2, g2)).toBe(false); // reused under a new generation
    expect(ids.valid(2, g2 + 1)).toBe(true);
    expect(ids.valid(4, 0)).toBe(false);
    expect(ids.valid(0xffffffff, 1)).toBe(false);
    expect(ids.free).toBe(1);
    expect([1, 2, 3, 0].map((slot) => ids.valid(slot, ids.generation(slot)))).toEqual([true, true, true, false]);
  });
});

describe('FrontRing polling', () => {
  it('takes responses without asking for an event, and spins only until one is there', () => {
    const { ring, words, view } = ringOf(1);
    for (let i = 0; i < 4; i++) {
      setRequestHeader(abi, ring.view, ring.requestOffset(), BlkifOp.Read, 1, 0, i, 0, i);
      ring.produced();
    }
    ring.push();
    expect(ring.spin(1000)).toBe(false); // nothing answered: it gave up after its reads
    const a = answer(words, view, 32, 0, 2);
    expect(a.notify).toBe(true); // rsp_event started at 1
    expect(ring.spin(1)).toBe(true);
    expect(ring.consume(() => undefined, false)).toBe(2);
    expect(loadIdx(words, SringWord.rspEvent)).toBe(1); // not moved: the next answers raise no event
    const b = answer(words, view, 32, a.rspProd, 2);
    expect(b.notify).toBe(false);
    expect(ring.consume(() => undefined, true)).toBe(2);
    expect(loadIdx(words, SringWord.rspEvent)).toBe(5); // armed again when the poller stops
    expect(ring.spin(10)).toBe(false);
  });

  it('turns microseconds into a count of reads once, and none for zero', () => {
    expect(spinsFor(0)).toBe(0);
    const one = spinsFor(1);
    expect(one).toBeGreaterThanOrEqual(1);
    expect(spinsFor(1000)).toBeGreaterThanOrEqual(one * 100);
  });
});
