/**
 * Block device interface (xen/io/blkif.h). Pure: constants, per-ABI offset
 * tables and one codec over a DataView, used by both ends (the frontend and
 * the simulated backend). The ABI is data handed to the codec, not a second
 * copy of it: x86_32 differs from x86_64 only because i386 aligns uint64_t
 * members to 4 bytes.
 *
 *   struct blkif_request_segment {
 *       grant_ref_t gref;        // uint32_t: the page's grant
 *       uint8_t     first_sect, last_sect;   // 512-byte sectors within the page
 *   };
 *   struct blkif_request {                   // READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE
 *       uint8_t        operation;
 *       uint8_t        nr_segments;           // at most BLKIF_MAX_SEGMENTS_PER_REQUEST
 *       blkif_vdev_t   handle;                // uint16_t
 *       uint64_t       id;                    // echoed in the response
 *       blkif_sector_t sector_number;         // uint64_t, 512-byte units
 *       struct blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
 *   };
 *   struct blkif_request_discard {
 *       uint8_t operation;                    // BLKIF_OP_DISCARD
 *       uint8_t flag;                         // BLKIF_DISCARD_SECURE
 *       blkif_vdev_t handle;
 *       uint64_t id;
 *       blkif_sector_t sector_number;
 *       uint64_t nr_sectors;
 *   };
 *   struct blkif_request_indirect {
 *       uint8_t  operation;                   // BLKIF_OP_INDIRECT
 *       uint8_t  indirect_op;                 // READ or WRITE
 *       uint16_t nr_segments;                 // segments in the indirect pages
 *       uint64_t id;
 *       blkif_sector_t sector_number;
 *       blkif_vdev_t handle;
 *       uint16_t _pad2;
 *       grant_ref_t indirect_grefs[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
 *   };                                        // (i386 adds uint64_t pad3 to keep 64 bytes)
 *   struct blkif_response {
 *       uint64_t id;
 *       uint8_t  operation;
 *       int16_t  status;                      // BLKIF_RSP_*
 *   };
 *   union blkif_sring_entry { struct blkif_request req; struct blkif_response rsp; };
 */
import { PAGE_SIZE } from './page.js';

/** BLKIF_OP_* */
export const BlkifOp = {
  Read: 0,
  Write: 1,
  WriteBarrier: 2,
  FlushDiskcache: 3,
  Reserved1: 4,
  Discard: 5,
  Indirect: 6,
} as const;
export type BlkifOp = (typeof BlkifOp)[keyof typeof BlkifOp];

/** BLKIF_RSP_* */
export const BlkifRsp = { Okay: 0, Error: -1, EOpNotSupp: -2 } as const;

/** VDISK_* bits of the backend's `info` key. */
export const VDISK_CDROM = 0x1;
export const VDISK_REMOVABLE = 0x2;
export const VDISK_READONLY = 0x4;

/** BLKIF_DISCARD_SECURE: bit 0 of blkif_request_discard.flag. */
export const BLKIF_DISCARD_SECURE = 1 << 0;

/** BLKIF_MAX_SEGMENTS_PER_REQUEST: chosen so a 1-page ring holds 32 requests. */
export const BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
/** BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST. */
export const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8;
/** Sector numbers, first_sect and last_sect are always in 512-byte units. */
export const BLKIF_SECTOR_SIZE = 512;
/** Sectors in one page: last_sect is at most this minus one. */
export const SECTORS_PER_PAGE = PAGE_SIZE / BLKIF_SECTOR_SIZE;

/** sizeof(struct blkif_request_segment): gref u32 @0, first_sect u8 @4, last_sect u8 @5. */
export const BLKIF_SEGMENT_SIZE = 8;
export const SegmentOffset = { gref: 0, firstSect: 4, lastSect: 5 } as const;
/** Segments that fit in one indirect page (PAGE_SIZE / sizeof(segment)). */
export const SEGS_PER_INDIRECT_FRAME = PAGE_SIZE / BLKIF_SEGMENT_SIZE;
/** The protocol maximum for an indirect request (8 pages of 512 segments). */
export const BLKIF_MAX_INDIRECT_SEGMENTS = SEGS_PER_INDIRECT_FRAME * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST;

/** Offsets and sizes of one ABI. */
export interface BlkifAbi {
  /** The `protocol` string the frontend writes to xenstore (xen/io/protocols.h). */
  readonly protocol: string;
  /** struct blkif_request */
  readonly request: {
    readonly size: number;
    readonly operation: number;
    readonly nrSegments: number;
    readonly handle: number;
    readonly id: number;
    readonly sectorNumber: number;
    readonly seg: number;
  };
  /** struct blkif_request_indirect */
  readonly indirect: {
    readonly size: number;
    readonly operation: number;
    readonly indirectOp: number;
    readonly nrSegments: number;
    readonly id: number;
    readonly sectorNumber: number;
    readonly handle: number;
    readonly indirectGrefs: number;
  };
  /** struct blkif_request_discard */
  readonly discard: {
    readonly size: number;
    readonly operation: number;
    readonly flag: number;
    readonly handle: number;
    readonly id: number;
    readonly sectorNumber: number;
    readonly nrSectors: number;
  };
  /** struct blkif_response */
  readonly response: {
    readonly size: number;
    readonly id: number;
    readonly operation: number;
    readonly status: number;
  };
  /** sizeof(union blkif_sring_entry): the ring slot stride. */
  readonly entrySize: number;
}

/** x86_64 (and arm): natural alignment, uint64_t on 8 bytes. */
export const BLKIF_ABI_X86_64: BlkifAbi = {
  protocol: 'x86_64-abi',
  request: { size: 112, operation: 0, nrSegments: 1, handle: 2, id: 8, sectorNumber: 16, seg: 24 },
  indirect: { size: 64, operation: 0, indirectOp: 1, nrSegments: 2, id: 8, sectorNumber: 16, handle: 24, indirectGrefs: 28 },
  discard: { size: 32, operation: 0, flag: 1, handle: 2, id: 8, sectorNumber: 16, nrSectors: 24 },
  response: { size: 16, id: 0, operation: 8, status: 10 },
  entrySize: 112,
};

/** x86_32: uint64_t aligned to 4 bytes, so `id` moves to 4 and the response shrinks to 12. */
export const BLKIF_ABI_X86_32: BlkifAbi = {
  protocol: 'x86_32-abi',
  request: { size: 108, operation: 0, nrSegments: 1, handle: 2, id: 4, sectorNumber: 12, seg: 20 },
  // i386 adds an explicit 64-bit pad so the indirect request stays 64 bytes.
  indirect: { size: 64, operation: 0, indirectOp: 1, nrSegments: 2, id: 4, sectorNumber: 12, handle: 20, indirectGrefs: 24 },
  discard: { size: 28, operation: 0, flag: 1, handle: 2, id: 4, sectorNumber: 12, nrSectors: 20 },
  response: { size: 12, id: 0, operation: 8, status: 10 },
  entrySize: 108,
};

/** The ABI a frontend on this machine speaks. */
export const BLKIF_NATIVE_ABI = BLKIF_ABI_X86_64;

/** Finds an ABI by its `protocol` string; undefined for one this driver does not speak. */
export function blkifAbiByProtocol(protocol: string): BlkifAbi | undefined {
  return [BLKIF_ABI_X86_64, BLKIF_ABI_X86_32].find((a) => a.protocol === protocol);
}

/*
 * The codec, one for both ends, as MirageOS's blkproto marshals both the
 * frontend's and the backend's view with the same code: accessors at a slot
 * offset, with no allocation and no BigInt, since a request is written and a
 * response read per I/O. A u64 is two u32 halves: ids are (slot, generation)
 * pairs, and sector numbers are numbers, exact below 2^53 (a reader that
 * trusts nothing range-checks them, and anything above is past any disk).
 * Writers take values their caller has already bounded; readers return what
 * the other side wrote, unchecked: the consumer decides what is an error.
 */

/** One segment descriptor, as {@link getSegment} reads it. */
export interface BlkifSegment {
  gref: number;
  firstSect: number;
  lastSect: number;
}

/**
 * Any request, as {@link readRequest} reads it from a slot: the fields of
 * whichever of the three request structs its operation byte selects (the
 * others are left as they were). Reused by the reader, so reading allocates
 * nothing.
 */
export interface BlkifRequestFields {
  /** The slot's operation byte (BLKIF_OP_INDIRECT for an indirect request). */
  operation: number;
  /** indirect_op for an indirect request, else `operation`: what the response carries. */
  dataOp: number;
  /** nr_segments: u8 in a direct request, u16 in an indirect one; 0 for a discard. */
  nrSegments: number;
  handle: number;
  idLo: number;
  idHi: number;
  /** sector_number, in 512-byte units. */
  sector: number;
  /** Discard: nr_sectors. */
  nrSectors: number;
  /** Discard: flag (BLKIF_DISCARD_SECURE). */
  flag: number;
}

/** A response, as {@link readResponse} reads it. */
export interface BlkifResponseFields {
  idLo: number;
  idHi: number;
  operation: number;
  status: number;
}

export function newRequestFields(): BlkifRequestFields {
  return { operation: 0, dataOp: 0, nrSegments: 0, handle: 0, idLo: 0, idHi: 0, sector: 0, nrSectors: 0, flag: 0 };
}

export function newResponseFields(): BlkifResponseFields {
  return { idLo: 0, idHi: 0, operation: 0, status: 0 };
}

/** Writes a u64 from two u32 halves. */
export function setU64(view: DataView, off: number, lo: number, hi: number): void {
  view.setUint32(off, lo >>> 0, true);
  view.setUint32(off + 4, hi >>> 0, true);
}

/** Writes a u64 from a safe-integer number (sector numbers, sector counts). */
export function setU64Number(view: DataView, off: number, v: number): void {
  view.setUint32(off, v % 0x100000000, true);
  view.setUint32(off + 4, Math.floor(v / 0x100000000), true);
}

/** Reads a u64 as a number; values above 2^53 lose precision (callers range-check). */
export function getU64Number(view: DataView, off: number): number {
  return view.getUint32(off + 4, true) * 0x100000000 + view.getUint32(off, true);
}

/**
 * Writes the header of a direct request (everything but the segments) with
 * id = hi:lo. The segments are written with {@link setSegment}.
 */
export function setRequestHeader(
  abi: BlkifAbi,
  view: DataView,
  off: number,
  operation: number,
  nrSegments: number,
  handle: number,
  idLo: number,
  idHi: number,
  sector: number,
): void {
  const o = abi.request;
  view.setUint8(off + o.operation, operation);
  view.setUint8(off + o.nrSegments, nrSegments);
  view.setUint16(off + o.handle, handle, true);
  setU64(view, off + o.id, idLo, idHi);
  setU64Number(view, off + o.sectorNumber, sector);
}

/** Offset of direct segment `i` in a request slot at `off`. */
export function segmentOffset(abi: BlkifAbi, off: number, i: number): number {
  return off + abi.request.seg + i * BLKIF_SEGMENT_SIZE;
}

/** Writes one segment descriptor (in a request slot or an indirect page). */
export function setSegment(view: DataView, off: number, gref: number, firstSect: number, lastSect: number): void {
  view.setUint32(off + SegmentOffset.gref, gref, true);
  view.setUint8(off + SegmentOffset.firstSect, firstSect);
  view.setUint8(off + SegmentOffset.lastSect, lastSect);
}

/** Reads one segment descriptor into `into`. */
export function getSegment(view: DataView, off: number, into: BlkifSegment): BlkifSegment {
  into.gref = view.getUint32(off + SegmentOffset.gref, true);
  into.firstSect = view.getUint8(off + SegmentOffset.firstSect);
  into.lastSect = view.getUint8(off + SegmentOffset.lastSect);
  return into;
}

/** Writes the header of an indirect request; the grefs are written with {@link setIndirectGref}. */
export function setIndirectHeader(
  abi: BlkifAbi,
  view: DataView,
  off: number,
  indirectOp: number,
  nrSegments: number,
  handle: number,
  idLo: number,
  idHi: number,
  sector: number,
): void {
  const o = abi.indirect;
  view.setUint8(off + o.operation, BlkifOp.Indirect);
  view.setUint8(off + o.indirectOp, indirectOp);
  view.setUint16(off + o.nrSegments, nrSegments, true);
  setU64(view, off + o.id, idLo, idHi);
  setU64Number(view, off + o.sectorNumber, sector);
  view.setUint16(off + o.handle, handle, true);
}

/** Writes indirect_grefs[i] of an indirect request at `off`. */
export function setIndirectGref(abi: BlkifAbi, view: DataView, off: number, i: number, gref: number): void {
  view.setUint32(off + abi.indirect.indirectGrefs + 4 * i, gref, true);
}

/** Reads indirect_grefs[i] of an indirect request at `off` (i below BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST). */
export function getIndirectGref(abi: BlkifAbi, view: DataView, off: number, i: number): number {
  return view.getUint32(off + abi.indirect.indirectGrefs + 4 * i, true);
}

/** Writes a discard request with id = hi:lo. */
export function setDiscardRequest(
  abi: BlkifAbi,
  view: DataView,
  off: number,
  flag: number,
  handle: number,
  idLo: number,
  idHi: number,
  sector: number,
  nrSectors: number,
): void {
  const o = abi.discard;
  view.setUint8(off + o.operation, BlkifOp.Discard);
  view.setUint8(off + o.flag, flag);
  view.setUint16(off + o.handle, handle, true);
  setU64(view, off + o.id, idLo, idHi);
  setU64Number(view, off + o.sectorNumber, sector);
  setU64Number(view, off + o.nrSectors, nrSectors);
}

/**
 * Reads whatever request sits at `off` into `into`, by its operation byte:
 * an indirect request's header (its grefs with {@link getIndirectGref}), a
 * discard, or a direct request's header (its segments with
 * {@link getSegment} at {@link segmentOffset}).
 */
export function readRequest(abi: BlkifAbi, view: DataView, off: number, into: BlkifRequestFields): BlkifRequestFields {
  const op = view.getUint8(off + abi.request.operation);
  into.operation = op;
  into.nrSectors = 0;
  into.flag = 0;
  if (op === BlkifOp.Indirect) {
    const o = abi.indirect;
    into.dataOp = view.getUint8(off + o.indirectOp);
    into.nrSegments = view.getUint16(off + o.nrSegments, true);
    into.handle = view.getUint16(off + o.handle, true);
    into.idLo = view.getUint32(off + o.id, true);
    into.idHi = view.getUint32(off + o.id + 4, true);
    into.sector = getU64Number(view, off + o.sectorNumber);
  } else if (op === BlkifOp.Discard) {
    const o = abi.discard;
    into.dataOp = op;
    into.nrSegments = 0;
    into.flag = view.getUint8(off + o.flag);
    into.handle = view.getUint16(off + o.handle, true);
    into.idLo = view.getUint32(off + o.id, true);
    into.idHi = view.getUint32(off + o.id + 4, true);
    into.sector = getU64Number(view, off + o.sectorNumber);
    into.nrSectors = getU64Number(view, off + o.nrSectors);
  } else {
    const o = abi.request;
    into.dataOp = op;
    into.nrSegments = view.getUint8(off + o.nrSegments);
    into.handle = view.getUint16(off + o.handle, true);
    into.idLo = view.getUint32(off + o.id, true);
    into.idHi = view.getUint32(off + o.id + 4, true);
    into.sector = getU64Number(view, off + o.sectorNumber);
  }
  return into;
}

/** Writes a response (and zeroes its padding byte) with id = hi:lo. */
export function setResponse(
  abi: BlkifAbi,
  view: DataView,
  off: number,
  idLo: number,
  idHi: number,
  operation: number,
  status: number,
): void {
  const o = abi.response;
  setU64(view, off + o.id, idLo, idHi);
  view.setUint8(off + o.operation, operation);
  view.setUint8(off + o.operation + 1, 0);
  view.setInt16(off + o.status, status, true);
}

/** Reads a response as the backend wrote it into `into`: the caller checks id and operation. */
export function readResponse(abi: BlkifAbi, view: DataView, off: number, into: BlkifResponseFields): BlkifResponseFields {
  const o = abi.response;
  into.idLo = view.getUint32(off + o.id, true);
  into.idHi = view.getUint32(off + o.id + 4, true);
  into.operation = view.getUint8(off + o.operation);
  into.status = view.getInt16(off + o.status, true);
  return into;
}
