import { describe, expect, it } from 'vitest';
import {
  BLKIF_ABI_X86_32,
  BLKIF_ABI_X86_64,
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
  BLKIF_MAX_INDIRECT_SEGMENTS,
  BlkifOp,
  SEGS_PER_INDIRECT_FRAME,
  blkifAbiByProtocol,
  getIndirectGref,
  getSegment,
  newRequestFields,
  newResponseFields,
  readRequest,
  readResponse,
  segmentOffset,
  setDiscardRequest,
  setIndirectGref,
  setIndirectHeader,
  setRequestHeader,
  setResponse,
  setSegment,
  type BlkifAbi,
} from '../../src/wire/blkif.js';
import { decodeGrantEntryV1, encodeGrantEntryV1, GTF_permit_access, GTF_readonly } from '../../src/wire/grant_table.js';

const abis: BlkifAbi[] = [BLKIF_ABI_X86_64, BLKIF_ABI_X86_32];

/** Every segment of a direct request at `off`, read back. */
function segments(abi: BlkifAbi, v: DataView, off: number, n: number): Array<[number, number, number]> {
  return Array.from({ length: n }, (_, i) => {
    const s = getSegment(v, segmentOffset(abi, off, i), { gref: 0, firstSect: 0, lastSect: 0 });
    return [s.gref, s.firstSect, s.lastSect];
  });
}

describe.each(abis)('blkif $protocol: one codec, written by one end and read by the other', (abi) => {
  it('a full 11-segment request at a ring slot, nothing written outside it', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize * 3));
    const off = abi.entrySize;
    const segs = Array.from({ length: 11 }, (_, i): [number, number, number] => [0xfffffff0 + i, i % 8, 7]);
    setRequestHeader(abi, view, off, BlkifOp.Write, 11, 51712, 0x76543210, 0xfedcba98, 2 ** 40 + 7);
    segs.forEach(([g, f, l], i) => setSegment(view, segmentOffset(abi, off, i), g, f, l));
    expect(readRequest(abi, view, off, newRequestFields())).toEqual({
      operation: BlkifOp.Write,
      dataOp: BlkifOp.Write,
      nrSegments: 11,
      handle: 51712,
      idLo: 0x76543210,
      idHi: 0xfedcba98,
      sector: 2 ** 40 + 7,
      nrSectors: 0,
      flag: 0,
    });
    expect(segments(abi, view, off, 11)).toEqual(segs);
    expect(new Uint8Array(view.buffer, 0, abi.entrySize).every((b) => b === 0)).toBe(true);
    expect(new Uint8Array(view.buffer, 2 * abi.entrySize).every((b) => b === 0)).toBe(true);
  });

  it('reads a hostile nr_segments as written (the backend rejects it), and the largest sector exactly', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize));
    setRequestHeader(abi, view, 0, BlkifOp.Read, 200, 0, 1, 0, Number.MAX_SAFE_INTEGER);
    const r = readRequest(abi, view, 0, newRequestFields());
    expect(r.nrSegments).toBe(200);
    expect(r.sector).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('indirect requests up to the protocol maximum, header and every gref', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize));
    for (const n of [1, 512, 513, BLKIF_MAX_INDIRECT_SEGMENTS]) {
      const pages = Math.ceil(n / SEGS_PER_INDIRECT_FRAME);
      setIndirectHeader(abi, view, 0, BlkifOp.Read, n, 3, 42, 7, 9);
      for (let i = 0; i < pages; i++) setIndirectGref(abi, view, 0, i, 100 + i);
      expect(readRequest(abi, view, 0, newRequestFields())).toEqual({
        operation: BlkifOp.Indirect,
        dataOp: BlkifOp.Read,
        nrSegments: n,
        handle: 3,
        idLo: 42,
        idHi: 7,
        sector: 9,
        nrSectors: 0,
        flag: 0,
      });
      expect(Array.from({ length: pages }, (_, i) => getIndirectGref(abi, view, 0, i))).toEqual(
        Array.from({ length: pages }, (_, i) => 100 + i),
      );
    }
    // The last gref slot ends the struct: nothing past it.
    expect(abi.indirect.indirectGrefs + 4 * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST).toBeLessThanOrEqual(abi.indirect.size);
  });

  it('discard requests and responses', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize));
    setDiscardRequest(abi, view, 0, 1, 7, 3, 0, 2048, 0xffffffffff);
    expect(readRequest(abi, view, 0, newRequestFields())).toEqual({
      operation: BlkifOp.Discard,
      dataOp: BlkifOp.Discard,
      nrSegments: 0,
      handle: 7,
      idLo: 3,
      idHi: 0,
      sector: 2048,
      nrSectors: 0xffffffffff,
      flag: 1,
    });
    setResponse(abi, view, 0, 0xffffffff, 0xffffffff, BlkifOp.Discard, -2);
    expect(readResponse(abi, view, 0, newResponseFields())).toEqual({
      idLo: 0xffffffff,
      idHi: 0xffffffff,
      operation: BlkifOp.Discard,
      status: -2,
    });
  });

  it('a reused reader object carries nothing over from the last request', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize));
    const into = newRequestFields();
    setDiscardRequest(abi, view, 0, 1, 7, 3, 0, 2048, 16);
    readRequest(abi, view, 0, into);
    setRequestHeader(abi, view, 0, BlkifOp.FlushDiskcache, 0, 7, 4, 0, 0);
    expect(readRequest(abi, view, 0, into)).toMatchObject({ operation: BlkifOp.FlushDiskcache, nrSectors: 0, flag: 0, nrSegments: 0 });
  });
});

describe('blkif golden bytes', () => {
  it('x86_64 request bytes are what blkif.h lays out', () => {
    const view = new DataView(new ArrayBuffer(112));
    setRequestHeader(BLKIF_ABI_X86_64, view, 0, 1, 1, 0x0201, 0x04030201, 0x08070605, 0x10);
    setSegment(view, segmentOffset(BLKIF_ABI_X86_64, 0, 0), 0xaabbccdd, 1, 6);
    const b = [...new Uint8Array(view.buffer, 0, 32)];
    expect(b).toEqual([1, 1, 1, 2, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0, 0, 0, 0, 0, 0, 0, 0xdd, 0xcc, 0xbb, 0xaa, 1, 6, 0, 0]);
  });

  it('x86_32 puts the id at 4 and the sector at 12', () => {
    const view = new DataView(new ArrayBuffer(108));
    setRequestHeader(BLKIF_ABI_X86_32, view, 0, 0, 1, 0x0201, 0x04030201, 0x08070605, 0x10);
    expect([...new Uint8Array(view.buffer, 0, 20)]).toEqual([0, 1, 1, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('finds ABIs by protocol string', () => {
    expect(blkifAbiByProtocol('x86_32-abi')).toBe(BLKIF_ABI_X86_32);
    expect(blkifAbiByProtocol('x86_64-abi')).toBe(BLKIF_ABI_X86_64);
    expect(blkifAbiByProtocol('arm-abi')).toBeUndefined();
  });
});

describe('grant_entry_v1', () => {
  it('round-trips and writes flags last', () => {
    const view = new DataView(new ArrayBuffer(16));
    encodeGrantEntryV1(view, 8, { flags: GTF_permit_access | GTF_readonly, domid: 0, frame: 0x12345 });
    expect(decodeGrantEntryV1(view, 8)).toEqual({ flags: 5, domid: 0, frame: 0x12345 });
    expect([...new Uint8Array(view.buffer, 8)]).toEqual([5, 0, 0, 0, 0x45, 0x23, 0x01, 0]);
    expect(() => encodeGrantEntryV1(view, 0, { flags: 1, domid: 70000, frame: 0 })).toThrow(RangeError);
  });
});
