import { describe, expect, it } from 'vitest';
import { listBlockDevices, openBlockDevice, vdevName, watchBlockDevices, XenbusState } from '../../src/index.js';
import { createSimHost } from '../../src/sim/index.js';

describe("the guest's vbds, listed and watched", () => {
  it("vdev numbers decode to Linux's names (Xen's vbd-interface: xvd, sd, hd, extended)", () => {
    const names = [51712, 51713, 51728, 51792, 2048, 2065, 768, 833, 5632, (1 << 28) | (26 << 8), (1 << 28) | (3 << 8) | 2, 99].map(
      (v) => vdevName(v).name,
    );
    expect(names).toEqual(['xvda', 'xvda1', 'xvdb', 'xvdf', 'sda', 'sdb1', 'hda', 'hdb1', 'hdc', 'xvdaa', 'xvdd2', 'vbd99']);
    expect(vdevName(51713).partition).toBe(1);
  });

  it('listBlockDevices: every vbd with its name, backend, state and mode, without connecting; the size once a frontend connected', async () => {
    const host = await createSimHost();
    try {
      expect(await listBlockDevices(host.guest)).toEqual([]);
      const a = await host.addDisk({ size: 4 << 20 });
      const b = await host.addDisk({ size: 2 << 20, vdev: 51728, readOnly: true });
      const list = await listBlockDevices(host.guest);
      expect(list.map((d) => [d.vdev, d.name, d.readOnly, d.backendState, d.frontendState])).toEqual([
        [51712, 'xvda', false, XenbusState.InitWait, XenbusState.Initialising],
        [51728, 'xvdb', true, XenbusState.InitWait, XenbusState.Initialising],
      ]);
      expect(list[0]!.backend).toBe(a.backendPath);
      expect(list[1]!.backend).toBe(b.backendPath);
      const dev = await openBlockDevice({ platform: host.guest, vdev: 51728 });
      const after = (await listBlockDevices(host.guest)).find((d) => d.vdev === 51728)!;
      expect(after).toMatchObject({
        size: 2 << 20,
        sectorSize: 512,
        backendState: XenbusState.Connected,
        frontendState: XenbusState.Connected,
      });
      await dev.close();
    } finally {
      await host.close();
    }
  });

  it('watchBlockDevices: the disks there first, then a disk plugged in and one pulled out (Closing, then removed), as they happen', async () => {
    const host = await createSimHost();
    const w = watchBlockDevices(host.guest);
    try {
      await host.addDisk({ size: 1 << 20 });
      const first = await w.waitFor((e) => e.type === 'added', 5000);
      expect(first.device.name).toBe('xvda');
      const later = await host.addDisk({ size: 1 << 20, vdev: 51744 });
      const plugged = await w.waitFor((e) => e.type === 'added', 5000);
      expect(plugged.device).toMatchObject({ vdev: 51744, name: 'xvdc' });
      // A program that took the new disk: it sees the pull as the driver's own 'gone', the watcher as events.
      const dev = await openBlockDevice({ platform: host.guest, vdev: 51744 });
      const gone = new Promise((r) => dev.once('gone', r));
      const detach = later.detach(2000);
      const closing = await w.waitFor(
        (e) => e.type === 'changed' && e.device.vdev === 51744 && e.device.backendState === XenbusState.Closing,
        5000,
      );
      expect(closing.device.name).toBe('xvdc');
      const removed = await w.waitFor((e) => e.type === 'removed', 5000);
      expect(removed.device.vdev).toBe(51744);
      await detach;
      await Promise.race([gone, dev.close()]);
      expect(w.devices.map((d) => d.name)).toEqual(['xvda']);
    } finally {
      await w.close();
      await host.close();
    }
    // Closed: the iterator is done.
    expect(await w.next()).toEqual({ value: undefined, done: true });
  });

  it('waitFor that times out loses no event: the next one is queued for the next caller', async () => {
    const host = await createSimHost();
    const w = watchBlockDevices(host.guest);
    try {
      await expect(w.waitFor(() => true, 100)).rejects.toMatchObject({ code: 'BLKIF_ETIMEDOUT' });
      await host.addDisk({ size: 1 << 20, vdev: 51728 });
      await new Promise((r) => setTimeout(r, 300));
      // The event arrived while nobody waited: it was queued, not handed to the abandoned wait.
      const e = await w.next();
      expect(e.value).toMatchObject({ type: 'added', device: { vdev: 51728 } });
      await w.close();
      // What was queued before the close is still delivered; then the iterator is done.
      while ((await w.next()).done !== true);
      await expect(w.waitFor(() => true)).rejects.toMatchObject({ code: 'BLKIF_CLOSED' });
      // One pending next() at a time (a watcher with nothing to report yet).
      const empty = await createSimHost();
      const quiet = watchBlockDevices(empty.guest);
      const pending = quiet.next();
      await expect(quiet.next()).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
      await quiet.close();
      expect(await pending).toEqual({ value: undefined, done: true });
      await empty.close();
    } finally {
      await w.close();
      await host.close();
    }
  });
});
