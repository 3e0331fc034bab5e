import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSimHost, type SimHost } from '../../src/sim/machine.js';
import type { XenPlatform } from '../../src/platform/types.js';
import { GNTTAB_RESERVED_XENSTORE, GTF_permit_access, decodeGrantEntryV1 } from '../../src/wire/grant_table.js';
import { XsRingOffset } from '../../src/wire/xs_wire.js';
import { deferred } from '../helpers/xs.js';

let host: SimHost;

beforeEach(async () => {
  host = await createSimHost({ guestDomid: 3, guestName: 'vm3' });
});

afterEach(async () => {
  await host.close();
});

/** What a frontend does with any platform: share a page, open a channel, publish both. */
async function publish(
  p: XenPlatform,
  dir: string,
): Promise<{ ref: number; port: number; page: Uint8Array; ch: ReturnType<XenPlatform['evtchn']['allocUnbound']> }> {
  const pages = p.grants.share(0, 1, true);
  const ch = p.evtchn.allocUnbound(0);
  await p.xenstore.transaction(async (tx) => {
    await tx.write(`${dir}/ring-ref`, String(pages.refs[0]));
    await tx.write(`${dir}/event-channel`, String(ch.port));
  });
  return { ref: pages.refs[0]!, port: ch.port, page: pages.bytes, ch };
}

describe('createSimHost', () => {
  it('builds a guest whose xenstore is the shared ring, granted through the reserved ref', async () => {
    const xs = host.guest.xenstore;
    expect(host.guest.domid).toBe(3);
    expect(await xs.read('domid')).toBe('3');
    expect(await xs.read('name')).toBe('vm3');
    expect(await xs.readInt('store/ring-ref')).toBe(GNTTAB_RESERVED_XENSTORE);
    const port = await xs.readInt('store/port');
    expect(port).toBeGreaterThan(0);
    const g = host.hypervisor.domain(3);
    const e = decodeGrantEntryV1(new DataView(g.grantWords.buffer), GNTTAB_RESERVED_XENSTORE * 8);
    expect(e.flags & 3).toBe(GTF_permit_access);
    expect(e.domid).toBe(0);
    // The guest's requests really went through that ring page: its producer
    // indices count every byte both ways (the three reads above, and their replies).
    const ring = new DataView(g.frames(e.frame).slice().buffer);
    const sent = xs.stats().bytesWritten;
    expect(sent).toBeGreaterThan(0);
    expect(ring.getUint32(XsRingOffset.reqProd, true)).toBe(sent);
    expect(ring.getUint32(XsRingOffset.rspProd, true)).toBe(xs.stats().bytesRead);
  });

  it('the guest owns its home and nothing else', async () => {
    const xs = host.guest.xenstore;
    await xs.write('data/x', '1');
    await expect(xs.write('/local/domain/0/x', '1')).rejects.toMatchObject({ code: 'XS_EACCES' });
    expect(await host.dom0.xenstore.read('/local/domain/3/data/x')).toBe('1');
  });

  it('carries a frontend-to-backend setup end to end: grant, event channel, xenstore keys', async () => {
    const dir = 'device/test/0';
    const fe = await publish(host.guest, dir);
    // The backend, in dom0, finds the keys, maps the page and binds the port.
    const ref = await host.dom0.xenstore.readInt(`/local/domain/3/${dir}/ring-ref`);
    const port = await host.dom0.xenstore.readInt(`/local/domain/3/${dir}/event-channel`);
    const m = host.dom0.mapper.map(3, ref, true);
    const be = host.dom0.evtchn.bindInterdomain(3, port);
    const kicked = deferred();
    fe.ch.onEvent(() => kicked.resolve());
    m.bytes.set([1, 2, 3], 0);
    be.notify();
    await kicked.promise;
    expect([...fe.page.subarray(0, 3)]).toEqual([1, 2, 3]);
    expect(host.grantCounters()).toMatchObject({ maps: 2, unmaps: 0, mapFailures: 0 }); // xenstore ring + this page
    host.dom0.mapper.unmap(m);
    be.close();
  });

  it('close() releases every grant, port and connection', async () => {
    await publish(host.guest, 'device/test/1');
    await host.close();
    expect(host.guest.grants.stats().sharedPages).toBe(0);
    expect(host.guest.evtchn.stats().openPorts).toBe(0);
    expect(host.xenstored.connectionCount).toBe(0);
    expect(host.grantCounters().unmaps).toBe(1); // the xenstore ring
  });
});
