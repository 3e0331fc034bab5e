/** The frame parser fed at every split point, and at its limits. */
import { describe, expect, it } from 'vitest';
import { concatBytes } from '../../src/wire/bytes.js';
import { XsFrameParser } from '../../src/wire/xs_parser.js';
import { XENSTORE_PAYLOAD_MAX, XS_HEADER_SIZE, XsType, encodeHeader, encodeMessage, joinPayload } from '../../src/wire/xs_wire.js';

function frames(): Uint8Array[] {
  return [
    encodeMessage(XsType.Read, 1, 0, joinPayload(['/local/domain/0/name'])),
    encodeMessage(XsType.Write, 2, 9, joinPayload(['/a', 'x'.repeat(300)], false)),
    encodeMessage(XsType.WatchEvent, 0, 0, joinPayload(['/a/b', 'tok'])),
    encodeMessage(XsType.Directory, 0xfffffffe, 0, new Uint8Array(0)), // empty payload
  ];
}

function drain(p: XsFrameParser): { msgs: { type: number; reqId: number; txId: number; payload: number[] }[]; need: number } {
  const msgs = [];
  for (;;) {
    const r = p.next();
    if (r.kind === 'message')
      msgs.push({ type: r.message.type, reqId: r.message.reqId, txId: r.message.txId, payload: [...r.message.payload] });
    else if (r.kind === 'need') return { msgs, need: r.bytes };
    else throw new Error(r.reason);
  }
}

const stream = concatBytes(frames());
const expected = frames().map((f) => ({
  type: new DataView(f.buffer).getUint32(0, true),
  reqId: new DataView(f.buffer).getUint32(4, true),
  txId: new DataView(f.buffer).getUint32(8, true),
  payload: [...f.subarray(XS_HEADER_SIZE)],
}));

describe('XsFrameParser', () => {
  it('yields the same frames for every single split point', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const p = new XsFrameParser();
      p.push(stream.slice(0, cut));
      const a = drain(p);
      p.push(stream.slice(cut));
      const b = drain(p);
      expect([...a.msgs, ...b.msgs]).toEqual(expected);
      expect(b.need).toBe(XS_HEADER_SIZE);
      expect(p.buffered).toBe(0);
    }
  });

  it('yields the same frames for every pair of split points around the first two frames', () => {
    const limit = frames()[0]!.length + frames()[1]!.length + 4;
    for (let i = 0; i <= limit; i += 1) {
      for (let j = i; j <= limit; j += 3) {
        const p = new XsFrameParser();
        const got = [];
        for (const piece of [stream.slice(0, i), stream.slice(i, j), stream.slice(j)]) {
          p.push(piece);
          got.push(...drain(p).msgs);
        }
        expect(got).toEqual(expected);
      }
    }
  });

  it('handles one byte at a time and says how much it needs', () => {
    const p = new XsFrameParser();
    const got = [];
    const first = frames()[0]!;
    for (let i = 0; i < stream.length; i++) {
      p.push(stream.subarray(i, i + 1));
      const d = drain(p);
      got.push(...d.msgs);
      if (i + 1 < XS_HEADER_SIZE) expect(d.need).toBe(XS_HEADER_SIZE - (i + 1));
      else if (i + 1 < first.length) expect(d.need).toBe(first.length - (i + 1));
    }
    expect(got).toEqual(expected);
  });

  it('returns frames that stay valid after later pushes', () => {
    const p = new XsFrameParser();
    const [f1, f2] = frames();
    p.push(concatBytes([f1!, f2!.subarray(0, 5)]));
    const r = p.next();
    expect(r.kind).toBe('message');
    const kept = r.kind === 'message' ? [...r.message.payload] : [];
    p.push(f2!.subarray(5));
    p.push(frames()[2]!);
    drain(p);
    expect(r.kind === 'message' ? [...r.message.payload] : []).toEqual(kept);
  });

  it('accepts a 4096-byte payload and fails for good on 4097', () => {
    const ok = encodeMessage(XsType.Write, 1, 0, new Uint8Array(XENSTORE_PAYLOAD_MAX).fill(0x41));
    const p = new XsFrameParser();
    p.push(ok);
    const r = p.next();
    expect(r.kind === 'message' && r.message.payload.length).toBe(4096);

    const bad = new Uint8Array(XS_HEADER_SIZE);
    encodeHeader(bad, 0, { type: XsType.Read, reqId: 1, txId: 0, len: XENSTORE_PAYLOAD_MAX + 1 });
    p.push(bad);
    const e = p.next();
    expect(e.kind).toBe('error');
    expect(e.kind === 'error' && e.len).toBe(4097);
    // Sticky: more bytes cannot resynchronise a stream whose framing is lost.
    p.push(frames()[0]!);
    expect(p.next().kind).toBe('error');
  });

  it('grows past its initial buffer for a large read of many frames', () => {
    const many = concatBytes(Array.from({ length: 200 }, (_, i) => encodeMessage(XsType.Read, i + 1, 0, new Uint8Array(100).fill(i))));
    const p = new XsFrameParser();
    p.push(many.subarray(0, 7));
    p.push(many.subarray(7)); // tail larger than the initial capacity
    const d = drain(p);
    expect(d.msgs.length).toBe(200);
    expect(d.msgs[199]!.reqId).toBe(200);
    expect(d.msgs[199]!.payload.every((b) => b === 199)).toBe(true);
  });
});
