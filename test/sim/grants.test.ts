import { hypervisor } from '../helpers/hv.js';
import { Worker } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { beforeEach, describe, expect, it } from 'vitest';
import { SimHypervisor, Counter } from '../../src/sim/host/hypervisor.js';
import { SimGrantMapper, SimGrantSharer } from '../../src/sim/host/grants.js';
import { SimEventChannels } from '../../src/sim/host/evtchn.js';
import { GrantError } from '../../src/errors.js';
import {
  GNTST_bad_domain,
  GNTST_bad_gntref,
  GNTST_bad_handle,
  GNTST_general_error,
  GTF_permit_access,
  GTF_reading,
  GTF_readonly,
  GTF_writing,
  decodeGrantEntryV1,
} from '../../src/wire/grant_table.js';
import { SIM_DIST } from '../helpers/daemon.js';

let hv: SimHypervisor;
let guest: SimGrantSharer;
let dom0: SimGrantMapper;

beforeEach(() => {
  hv = hypervisor([16, 64], [64, 64], [16, 64]);
  guest = new SimGrantSharer(hv, 1);
  dom0 = new SimGrantMapper(hv, 0);
});

function entry(ref: number): ReturnType<typeof decodeGrantEntryV1> {
  const g = hv.domain(1);
  return decodeGrantEntryV1(new DataView(g.grantWords.buffer), ref * 8);
}

function refusal(fn: () => unknown): GrantError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GrantError);
    return err as GrantError;
  }
  throw new Error('expected the map to be refused');
}

describe('simulated grant table', () => {
  it('writes grant_entry_v1 entries as a guest kernel does, outside the reserved refs', () => {
    const p = guest.share(0, 2, false);
    expect(p.refs.every((r) => r >= 8)).toBe(true);
    const e = entry(p.refs[1]!);
    expect(e).toMatchObject({ flags: GTF_permit_access | GTF_readonly, domid: 0 });
    // The entry names the very page shared: a write through one is seen through the other.
    const page = hv.domain(1).frames(e.frame);
    p.bytes[4096 + 5] = 0xab;
    expect(page[5]).toBe(0xab);
    expect(p.bytes.length).toBe(2 * 4096);
  });

  it('maps a grant to the very page: writes through either side are seen by the other', () => {
    const p = guest.share(0, 1, true);
    const m = dom0.map(1, p.refs[0]!, true);
    m.bytes[10] = 7;
    expect(p.bytes[10]).toBe(7);
    p.bytes[11] = 9;
    expect(m.bytes[11]).toBe(9);
    expect(entry(p.refs[0]!).flags & (GTF_reading | GTF_writing)).toBe(GTF_reading | GTF_writing);
    dom0.unmap(m);
    expect(entry(p.refs[0]!).flags & (GTF_reading | GTF_writing)).toBe(0);
  });

  it('refuses what Xen refuses: wrong domid, read-only for writing, ended grant, bad ref, unknown domain', () => {
    const forDom2 = guest.share(2, 1, true);
    expect(refusal(() => dom0.map(1, forDom2.refs[0]!, false))).toMatchObject({
      status: GNTST_general_error,
      message: /granted to domain 2, not 0/,
    });
    const ro = guest.share(0, 1, false);
    expect(refusal(() => dom0.map(1, ro.refs[0]!, true))).toMatchObject({ status: GNTST_general_error, message: /read-only/ });
    dom0.unmap(dom0.map(1, ro.refs[0]!, false)); // reading is allowed
    const gone = guest.share(0, 1, true);
    const ref = gone.refs[0]!;
    guest.unshare(gone);
    expect(refusal(() => dom0.map(1, ref, false))).toMatchObject({ status: GNTST_general_error, message: /not in use/ });
    expect(refusal(() => dom0.map(1, 64, false))).toMatchObject({ status: GNTST_bad_gntref });
    expect(refusal(() => dom0.map(1, 3, false))).toMatchObject({ status: GNTST_general_error }); // reserved, never granted
    expect(refusal(() => dom0.map(9, 10, false))).toMatchObject({ status: GNTST_bad_domain });
    expect(hv.domain(0).counter(Counter.mapFailures)).toBe(6);
    expect(hv.domain(0).counter(Counter.maps)).toBe(1);
  });

  it('counts pins: the grant stays busy until the last mapping goes', () => {
    const p = guest.share(0, 1, true);
    const r = p.refs[0]!;
    const w = dom0.map(1, r, true);
    const ro = dom0.map(1, r, false);
    dom0.unmap(w);
    expect(entry(r).flags & (GTF_reading | GTF_writing)).toBe(GTF_reading); // a reader remains
    expect(guest.endAccess(r)).toBe(false);
    dom0.unmap(ro);
    expect(refusal(() => dom0.unmap(ro))).toMatchObject({ status: GNTST_bad_handle });
    expect(guest.endAccess(r)).toBe(true);
    expect(hv.domain(0).counter(Counter.maps)).toBe(2);
    expect(hv.domain(0).counter(Counter.unmaps)).toBe(2);
  });

  it('unsharing a mapped grant defers its end; the page is not reused until the backend unmaps', async () => {
    const p = guest.share(0, 1, true);
    const m = dom0.map(1, p.refs[0]!, true);
    const frame = entry(p.refs[0]!).frame;
    guest.unshare(p);
    expect(guest.stats().deferredEnds).toBe(1);
    expect(guest.pendingEnds).toBe(1);
    // The page is still the backend's: a new share gets another frame.
    const q = guest.share(0, 1, true);
    expect(entry(q.refs[0]!).frame).not.toBe(frame);
    dom0.unmap(m);
    await new Promise((r) => setTimeout(r, 30));
    expect(guest.pendingEnds).toBe(0);
  });

  it('a reused page comes back zeroed', () => {
    const p = guest.share(0, 1, true);
    p.bytes.fill(0xee);
    guest.unshare(p);
    const q = guest.share(0, 1, true);
    expect(q.bytes.every((b) => b === 0)).toBe(true);
  });

  it('runs out cleanly: XEN_ENOSPC for refs or pages, XEN_EINVAL for bad counts', () => {
    expect(() => guest.share(0, 57, true)).toThrow(expect.objectContaining({ code: 'XEN_ENOSPC' })); // 64 - 8 reserved
    expect(() => guest.share(0, 0, true)).toThrow(expect.objectContaining({ code: 'XEN_EINVAL' }));
    const small = new SimGrantSharer(hv, 2);
    expect(() => small.share(0, 16, true)).toThrow(expect.objectContaining({ code: 'XEN_ENOSPC' })); // frame 0 is never used
  });
});

describe('a backend in a worker thread', () => {
  it("maps the guest's grants for real, gets Xen's refusals, and shares event channels with Xen's semantics", async () => {
    const guestEv = new SimEventChannels(hv, 1);
    guestEv.listen();
    const ch = guestEv.allocUnbound(0);
    let guestEvents = 0;
    ch.onEvent(() => guestEvents++);
    const writable = guest.share(0, 1, true);
    const readonly = guest.share(0, 1, false);
    const forDom2 = guest.share(2, 1, true);
    const ended = guest.share(0, 1, true);
    guest.unshare(ended);
    const sync = new SharedArrayBuffer(16);
    const flags = new Int32Array(sync);
    const worker = new Worker(new URL('./fixtures/backend_worker.mjs', import.meta.url), {
      workerData: {
        simModule: pathToFileURL(SIM_DIST).href,
        handle: hv.handle,
        guest: 1,
        port: ch.port,
        sync,
        refs: { writable: writable.refs[0], readonly: readonly.refs[0], forDom2: forDom2.refs[0], ended: ended.refs[0] },
      },
    });
    const result = new Promise<Record<string, unknown>>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const waitFlag = async (i: number): Promise<void> => {
      const w = Atomics.waitAsync(flags, i, 0);
      if (w.async) await w.value;
    };
    await waitFlag(0);
    for (let i = 0; i < 100; i++) ch.notify();
    Atomics.store(flags, 1, 1);
    Atomics.notify(flags, 1);
    await waitFlag(2);
    for (let i = 0; i < 5; i++) ch.notify();
    Atomics.store(flags, 3, 1);
    Atomics.notify(flags, 3);
    const r = await result;
    await worker.terminate();

    expect(new TextDecoder().decode(writable.bytes.subarray(16, 45))).toBe('written by the backend thread');
    expect(r.verdicts).toEqual({
      readonlyForWriting: `XEN_EGRANT:${GNTST_general_error}`,
      readonlyForReading: 'ok',
      otherDomains: `XEN_EGRANT:${GNTST_general_error}`,
      ended: `XEN_EGRANT:${GNTST_general_error}`,
    });
    // 100 notifications while the backend was busy: one pending bit, one delivery.
    expect(r).toMatchObject({ firstWait: 1, secondWait: 0, coalesced: 1 });
    // Masked: nothing delivered; unmask delivers the pending event once.
    expect(r).toMatchObject({ whileMasked: 0, afterUnmask: 1 });
    expect(hv.domain(0).counter(Counter.maps)).toBe(2);
    expect(hv.domain(0).counter(Counter.unmaps)).toBe(2);
    expect(hv.domain(0).counter(Counter.mapFailures)).toBe(3);
    await new Promise((res) => setTimeout(res, 20));
    expect(guestEvents).toBeGreaterThanOrEqual(1); // the worker's "done" notification
    expect(guest.endAccess(writable.refs[0]!)).toBe(true); // unmapped by the worker
    guestEv.close();
  });
});
