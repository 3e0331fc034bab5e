import { describe, expect, it } from 'vitest';
import {
  SringWord,
  entryOffset,
  finalCheckForRequests,
  idxAdd,
  idxSub,
  needsNotify,
  pushRequestsAndCheckNotify,
  pushResponsesAndCheckNotify,
  ringEntries,
  roundDownPow2,
  sringInit,
} from '../../src/wire/ring.js';

describe('ring.h arithmetic', () => {
  it('sizes rings as __CONST_RING_SIZE does', () => {
    expect([1, 2, 4, 8, 16].map((p) => ringEntries(p * 4096, 112))).toEqual([32, 64, 128, 256, 512]);
    expect(roundDownPow2(0)).toBe(0);
    expect(roundDownPow2(1)).toBe(1);
    expect(roundDownPow2(36)).toBe(32);
    // The xenstore-style 1-byte entries: 4032 round down to 2048.
    expect(ringEntries(4096, 1)).toBe(2048);
  });

  it('does u32 index arithmetic across the wrap', () => {
    expect(idxSub(2, 0xfffffffe)).toBe(4);
    expect(idxAdd(0xffffffff, 1)).toBe(0);
    expect(entryOffset(0xffffffff, 32, 112)).toBe(64 + 31 * 112);
    expect(entryOffset(0, 32, 112)).toBe(64);
  });

  it('notifies only when the event index was passed', () => {
    expect(needsNotify(0, 1, 1)).toBe(true);
    expect(needsNotify(1, 5, 1)).toBe(false); // event at old: already notified for it
    expect(needsNotify(1, 5, 6)).toBe(false); // event beyond new
    expect(needsNotify(1, 5, 5)).toBe(true);
    expect(needsNotify(0xfffffffe, 2, 0)).toBe(true); // passes through the wrap
    expect(needsNotify(5, 5, 5)).toBe(false); // nothing pushed
  });

  it('push-and-check and final-check drive a shared header', () => {
    const words = new Int32Array(new SharedArrayBuffer(64));
    sringInit(words);
    expect(pushRequestsAndCheckNotify(words, 1)).toBe(true); // req_event starts at 1
    expect(pushRequestsAndCheckNotify(words, 3)).toBe(false); // backend has not asked again
    // Backend consumes all three, then re-arms: the next push notifies.
    expect(finalCheckForRequests(words, 3)).toBe(false);
    expect(words[SringWord.reqEvent]).toBe(4);
    expect(pushRequestsAndCheckNotify(words, 4)).toBe(true);
    // Final check sees work that arrived before it could sleep.
    expect(finalCheckForRequests(words, 3)).toBe(true);
    expect(pushResponsesAndCheckNotify(words, 1)).toBe(true);
  });
});
