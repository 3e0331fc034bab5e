/**
 * Xenstore wire format (xen/io/xs_wire.h). Pure: constants, the frame header
 * and payload helpers. No I/O.
 *
 *   struct xsd_sockmsg {
 *       uint32_t type;   // XS_???
 *       uint32_t req_id; // echoed back by the daemon
 *       uint32_t tx_id;  // transaction id (0 if not in a transaction)
 *       uint32_t len;    // length of the payload that follows
 *   };
 * All fields little endian on every platform Xen runs guests on.
 */

/** sizeof(struct xsd_sockmsg). */
export const XS_HEADER_SIZE = 16;
/** Offsets in struct xsd_sockmsg. */
export const XsHeaderOffset = { type: 0, reqId: 4, txId: 8, len: 12 } as const;

/** XENSTORE_PAYLOAD_MAX: the daemon refuses (and the client rejects) anything longer. */
export const XENSTORE_PAYLOAD_MAX = 4096;
/** XENSTORE_ABS_PATH_MAX: longest absolute path. */
export const XENSTORE_ABS_PATH_MAX = 3072;
/** XENSTORE_REL_PATH_MAX: longest relative path. */
export const XENSTORE_REL_PATH_MAX = 2048;

/** enum xsd_sockmsg_type. */
export const XsType = {
  Control: 0,
  Directory: 1,
  Read: 2,
  GetPerms: 3,
  Watch: 4,
  Unwatch: 5,
  TransactionStart: 6,
  TransactionEnd: 7,
  Introduce: 8,
  Release: 9,
  GetDomainPath: 10,
  Write: 11,
  Mkdir: 12,
  Rm: 13,
  SetPerms: 14,
  WatchEvent: 15,
  Error: 16,
  IsDomainIntroduced: 17,
  Resume: 18,
  SetTarget: 19,
  // 20 was XS_RESTRICT, removed from Xen.
  ResetWatches: 21,
  DirectoryPart: 22,
} as const;
export type XsType = (typeof XsType)[keyof typeof XsType];

/** XS_TYPE_COUNT: one past the highest defined type. */
export const XS_TYPE_COUNT = 23;
/** XS_INVALID: guaranteed never to be a valid type. */
export const XS_INVALID = 0xffff;

const TYPE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(XsType).map(([k, v]) => [v, k]));

/** Human name of a message type, or `type<N>` for one this module does not know. */
export function xsTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `type${type}`;
}

/** True for the types xs_wire.h defines (20, the removed XS_RESTRICT, is not). */
export function isKnownXsType(type: number): boolean {
  return TYPE_NAMES[type] !== undefined;
}

/** Indices of the two strings in a WATCH_EVENT payload (enum xs_watch_type). */
export const XS_WATCH_PATH = 0;
export const XS_WATCH_TOKEN = 1;

/** A decoded frame header. */
export interface XsHeader {
  type: number;
  reqId: number;
  txId: number;
  len: number;
}

/** A whole frame: header fields plus payload bytes. */
export interface XsMessage extends XsHeader {
  payload: Uint8Array;
}

/** Reads the 16-byte header at `off`. Values are returned as read; the caller judges them. */
export function decodeHeader(buf: Uint8Array, off = 0): XsHeader {
  const dv = new DataView(buf.buffer, buf.byteOffset + off, XS_HEADER_SIZE);
  return {
    type: dv.getUint32(XsHeaderOffset.type, true),
    reqId: dv.getUint32(XsHeaderOffset.reqId, true),
    txId: dv.getUint32(XsHeaderOffset.txId, true),
    len: dv.getUint32(XsHeaderOffset.len, true),
  };
}

function assertU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new RangeError(`xsd_sockmsg.${name} must be a u32, got ${v}`);
  }
}

/** Writes a header at `off`. Every field is checked to be a u32. */
export function encodeHeader(buf: Uint8Array, off: number, h: XsHeader): void {
  assertU32('type', h.type);
  assertU32('req_id', h.reqId);
  assertU32('tx_id', h.txId);
  assertU32('len', h.len);
  const dv = new DataView(buf.buffer, buf.byteOffset + off, XS_HEADER_SIZE);
  dv.setUint32(XsHeaderOffset.type, h.type, true);
  dv.setUint32(XsHeaderOffset.reqId, h.reqId, true);
  dv.setUint32(XsHeaderOffset.txId, h.txId, true);
  dv.setUint32(XsHeaderOffset.len, h.len, true);
}

/**
 * Builds one frame (header + payload) in a single buffer, so it can be written
 * with one call. Throws RangeError for payloads over XENSTORE_PAYLOAD_MAX:
 * the daemon would drop the connection rather than answer.
 */
export function encodeMessage(type: number, reqId: number, txId: number, payload: Uint8Array): Uint8Array {
  if (payload.length > XENSTORE_PAYLOAD_MAX) {
    throw new RangeError(`xenstore payload of ${payload.length} bytes exceeds XENSTORE_PAYLOAD_MAX (${XENSTORE_PAYLOAD_MAX})`);
  }
  const out = new Uint8Array(XS_HEADER_SIZE + payload.length);
  encodeHeader(out, 0, { type, reqId, txId, len: payload.length });
  out.set(payload, XS_HEADER_SIZE);
  return out;
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

/**
 * Joins strings into a payload, each followed by NUL: `a\0b\0`. Pass
 * `trailingNul = false` for the last string of a WRITE, whose value is raw
 * bytes up to the end of the payload.
 */
export function joinPayload(parts: readonly (string | Uint8Array)[], trailingNul = true): Uint8Array {
  const enc = parts.map((p) => (typeof p === 'string' ? utf8.encode(p) : p));
  let len = 0;
  for (const e of enc) len += e.length + 1;
  if (!trailingNul && enc.length > 0) len -= 1;
  const out = new Uint8Array(len);
  let off = 0;
  enc.forEach((e, i) => {
    out.set(e, off);
    off += e.length;
    if (trailingNul || i < enc.length - 1) out[off++] = 0;
  });
  return out;
}

/**
 * Splits a NUL-separated payload into strings. A trailing NUL ends the last
 * string rather than starting an empty one (`a\0b\0` is ['a', 'b']).
 */
export function splitPayload(payload: Uint8Array): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] === 0) {
      out.push(utf8d.decode(payload.subarray(start, i)));
      start = i + 1;
    }
  }
  if (start < payload.length) out.push(utf8d.decode(payload.subarray(start)));
  return out;
}

/** Decodes the payload as one string, dropping one trailing NUL if present. */
export function payloadString(payload: Uint8Array): string {
  const end = payload.length > 0 && payload[payload.length - 1] === 0 ? payload.length - 1 : payload.length;
  return utf8d.decode(payload.subarray(0, end));
}

/** Decodes UTF-8 bytes. */
export function utf8String(b: Uint8Array): string {
  return utf8d.decode(b);
}

/**
 * The xenstore ring page used by a guest that talks to xenstored directly
 * (struct xenstore_domain_interface in xs_wire.h):
 *
 *   char req[XENSTORE_RING_SIZE];  // requests to xenstore daemon
 *   char rsp[XENSTORE_RING_SIZE];  // replies and async watch events
 *   XENSTORE_RING_IDX req_cons, req_prod;
 *   XENSTORE_RING_IDX rsp_cons, rsp_prod;
 *   uint32_t server_features;      // bitmap of features supported by the server
 *   uint32_t connection;
 *   uint32_t error;
 */
export const XENSTORE_RING_SIZE = 1024;
export const XsRingOffset = {
  req: 0,
  rsp: 1024,
  reqCons: 2048,
  reqProd: 2052,
  rspCons: 2056,
  rspProd: 2060,
  serverFeatures: 2064,
  connection: 2068,
  error: 2072,
} as const;
/** sizeof(struct xenstore_domain_interface). */
export const XS_RING_INTERFACE_SIZE = 2076;
/** MASK_XENSTORE_IDX: ring indices are free running; mask to get a byte position. */
export function maskXsIdx(idx: number): number {
  return idx & (XENSTORE_RING_SIZE - 1);
}
export const XENSTORE_SERVER_FEATURE_RECONNECTION = 1;
export const XENSTORE_SERVER_FEATURE_ERROR = 2;
export const XENSTORE_CONNECTED = 0;
export const XENSTORE_RECONNECT = 1;
export const XENSTORE_ERROR_NONE = 0;
export const XENSTORE_ERROR_COMM = 1;
export const XENSTORE_ERROR_RINGIDX = 2;
export const XENSTORE_ERROR_PROTO = 3;
