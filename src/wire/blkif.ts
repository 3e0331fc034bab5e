/**
 * Block device interface (xen/io/blkif.h). Pure: constants, per-ABI offset
 * tables and encoders/decoders over a DataView. The ABI is data handed to one
 * marshaller, not a second copy of the code: x86_32 differs from x86_64 only
 * because i386 aligns uint64_t members to 4 bytes.
 */

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
/** Xen's page size: grants and segments are in these units. */
export const XEN_PAGE_SIZE = 4096;
/** Sector numbers, first_sect and last_sect are always in 512-byte units. */
export const BLKIF_SECTOR_SIZE = 512;
/** Sectors in one page: last_sect is at most this minus one. */
export const SECTORS_PER_PAGE = XEN_PAGE_SIZE / BLKIF_SECTOR_SIZE;

/** sizeof(struct blkif_request_segment): gref u32 @0, first_sect u8 @4, last_sect u8 @5. */
export const BLKIF_SEGMENT_SIZE = 8;
export const SegmentOffset = { gref: 0, firstSect: 4, lastSect: 5 } as const;
/** Segments that fit in one indirect page (PAGE_SIZE / sizeof(segment)). */
export const SEGS_PER_INDIRECT_FRAME = XEN_PAGE_SIZE / BLKIF_SEGMENT_SIZE;
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

export interface BlkifSegment {
  gref: number;
  firstSect: number;
  lastSect: number;
}

export interface BlkifRequest {
  operation: number;
  nrSegments: number;
  handle: number;
  id: bigint;
  sectorNumber: bigint;
  seg: BlkifSegment[];
}

export interface BlkifRequestIndirect {
  operation: typeof BlkifOp.Indirect;
  indirectOp: number;
  nrSegments: number;
  id: bigint;
  sectorNumber: bigint;
  handle: number;
  indirectGrefs: number[];
}

export interface BlkifRequestDiscard {
  operation: typeof BlkifOp.Discard;
  flag: number;
  handle: number;
  id: bigint;
  sectorNumber: bigint;
  nrSectors: bigint;
}

export interface BlkifResponse {
  id: bigint;
  operation: number;
  status: number;
}

function checkRange(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${name} = ${v} is out of range 0..${max}`);
}
function checkU64(name: string, v: bigint): void {
  if (v < 0n || v > 0xffffffffffffffffn) throw new RangeError(`${name} = ${v} is not a u64`);
}

export function encodeSegment(view: DataView, off: number, s: BlkifSegment): void {
  checkRange('gref', s.gref, 0xffffffff);
  checkRange('first_sect', s.firstSect, SECTORS_PER_PAGE - 1);
  checkRange('last_sect', s.lastSect, SECTORS_PER_PAGE - 1);
  if (s.lastSect < s.firstSect) throw new RangeError(`last_sect ${s.lastSect} < first_sect ${s.firstSect}`);
  view.setUint32(off + SegmentOffset.gref, s.gref, true);
  view.setUint8(off + SegmentOffset.firstSect, s.firstSect);
  view.setUint8(off + SegmentOffset.lastSect, s.lastSect);
}

/** Reads a segment as written; the backend side validates first/last_sect. */
export function decodeSegment(view: DataView, off: number): BlkifSegment {
  return {
    gref: view.getUint32(off + SegmentOffset.gref, true),
    firstSect: view.getUint8(off + SegmentOffset.firstSect),
    lastSect: view.getUint8(off + SegmentOffset.lastSect),
  };
}

/** Writes a direct request (READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE) at `off`. */
export function encodeRequest(abi: BlkifAbi, view: DataView, off: number, r: BlkifRequest): void {
  const o = abi.request;
  checkRange('operation', r.operation, 0xff);
  checkRange('nr_segments', r.nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST);
  checkRange('handle', r.handle, 0xffff);
  checkU64('id', r.id);
  checkU64('sector_number', r.sectorNumber);
  if (r.seg.length < r.nrSegments) throw new RangeError(`nr_segments ${r.nrSegments} but ${r.seg.length} segments given`);
  view.setUint8(off + o.operation, r.operation);
  view.setUint8(off + o.nrSegments, r.nrSegments);
  view.setUint16(off + o.handle, r.handle, true);
  view.setBigUint64(off + o.id, r.id, true);
  view.setBigUint64(off + o.sectorNumber, r.sectorNumber, true);
  for (let i = 0; i < r.nrSegments; i++) encodeSegment(view, off + o.seg + i * BLKIF_SEGMENT_SIZE, r.seg[i]!);
}

/**
 * Reads a direct request. Segment count is clamped to the array size so a
 * hostile nr_segments cannot read past the slot; the caller still sees the
 * value written in `nrSegments` and must reject it.
 */
export function decodeRequest(abi: BlkifAbi, view: DataView, off: number): BlkifRequest {
  const o = abi.request;
  const nrSegments = view.getUint8(off + o.nrSegments);
  const n = Math.min(nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST);
  const seg: BlkifSegment[] = [];
  for (let i = 0; i < n; i++) seg.push(decodeSegment(view, off + o.seg + i * BLKIF_SEGMENT_SIZE));
  return {
    operation: view.getUint8(off + o.operation),
    nrSegments,
    handle: view.getUint16(off + o.handle, true),
    id: view.getBigUint64(off + o.id, true),
    sectorNumber: view.getBigUint64(off + o.sectorNumber, true),
    seg,
  };
}

export function encodeIndirectRequest(abi: BlkifAbi, view: DataView, off: number, r: BlkifRequestIndirect): void {
  const o = abi.indirect;
  checkRange('indirect_op', r.indirectOp, 0xff);
  checkRange('nr_segments', r.nrSegments, BLKIF_MAX_INDIRECT_SEGMENTS);
  checkRange('handle', r.handle, 0xffff);
  checkU64('id', r.id);
  checkU64('sector_number', r.sectorNumber);
  const pages = Math.ceil(r.nrSegments / SEGS_PER_INDIRECT_FRAME);
  if (r.indirectGrefs.length < pages) throw new RangeError(`${r.nrSegments} segments need ${pages} indirect pages, ${r.indirectGrefs.length} given`);
  view.setUint8(off + o.operation, BlkifOp.Indirect);
  view.setUint8(off + o.indirectOp, r.indirectOp);
  view.setUint16(off + o.nrSegments, r.nrSegments, true);
  view.setBigUint64(off + o.id, r.id, true);
  view.setBigUint64(off + o.sectorNumber, r.sectorNumber, true);
  view.setUint16(off + o.handle, r.handle, true);
  for (let i = 0; i < pages; i++) {
    checkRange('indirect_gref', r.indirectGrefs[i]!, 0xffffffff);
    view.setUint32(off + o.indirectGrefs + 4 * i, r.indirectGrefs[i]!, true);
  }
}

/** Reads an indirect request; the gref list is clamped to the array size. */
export function decodeIndirectRequest(abi: BlkifAbi, view: DataView, off: number): BlkifRequestIndirect {
  const o = abi.indirect;
  const nrSegments = view.getUint16(off + o.nrSegments, true);
  const pages = Math.min(Math.ceil(nrSegments / SEGS_PER_INDIRECT_FRAME), BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
  const indirectGrefs: number[] = [];
  for (let i = 0; i < pages; i++) indirectGrefs.push(view.getUint32(off + o.indirectGrefs + 4 * i, true));
  return {
    operation: BlkifOp.Indirect,
    indirectOp: view.getUint8(off + o.indirectOp),
    nrSegments,
    id: view.getBigUint64(off + o.id, true),
    sectorNumber: view.getBigUint64(off + o.sectorNumber, true),
    handle: view.getUint16(off + o.handle, true),
    indirectGrefs,
  };
}

export function encodeDiscardRequest(abi: BlkifAbi, view: DataView, off: number, r: BlkifRequestDiscard): void {
  const o = abi.discard;
  checkRange('flag', r.flag, 0xff);
  checkRange('handle', r.handle, 0xffff);
  checkU64('id', r.id);
  checkU64('sector_number', r.sectorNumber);
  checkU64('nr_sectors', r.nrSectors);
  view.setUint8(off + o.operation, BlkifOp.Discard);
  view.setUint8(off + o.flag, r.flag);
  view.setUint16(off + o.handle, r.handle, true);
  view.setBigUint64(off + o.id, r.id, true);
  view.setBigUint64(off + o.sectorNumber, r.sectorNumber, true);
  view.setBigUint64(off + o.nrSectors, r.nrSectors, true);
}

export function decodeDiscardRequest(abi: BlkifAbi, view: DataView, off: number): BlkifRequestDiscard {
  const o = abi.discard;
  return {
    operation: BlkifOp.Discard,
    flag: view.getUint8(off + o.flag),
    handle: view.getUint16(off + o.handle, true),
    id: view.getBigUint64(off + o.id, true),
    sectorNumber: view.getBigUint64(off + o.sectorNumber, true),
    nrSectors: view.getBigUint64(off + o.nrSectors, true),
  };
}

/** The operation byte of whatever request sits at `off` (same offset in every request type). */
export function peekOperation(abi: BlkifAbi, view: DataView, off: number): number {
  return view.getUint8(off + abi.request.operation);
}

export function encodeResponse(abi: BlkifAbi, view: DataView, off: number, r: BlkifResponse): void {
  const o = abi.response;
  checkU64('id', r.id);
  checkRange('operation', r.operation, 0xff);
  if (!Number.isInteger(r.status) || r.status < -0x8000 || r.status > 0x7fff) throw new RangeError(`status ${r.status} is not an i16`);
  view.setBigUint64(off + o.id, r.id, true);
  view.setUint8(off + o.operation, r.operation);
  view.setInt16(off + o.status, r.status, true);
}

/** Reads a response as the backend wrote it: the caller checks id and operation. */
export function decodeResponse(abi: BlkifAbi, view: DataView, off: number): BlkifResponse {
  const o = abi.response;
  return {
    id: view.getBigUint64(off + o.id, true),
    operation: view.getUint8(off + o.operation),
    status: view.getInt16(off + o.status, true),
  };
}

/*
 * Hot-path accessors. The frontend writes a request and reads a response per
 * I/O; the object-based encoders above allocate (segment arrays, BigInts), so
 * the data path uses these instead. A u64 is handled as two u32 halves: ids
 * are (slot, generation) pairs and sector numbers stay below 2^53.
 */

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

/** Reads a u64 as a number; values above 2^53 lose precision (callers range-check first). */
export function getU64Number(view: DataView, off: number): number {
  return view.getUint32(off + 4, true) * 0x100000000 + view.getUint32(off, true);
}

/**
 * Writes the header of a direct request (everything but the segments) with
 * id = hi:lo. The segments are written with {@link setSegment}.
 */
export function setRequestHeader(
  abi: BlkifAbi, view: DataView, off: number,
  operation: number, nrSegments: number, handle: number, idLo: number, idHi: number, sector: number,
): void {
  const o = abi.request;
  view.setUint8(off + o.operation, operation);
  view.setUint8(off + o.nrSegments, nrSegments);
  view.setUint16(off + o.handle, handle, true);
  setU64(view, off + o.id, idLo, idHi);
  setU64Number(view, off + o.sectorNumber, sector);
}

/** Writes one segment descriptor (in a request slot or an indirect page). */
export function setSegment(view: DataView, off: number, gref: number, firstSect: number, lastSect: number): void {
  view.setUint32(off + SegmentOffset.gref, gref, true);
  view.setUint8(off + SegmentOffset.firstSect, firstSect);
  view.setUint8(off + SegmentOffset.lastSect, lastSect);
}

/** Writes the header of an indirect request; the grefs are written with {@link setIndirectGref}. */
export function setIndirectHeader(
  abi: BlkifAbi, view: DataView, off: number,
  indirectOp: number, nrSegments: number, handle: number, idLo: number, idHi: number, sector: number,
): void {
  const o = abi.indirect;
  view.setUint8(off + o.operation, BlkifOp.Indirect);
  view.setUint8(off + o.indirectOp, indirectOp);
  view.setUint16(off + o.nrSegments, nrSegments, true);
  setU64(view, off + o.id, idLo, idHi);
  setU64Number(view, off + o.sectorNumber, sector);
  view.setUint16(off + o.handle, handle, true);
}

export function setIndirectGref(abi: BlkifAbi, view: DataView, off: number, i: number, gref: number): void {
  view.setUint32(off + abi.indirect.indirectGrefs + 4 * i, gref, true);
}

/** Writes a discard request with id = hi:lo. */
export function setDiscardRequest(
  abi: BlkifAbi, view: DataView, off: number,
  flag: number, handle: number, idLo: number, idHi: number, sector: number, nrSectors: number,
): void {
  const o = abi.discard;
  view.setUint8(off + o.operation, BlkifOp.Discard);
  view.setUint8(off + o.flag, flag);
  view.setUint16(off + o.handle, handle, true);
  setU64(view, off + o.id, idLo, idHi);
  setU64Number(view, off + o.sectorNumber, sector);
  setU64Number(view, off + o.nrSectors, nrSectors);
}
