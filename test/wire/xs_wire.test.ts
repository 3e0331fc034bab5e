import { describe, expect, it } from 'vitest';
import {
  XENSTORE_PAYLOAD_MAX,
  XS_HEADER_SIZE,
  XsType,
  decodeHeader,
  encodeHeader,
  encodeMessage,
  isKnownXsType,
  joinPayload,
  maskXsIdx,
  payloadString,
  splitPayload,
  xsTypeName,
} from '../../src/wire/xs_wire.js';
import { parseXenbusState, xenbusStateName } from '../../src/wire/xenbus_state.js';

describe('xs_wire', () => {
  it('encodes the header little endian', () => {
    const msg = encodeMessage(XsType.Write, 0x01020304, 7, joinPayload(['/a', 'v'], false));
    expect([...msg.subarray(0, XS_HEADER_SIZE)]).toEqual([11, 0, 0, 0, 4, 3, 2, 1, 7, 0, 0, 0, 4, 0, 0, 0]);
    expect([...msg.subarray(XS_HEADER_SIZE)]).toEqual([0x2f, 0x61, 0, 0x76]);
    expect(decodeHeader(msg)).toEqual({ type: 11, reqId: 0x01020304, txId: 7, len: 4 });
  });

  it('accepts exactly 4096 payload bytes and refuses 4097', () => {
    expect(encodeMessage(XsType.Write, 1, 0, new Uint8Array(XENSTORE_PAYLOAD_MAX)).length).toBe(XS_HEADER_SIZE + 4096);
    expect(() => encodeMessage(XsType.Write, 1, 0, new Uint8Array(XENSTORE_PAYLOAD_MAX + 1))).toThrow(/XENSTORE_PAYLOAD_MAX/);
  });

  it('checks header fields are u32', () => {
    const b = new Uint8Array(16);
    expect(() => encodeHeader(b, 0, { type: -1, reqId: 0, txId: 0, len: 0 })).toThrow(RangeError);
    expect(() => encodeHeader(b, 0, { type: 0, reqId: 2 ** 32, txId: 0, len: 0 })).toThrow(RangeError);
  });

  it('splits and joins NUL-separated payloads', () => {
    expect(splitPayload(joinPayload(['a', 'bc', '']))).toEqual(['a', 'bc', '']);
    expect(splitPayload(new Uint8Array([0x61, 0, 0x62]))).toEqual(['a', 'b']);
    expect(splitPayload(new Uint8Array())).toEqual([]);
    expect(payloadString(new Uint8Array([0x4f, 0x4b, 0]))).toBe('OK');
    expect(payloadString(new Uint8Array([0x4f, 0x4b]))).toBe('OK');
  });

  it('names types and knows the hole at 20', () => {
    expect(xsTypeName(XsType.DirectoryPart)).toBe('DirectoryPart');
    expect(xsTypeName(20)).toBe('type20');
    expect(isKnownXsType(20)).toBe(false);
    expect(isKnownXsType(22)).toBe(true);
    expect(maskXsIdx(1025)).toBe(1);
  });

  it('parses xenbus states strictly', () => {
    expect(parseXenbusState('4')).toBe(4);
    expect(parseXenbusState(' 6\n')).toBe(6);
    expect(parseXenbusState('9')).toBeUndefined();
    expect(parseXenbusState('x')).toBeUndefined();
    expect(parseXenbusState('')).toBeUndefined();
    expect(xenbusStateName(2)).toBe('InitWait');
  });
});
