import { describe, expect, it } from 'vitest';
import {
  BLKIF_ABI_X86_32, BLKIF_ABI_X86_64, BLKIF_MAX_INDIRECT_SEGMENTS, BlkifOp, blkifAbiByProtocol,
  decodeDiscardRequest, decodeIndirectRequest, decodeRequest, decodeResponse, encodeDiscardRequest,
  encodeIndirectRequest, encodeRequest, encodeResponse, peekOperation, type BlkifAbi,
} from '../../src/wire/blkif.js';
import { decodeGrantEntryV1, encodeGrantEntryV1, GTF_permit_access, GTF_readonly } from '../../src/wire/grant_table.js';

const abis: BlkifAbi[] = [BLKIF_ABI_X86_64, BLKIF_ABI_X86_32];

describe.each(abis)('blkif $protocol', (abi) => {
  it('round-trips a full 11-segment request at a ring slot', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize * 3));
    const seg = Array.from({ length: 11 }, (_, i) => ({ gref: 0xfffffff0 + i, firstSect: i % 8, lastSect: 7 }));
    const req = { operation: BlkifOp.Write, nrSegments: 11, handle: 51712, id: 0xfedcba9876543210n, sectorNumber: (1n << 40n) + 7n, seg };
    encodeRequest(abi, view, abi.entrySize, req);
    expect(decodeRequest(abi, view, abi.entrySize)).toEqual(req);
    expect(peekOperation(abi, view, abi.entrySize)).toBe(BlkifOp.Write);
    // Nothing written outside the slot.
    expect(new Uint8Array(view.buffer, 0, abi.entrySize).every((b) => b === 0)).toBe(true);
    expect(new Uint8Array(view.buffer, 2 * abi.entrySize).every((b) => b === 0)).toBe(true);
  });

  it('rejects 12 direct segments and bad sector bounds', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize));
    const seg = Array.from({ length: 12 }, () => ({ gref: 1, firstSect: 0, lastSect: 7 }));
    expect(() => encodeRequest(abi, view, 0, { operation: 0, nrSegments: 12, handle: 0, id: 0n, sectorNumber: 0n, seg })).toThrow(RangeError);
    expect(() => encodeRequest(abi, view, 0, { operation: 0, nrSegments: 1, handle: 0, id: 0n, sectorNumber: 0n, seg: [{ gref: 1, firstSect: 0, lastSect: 8 }] })).toThrow(/last_sect/);
    expect(() => encodeRequest(abi, view, 0, { operation: 0, nrSegments: 1, handle: 0, id: 0n, sectorNumber: 0n, seg: [{ gref: 1, firstSect: 5, lastSect: 4 }] })).toThrow(/last_sect/);
    expect(() => encodeRequest(abi, view, 0, { operation: 0, nrSegments: 0, handle: 0, id: -1n, sectorNumber: 0n, seg: [] })).toThrow(/u64/);
  });

  it('clamps a hostile nr_segments when decoding', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize));
    view.setUint8(abi.request.nrSegments, 200);
    const r = decodeRequest(abi, view, 0);
    expect(r.nrSegments).toBe(200);
    expect(r.seg.length).toBe(11);
  });

  it('round-trips indirect requests up to the protocol maximum', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize));
    for (const n of [1, 512, 513, BLKIF_MAX_INDIRECT_SEGMENTS]) {
      const pages = Math.ceil(n / 512);
      const req = { operation: BlkifOp.Indirect, indirectOp: BlkifOp.Read, nrSegments: n, id: 42n, sectorNumber: 9n, handle: 3, indirectGrefs: Array.from({ length: pages }, (_, i) => 100 + i) } as const;
      encodeIndirectRequest(abi, view, 0, { ...req, indirectGrefs: [...req.indirectGrefs] });
      expect(decodeIndirectRequest(abi, view, 0)).toEqual({ ...req, indirectGrefs: [...req.indirectGrefs] });
    }
    expect(() => encodeIndirectRequest(abi, view, 0, { operation: 6, indirectOp: 0, nrSegments: BLKIF_MAX_INDIRECT_SEGMENTS + 1, id: 0n, sectorNumber: 0n, handle: 0, indirectGrefs: [] })).toThrow(RangeError);
    expect(() => encodeIndirectRequest(abi, view, 0, { operation: 6, indirectOp: 0, nrSegments: 600, id: 0n, sectorNumber: 0n, handle: 0, indirectGrefs: [1] })).toThrow(/indirect pages/);
  });

  it('round-trips discard requests and responses', () => {
    const view = new DataView(new ArrayBuffer(abi.entrySize));
    const d = { operation: BlkifOp.Discard, flag: 1, handle: 7, id: 3n, sectorNumber: 2048n, nrSectors: 0xffffffffffn } as const;
    encodeDiscardRequest(abi, view, 0, { ...d });
    expect(decodeDiscardRequest(abi, view, 0)).toEqual(d);
    const rsp = { id: 0xffffffffffffffffn, operation: BlkifOp.Discard, status: -2 };
    encodeResponse(abi, view, 0, rsp);
    expect(decodeResponse(abi, view, 0)).toEqual(rsp);
    expect(() => encodeResponse(abi, view, 0, { id: 0n, operation: 0, status: 40000 })).toThrow(/i16/);
  });
});

describe('blkif golden bytes', () => {
  it('x86_64 request bytes are what blkif.h lays out', () => {
    const view = new DataView(new ArrayBuffer(112));
    encodeRequest(BLKIF_ABI_X86_64, view, 0, { operation: 1, nrSegments: 1, handle: 0x0201, id: 0x0807060504030201n, sectorNumber: 0x10n, seg: [{ gref: 0xaabbccdd, firstSect: 1, lastSect: 6 }] });
    const b = [...new Uint8Array(view.buffer, 0, 32)];
    expect(b).toEqual([1, 1, 1, 2, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, 0, 0, 0, 0, 0, 0, 0, 0xdd, 0xcc, 0xbb, 0xaa, 1, 6, 0, 0]);
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
