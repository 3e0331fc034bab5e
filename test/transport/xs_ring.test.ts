import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XsRingStream } from '../../src/transport/xs_ring.js';
import type { ByteStreamHandlers } from '../../src/transport/byte_stream.js';
import { SimHypervisor } from '../../src/sim/host/hypervisor.js';
import { SimEventChannels } from '../../src/sim/host/evtchn.js';
import type { EventChannel } from '../../src/evtchn/types.js';
import { XENSTORE_ERROR_RINGIDX, XENSTORE_RING_SIZE, XsRingOffset, XsType, encodeMessage } from '../../src/wire/xs_wire.js';
import { XenstoreClient } from '../../src/xenbus/client.js';
import { SimXenstored } from '../../src/sim/xenstored/server.js';
import { isXenError } from '../../src/errors.js';
import { until } from '../helpers/xs.js';

/** Collects what a stream delivers. */
class Sink implements ByteStreamHandlers {
  chunks: Uint8Array[] = [];
  length = 0;
  writables = 0;
  closedWith: Error | undefined | null = null;
  private waiter: { n: number; resolve(): void } | null = null;
  data(c: Uint8Array): void {
    this.chunks.push(c);
    this.length += c.length;
    if (this.waiter !== null && this.length >= this.waiter.n) {
      this.waiter.resolve();
      this.waiter = null;
    }
  }
  /** Resolves once `n` bytes have arrived (event-driven, no polling). */
  received(n: number): Promise<void> {
    if (this.length >= n) return Promise.resolve();
    return new Promise((resolve) => (this.waiter = { n, resolve }));
  }
  writable(): void {
    this.writables++;
  }
  closed(e?: Error): void {
    this.closedWith = e;
  }
  get bytes(): Uint8Array {
    return Buffer.concat(this.chunks);
  }
}

let hv: SimHypervisor;
let guestEv: SimEventChannels;
let dom0Ev: SimEventChannels;
let guestCh: EventChannel;
let dom0Ch: EventChannel;
let page: Uint8Array;
let idx: DataView;

beforeEach(() => {
  hv = new SimHypervisor();
  hv.createDomain({ domid: 0, pages: 16, grants: 16 });
  const g = hv.createDomain({ domid: 1, pages: 16, grants: 16 });
  guestEv = new SimEventChannels(hv, 1);
  dom0Ev = new SimEventChannels(hv, 0);
  guestEv.listen();
  dom0Ev.listen();
  guestCh = guestEv.allocUnbound(0);
  dom0Ch = dom0Ev.bindInterdomain(1, guestCh.port);
  page = g.frames(3);
  idx = new DataView(page.buffer, page.byteOffset);
});

afterEach(() => {
  guestEv.close();
  dom0Ev.close();
});

function setIndices(v: number): void {
  for (const o of [XsRingOffset.reqCons, XsRingOffset.reqProd, XsRingOffset.rspCons, XsRingOffset.rspProd]) idx.setUint32(o, v >>> 0, true);
}

function pair(): { front: XsRingStream; back: XsRingStream; f: Sink; b: Sink } {
  const front = new XsRingStream(page, guestCh, 'front');
  const back = new XsRingStream(page, dom0Ch, 'back');
  const f = new Sink();
  const b = new Sink();
  front.start(f);
  back.start(b);
  return { front, back, f, b };
}

/** Offers all of `data`, resuming after writable(), as the client does. */
async function writeAll(s: XsRingStream, sink: Sink, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const before = sink.writables;
    off += s.write(data.subarray(off));
    if (off < data.length) await until(() => sink.writables > before);
  }
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe('xenstore shared ring', () => {
  it('carries a frame both ways from every start position, and across the u32 wrap', async () => {
    const starts: number[] = [];
    for (let k = 0; k < XENSTORE_RING_SIZE; k++) starts.push(k);
    for (let k = 1; k <= 64; k++) starts.push(0x100000000 - k);
    for (const start of starts) {
      setIndices(start);
      const { front, back, f, b } = pair();
      const req = pattern(700, start);
      const rsp = pattern(900, start + 1);
      expect(front.write(req)).toBe(req.length);
      await b.received(req.length);
      expect(back.write(rsp)).toBe(rsp.length);
      await f.received(rsp.length);
      expect(Buffer.compare(b.bytes, req)).toBe(0);
      expect(Buffer.compare(f.bytes, rsp)).toBe(0);
      expect(idx.getUint32(XsRingOffset.reqProd, true)).toBe((start + 700) >>> 0);
      expect(idx.getUint32(XsRingOffset.rspCons, true)).toBe((start + 900) >>> 0);
      front.close();
      back.close();
    }
  });

  it('takes only what fits in a full ring and resumes when the consumer drains it', async () => {
    setIndices(1000); // the first write wraps, too
    const front = new XsRingStream(page, guestCh, 'front');
    const f = new Sink();
    front.start(f);
    const data = pattern(1500, 3);
    expect(front.write(data)).toBe(XENSTORE_RING_SIZE);
    expect(front.write(data.subarray(XENSTORE_RING_SIZE))).toBe(0);
    expect(front.counters.partialWrites).toBe(2);
    // Nobody reads yet: the ring stays full.
    await new Promise((r) => setTimeout(r, 20));
    expect(f.writables).toBe(0);
    const back = new XsRingStream(page, dom0Ch, 'back');
    const b = new Sink();
    back.start(b);
    await until(() => f.writables === 1);
    // The consumer found the ring full, so it woke the producer: exactly once.
    expect(back.counters.notifications).toBe(1);
    expect(front.write(data.subarray(XENSTORE_RING_SIZE))).toBe(1500 - XENSTORE_RING_SIZE);
    await until(() => b.bytes.length === 1500);
    expect(b.bytes).toEqual(Buffer.from(data));
  });

  it('streams 256 KiB through 1 KiB rings in both directions at once', async () => {
    setIndices(0xfffff000);
    const { front, back, f, b } = pair();
    const up = pattern(256 * 1024, 5);
    const down = pattern(256 * 1024, 9);
    await Promise.all([writeAll(front, f, up), writeAll(back, b, down)]);
    await until(() => b.bytes.length === up.length && f.bytes.length === down.length);
    expect(Buffer.compare(b.bytes, up)).toBe(0);
    expect(Buffer.compare(f.bytes, down)).toBe(0);
  });

  it('notifies only when the consumer may be idle', async () => {
    const { front, b } = pair();
    await new Promise((r) => setTimeout(r, 5)); // the bind's initial event
    const base = front.counters.notifications;
    // Two writes before the consumer runs: only the first finds it caught up.
    front.write(pattern(10, 1));
    front.write(pattern(10, 2));
    expect(front.counters.notifications - base).toBe(1);
    await until(() => b.bytes.length === 20);
    // Caught up again: the next write notifies.
    front.write(pattern(10, 3));
    expect(front.counters.notifications - base).toBe(2);
    await until(() => b.bytes.length === 30);
  });

  it('fails with XS_EIO on impossible indices, and the back end records XENSTORE_ERROR_RINGIDX', async () => {
    const { front, f, b } = pair();
    // A request ring claiming 2000 bytes of data: no ring holds that.
    idx.setUint32(XsRingOffset.reqProd, 2000, true);
    guestCh.notify();
    await until(() => b.closedWith !== null);
    expect(isXenError(b.closedWith, 'XS_EIO')).toBe(true);
    expect(idx.getUint32(XsRingOffset.error, true)).toBe(XENSTORE_ERROR_RINGIDX);
    // The guest sees the error the next time it looks.
    await until(() => f.closedWith !== null);
    expect(isXenError(f.closedWith, 'XS_EIO')).toBe(true);
    expect(front.write(pattern(4, 0))).toBe(0);
  });

  it('a producer index behind the consumer is impossible for the writer too', () => {
    const front = new XsRingStream(page, guestCh, 'front');
    const f = new Sink();
    front.start(f);
    idx.setUint32(XsRingOffset.reqCons, 5, true); // consumer ahead of producer 0
    expect(front.write(pattern(4, 0))).toBe(0);
    return until(() => isXenError(f.closedWith, 'XS_EIO'));
  });

  it("a client with requests in flight gets XS_EIO when the daemon's indices go bad", async () => {
    const xenstored = new SimXenstored();
    const client = new XenstoreClient(new XsRingStream(page, guestCh, 'front'));
    const server = new XsRingStream(page, dom0Ch, 'back');
    xenstored.serve(server, { domid: 1 });
    await client.write('/local/domain/1/x', 'y').catch(() => undefined);
    // A hostile daemon claims a response ring overflow while a read waits.
    xenstored.close();
    const pending = client.read('/local/domain/1/x');
    idx.setUint32(XsRingOffset.rspProd, idx.getUint32(XsRingOffset.rspCons, true) + 4096, true);
    dom0Ch.notify();
    await expect(pending).rejects.toMatchObject({ code: 'XS_EIO' });
    expect((await client.closed).code).toBe('XS_EIO');
  });

  it('delivers a frame split across the wrap to the parser intact', async () => {
    setIndices(XENSTORE_RING_SIZE - 5); // the 16-byte header straddles the end of the ring
    const { front, b } = pair();
    const frame = encodeMessage(XsType.Read, 7, 0, new TextEncoder().encode('/a/b\0'));
    front.write(frame);
    await until(() => b.bytes.length === frame.length);
    expect(b.bytes).toEqual(Buffer.from(frame));
  });
});
