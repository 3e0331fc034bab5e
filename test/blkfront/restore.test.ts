/**
 * Save/restore (the mechanism under live migration) with I/O in flight, on
 * the simulated host: the guest comes back as another domain (or the same
 * one), with an empty grant table and its event-channel ports gone. The
 * device must notice, touch none of the old ports, share everything anew,
 * find itself under the new domid, negotiate again and replay what was in
 * flight; no acknowledged write may be lost.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openBlockDevice, type BlockDevice } from '../../src/index.js';
import { Counter } from '../../src/sim/host/hypervisor.js';
import { createSimHost } from '../../src/sim/index.js';
import { diskFixture, expectBytes, firstDifference, pattern, type DiskFixture } from '../helpers/blk.js';
import { until } from '../helpers/xs.js';

let fx: DiskFixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

type Resumed = { replayed: number; domid: number; downtimeMs: number };
const resumed = (dev: BlockDevice): Promise<Resumed> => new Promise((r) => dev.once('resume', r));

/** A write-verify workload: 8 writers, each owning its blocks; returns a stop function giving the figures. */
function workload(dev: BlockDevice, blocks = 64, bsz = 16384) {
  const model = new Array<number>(blocks).fill(0);
  let stop = false;
  let gen = 0;
  let acked = 0;
  let mismatches = 0;
  const failures: unknown[] = [];
  const workers = Array.from({ length: 8 }, async (_, w) => {
    let k = 0;
    while (!stop) {
      const b = w + 8 * (k++ % (blocks / 8));
      const g = ++gen;
      try {
        await dev.write(b * bsz, pattern(b * bsz, bsz, g));
        model[b] = g;
        acked++;
        if (firstDifference(await dev.read(b * bsz, bsz), pattern(b * bsz, bsz, g)) >= 0) mismatches++;
      } catch (err) {
        failures.push(err);
        return;
      }
    }
  });
  return {
    acked: () => acked,
    async stop() {
      stop = true;
      await Promise.all(workers);
      for (let b = 0; b < blocks; b++) {
        if (model[b] !== 0 && firstDifference(await dev.read(b * bsz, bsz), pattern(b * bsz, bsz, model[b]!)) >= 0) mismatches++;
      }
      return { acked, mismatches, failures };
    },
  };
}

describe('save/restore with I/O in flight (simulated host)', () => {
  it.each([
    ['as a new domain', false],
    ['keeping its domid', true],
  ])('restored %s: the device resumes, replays, and loses no acknowledged write', async (_what, keepDomid) => {
    fx = await diskFixture({ size: 2 << 20 }, { queues: 2, ringPages: 4 });
    const { dev, host } = fx;
    const oldDomid = host.guest.domid;
    const load = workload(dev);
    await until(() => load.acked() > 200);
    const back = resumed(dev);
    const domid = await host.saveRestore({ keepDomid });
    const r = await back;
    expect(r.domid).toBe(domid);
    expect(domid === oldDomid).toBe(keepDomid);
    await until(() => load.acked() > 600);
    const { acked, mismatches, failures } = await load.stop();
    expect(failures).toEqual([]);
    expect(mismatches).toBe(0);
    expect(dev.stats()).toMatchObject({ resumes: 1, errors: 0 });
    expect(host.guest.domid).toBe(domid);
    // Not one operation on a port the restore had dropped (each would crash a real kernel).
    expect(host.hypervisor.domain(domid).counter(Counter.staleEvtchnOps)).toBe(0);
    console.log(
      `restore ${keepDomid ? 'keeping the domid' : `as domain ${domid}`}: ${acked} writes acknowledged, ` +
        `0 mismatches, ${r.replayed} pieces replayed, ${r.downtimeMs} ms from noticing to connected`,
    );
    // What the old connection's backend saw is on the disk the new one serves.
    await dev.close();
    const again = await openBlockDevice({ platform: host.guest, vdev: host.disks[0]!.vdev });
    await again.write(0, pattern(0, 4096, 99));
    expectBytes(await again.read(0, 4096), pattern(0, 4096, 99));
    fx = { ...fx, dev: again };
  });

  it('a device buffer in flight across a restore: its write lands, its memory stays valid, later I/O on it is bounced', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    const { dev, host } = fx;
    const buf = dev.allocBuffer(65536);
    buf.set(pattern(0, 65536, 5));
    host.disks[0]!.stall(true);
    const write = dev.write(0, buf);
    await until(() => dev.stats().requests >= 1);
    const back = resumed(dev);
    await host.saveRestore();
    await back;
    await write;
    expectBytes(buf, pattern(0, 65536, 5)); // still the owner's memory
    const zeroCopyBefore = dev.stats().zeroCopy;
    await dev.readInto(0, buf);
    expectBytes(buf, pattern(0, 65536, 5));
    expect(dev.stats().zeroCopy).toBe(zeroCopyBefore); // bounced: its grants died with the old domain
    const fresh = dev.allocBuffer(4096);
    await dev.readInto(0, fresh);
    expect(dev.stats().zeroCopy).toBe(zeroCopyBefore + 1); // a new buffer is granted in the new domain
    dev.freeBuffer(buf);
    dev.freeBuffer(fresh);
  });

  it('two restores in a row, and the device closes cleanly afterwards with nothing left shared', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    const { dev, host } = fx;
    for (let i = 0; i < 2; i++) {
      const writes = Array.from({ length: 16 }, (_, k) => dev.write(k * 8192, pattern(k * 8192, 8192, i + 1)));
      const back = resumed(dev);
      await host.saveRestore();
      await back;
      await Promise.all(writes);
    }
    for (let k = 0; k < 16; k++) expectBytes(await dev.read(k * 8192, 8192), pattern(k * 8192, 8192, 2));
    expect(dev.stats().resumes).toBe(2);
    await dev.close();
    expect(host.guest.grants.stats().sharedPages).toBe(0);
    expect(host.guest.evtchn.stats().openPorts).toBe(0);
    fx = { ...fx, dev: await openBlockDevice({ platform: host.guest, vdev: host.disks[0]!.vdev }) };
  });

  it('the simulated restore does drop the old ports: an operation on one is refused and counted', async () => {
    // No device here, so nothing resumes the platform: its old channel set is still in use.
    const host = await createSimHost();
    try {
      const ch = host.guest.evtchn.allocUnbound(0);
      const domid = await host.saveRestore();
      expect(() => ch.notify()).toThrow(expect.objectContaining({ code: 'XEN_EEVTCHN' }));
      expect(() => ch.close()).toThrow(expect.objectContaining({ code: 'XEN_EEVTCHN' }));
      expect(host.hypervisor.domain(domid).counter(Counter.staleEvtchnOps)).toBe(2);
      // What the platform's resume does instead: abandon the set, touching nothing, and open a new one.
      await host.guest.resume(host.guest.restores);
      expect(host.guest.domid).toBe(domid);
      const fresh = host.guest.evtchn.allocUnbound(0);
      fresh.notify();
      fresh.close();
      expect(host.hypervisor.domain(domid).counter(Counter.staleEvtchnOps)).toBe(2);
    } finally {
      await host.close();
    }
  });

  it('a transaction open across the save is run again by transaction(); one started by hand fails typed', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    const { host } = fx;
    const xs = host.guest.xenstore;
    const byHand = await xs.startTransaction();
    let runs = 0;
    const done = xs.transaction(async (tx) => {
      runs++;
      await tx.write('data/across', `run ${runs}`);
      if (runs === 1) await host.saveRestore();
    });
    await done;
    expect(runs).toBe(2);
    expect(await xs.read('data/across')).toBe('run 2');
    await expect(byHand.write('data/x', '1')).rejects.toMatchObject({ code: 'XS_ENOENT' });
  });
});
