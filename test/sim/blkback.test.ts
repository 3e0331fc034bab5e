/**
 * The simulated blkback as a careful backend: a frontend that writes garbage
 * into the ring gets BLKIF_RSP_ERROR (or EOPNOTSUPP) for each bad request,
 * the worker keeps serving, and nothing it was given can crash it. The
 * frontend here is raw: the handshake by hand and requests written byte by byte.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { XenbusState, switchState, waitForState } from '../../src/index.js';
import { createSimHost, type SimBlkback, type SimDiskOptions, type SimHost } from '../../src/sim/index.js';
import { FrontRing } from '../../src/blkfront/ring.js';
import { BLKIF_NATIVE_ABI, BlkifOp, BlkifRsp } from '../../src/wire/blkif.js';
import * as blkif from '../../src/wire/blkif.js';
import type { EventChannel } from '../../src/evtchn/types.js';
import type { SharedPages } from '../../src/gnttab/types.js';

const abi = BLKIF_NATIVE_ABI;

interface Raw {
  host: SimHost;
  disk: SimBlkback;
  ring: FrontRing;
  data: SharedPages;
  channel: EventChannel;
  /** Puts one request in the ring (written by `fill`), kicks, and returns the response. */
  send(fill: (v: DataView, off: number) => void): Promise<{ id: number; op: number; status: number }>;
  close(): Promise<void>;
}

let raw: Raw | undefined;
afterEach(async () => {
  await raw?.close();
  raw = undefined;
});

async function rawFrontend(opts: SimDiskOptions = {}): Promise<Raw> {
  const host = await createSimHost();
  const disk = await host.addDisk({ size: 1 << 20, ...opts });
  const g = host.guest;
  const fe = disk.frontendPath;
  await waitForState(g.xenstore, disk.backendPath, XenbusState.InitWait);
  const ringPages = g.grants.share(0, 1, true);
  const ch: EventChannel = g.evtchn.allocUnbound(0);
  const ring = new FrontRing(ringPages.bytes, abi);
  const data = g.grants.share(0, 4, true);
  await g.xenstore.transaction(async (tx) => {
    await tx.write(`${fe}/ring-ref`, String(ringPages.refs[0]));
    await tx.write(`${fe}/event-channel`, String(ch.port));
    await tx.write(`${fe}/protocol`, abi.protocol);
  });
  await switchState(g.xenstore, fe, XenbusState.Initialised);
  await waitForState(g.xenstore, disk.backendPath, XenbusState.Connected);
  const waiting: Array<(r: { id: number; op: number; status: number }) => void> = [];
  ch.onEvent(() => {
    ring.consume((idLo, _hi, op, status) => waiting.shift()?.({ id: idLo, op, status }));
  });
  return {
    host,
    disk,
    ring,
    data,
    channel: ch,
    send: (fill) =>
      new Promise((resolve) => {
        waiting.push(resolve);
        fill(ring.view, ring.requestOffset());
        ring.produced();
        if (ring.push()) ch.notify();
      }),
    close: async () => {
      await switchState(g.xenstore, fe, XenbusState.Closed);
      await host.close();
    },
  };
}

function rw(op: number, id: number, sector: number, segs: Array<[number, number, number]>): (v: DataView, off: number) => void {
  return (v, off) => {
    blkif.setRequestHeader(abi, v, off, op, segs.length, 0, id, 0, sector);
    segs.forEach(([gref, first, last], i) => blkif.setSegment(v, blkif.segmentOffset(abi, off, i), gref, first, last));
  };
}

function indirect(indirectOp: number, id: number, nrSegments: number, grefs: number[]): (v: DataView, off: number) => void {
  return (v, off) => {
    blkif.setIndirectHeader(abi, v, off, indirectOp, nrSegments, 0, id, 0, 0);
    grefs.forEach((g, i) => blkif.setIndirectGref(abi, v, off, i, g));
  };
}

describe('simulated blkback: request validation', () => {
  it('answers every malformed request with an error status and keeps serving', async () => {
    raw = await rawFrontend({ maxIndirectSegments: 32 });
    const { data, send, disk } = raw;
    const good = data.refs[0]!;
    const ok = await send(rw(BlkifOp.Write, 1, 0, [[good, 0, 7]]));
    expect(ok).toEqual({ id: 1, op: BlkifOp.Write, status: BlkifRsp.Okay });

    const bad: Array<[string, (v: DataView, off: number) => void, number]> = [
      ['a grant that was never given', rw(BlkifOp.Read, 2, 0, [[5000, 0, 7]]), BlkifRsp.Error],
      ["reserved ref 0 (the console's, not granted here)", rw(BlkifOp.Read, 3, 0, [[0, 0, 7]]), BlkifRsp.Error],
      ['a ref past the table', rw(BlkifOp.Read, 4, 0, [[0x7fffffff, 0, 7]]), BlkifRsp.Error],
      [
        'last_sect past the page',
        (v, off) => {
          rw(BlkifOp.Read, 5, 0, [[good, 0, 7]])(v, off);
          v.setUint8(off + abi.request.seg + 5, 8);
        },
        BlkifRsp.Error,
      ],
      [
        'first_sect after last_sect',
        (v, off) => {
          rw(BlkifOp.Read, 6, 0, [[good, 0, 7]])(v, off);
          v.setUint8(off + abi.request.seg + 4, 5);
          v.setUint8(off + abi.request.seg + 5, 2);
        },
        BlkifRsp.Error,
      ],
      [
        '12 direct segments',
        (v, off) => {
          rw(BlkifOp.Read, 7, 0, [[good, 0, 7]])(v, off);
          v.setUint8(off + abi.request.nrSegments, 12);
        },
        BlkifRsp.Error,
      ],
      [
        '0 segments for a read',
        (v, off) => {
          rw(BlkifOp.Read, 8, 0, [[good, 0, 7]])(v, off);
          v.setUint8(off + abi.request.nrSegments, 0);
        },
        BlkifRsp.Error,
      ],
      ['sectors past the end', rw(BlkifOp.Read, 9, 2047, [[good, 0, 1]]), BlkifRsp.Error],
      [
        'a sector number near 2^64',
        (v, off) => {
          rw(BlkifOp.Read, 10, 0, [[good, 0, 0]])(v, off);
          v.setBigUint64(off + abi.request.sectorNumber, 0xfffffffffffffff0n, true);
        },
        BlkifRsp.Error,
      ],
      [
        'an unknown operation',
        (v, off) => {
          rw(BlkifOp.Read, 11, 0, [[good, 0, 0]])(v, off);
          v.setUint8(off + abi.request.operation, 42);
        },
        BlkifRsp.EOpNotSupp,
      ],
      ['indirect with 33 segments (max 32)', indirect(BlkifOp.Read, 12, 33, [good]), BlkifRsp.Error],
      ['indirect whose operation is a flush', indirect(BlkifOp.FlushDiskcache, 13, 1, [good]), BlkifRsp.Error],
      ['indirect pages behind a bad grant', indirect(BlkifOp.Read, 14, 2, [6000]), BlkifRsp.Error],
      ['discard past the end', (v, off) => blkif.setDiscardRequest(abi, v, off, 0, 0, 15, 0, 2040, 16), BlkifRsp.Error],
    ];
    for (const [what, fill, status] of bad) {
      const r = await send(fill);
      expect({ what, status: r.status }).toEqual({ what, status });
    }
    expect(disk.stats().errors).toBe(bad.length);
    // Still serving, and the first write's data is intact.
    const back = await send(rw(BlkifOp.Read, 99, 0, [[data.refs[1]!, 0, 7]]));
    expect(back.status).toBe(BlkifRsp.Okay);
    expect(disk.broken).toEqual([]);
  });

  it('refuses writes to a read-only disk and a write through a read-only grant', async () => {
    raw = await rawFrontend({ readOnly: true, persistent: false });
    const ro = raw.host.guest.grants.share(0, 1, false);
    expect((await raw.send(rw(BlkifOp.Write, 1, 0, [[raw.data.refs[0]!, 0, 7]]))).status).toBe(BlkifRsp.Error);
    expect((await raw.send(rw(BlkifOp.Read, 2, 0, [[raw.data.refs[0]!, 0, 7]]))).status).toBe(BlkifRsp.Okay);
    // Reading into a page the guest granted read-only needs a writable map: Xen refuses it.
    expect((await raw.send(rw(BlkifOp.Read, 3, 0, [[ro.refs[0]!, 0, 7]]))).status).toBe(BlkifRsp.Error);
    expect(raw.host.grantCounters().mapFailures).toBeGreaterThan(0);
  });

  it('a 4096-byte-sector disk refuses requests not aligned to 8 sectors', async () => {
    raw = await rawFrontend({ sectorSize: 4096 });
    const p = raw.data.refs[0]!;
    expect((await raw.send(rw(BlkifOp.Read, 1, 0, [[p, 0, 7]]))).status).toBe(BlkifRsp.Okay);
    expect((await raw.send(rw(BlkifOp.Read, 2, 1, [[p, 0, 7]]))).status).toBe(BlkifRsp.Error);
    expect((await raw.send(rw(BlkifOp.Read, 3, 0, [[p, 0, 3]]))).status).toBe(BlkifRsp.Error);
  });

  it('a frontend claiming more requests than the ring holds is cut off, not obeyed', async () => {
    raw = await rawFrontend();
    const words = new Int32Array(raw.ring.view.buffer, raw.ring.view.byteOffset, 16);
    Atomics.store(words, 0, 1000); // req_prod far past anything written
    raw.channel.notify();
    const deadline = Date.now() + 2000;
    while (raw.disk.broken.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(raw.disk.broken[0]).toMatch(/req_prod 1000/);
    expect(raw.disk.stats().requests).toBe(0);
  });
});
