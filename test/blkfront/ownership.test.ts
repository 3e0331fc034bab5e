/**
 * Never take a vbd someone else owns. On the simulated host: a vbd the
 * guest's kernel has bound and a vbd another opener holds (this process or
 * another process of the guest) are refused with BLKIF_EBUSY before
 * anything is written or shared; a vbd left Connected by a process that
 * was killed is taken over, and `info` says so; the listing says who owns
 * what; a backend the toolstack does not trust gets none of the caller's
 * memory.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BlkifError, listBlockDevices, openBlockDevice, type BlockDevice, type XenstoreClient } from '../../src/index.js';
import { createSimHost, type SimBlkback, type SimGuestProcess, type SimHost } from '../../src/sim/index.js';
import { expectBytes, pattern } from '../helpers/blk.js';

let host: SimHost | undefined;
const opened: BlockDevice[] = [];
afterEach(async () => {
  for (const d of opened.splice(0)) await d.close().catch(() => undefined);
  await host?.close();
  host = undefined;
});

/** Every key and value under `dir`, as dom0 reads them. */
async function snapshot(xs: XenstoreClient, dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (p: string): Promise<void> => {
    out[p] = await xs.read(p);
    for (const k of await xs.directory(p)) await walk(`${p}/${k}`);
  };
  await walk(dir);
  return out;
}

/** Records every path written under `dir` from now on (the watch's first firing left out). */
async function writesUnder(xs: XenstoreClient, dir: string): Promise<{ paths: string[]; stop(): Promise<void> }> {
  const paths: string[] = [];
  let armed = false;
  const w = await xs.watch(dir, (e) => {
    if (armed) paths.push(e.path);
  });
  await new Promise((r) => setTimeout(r, 50));
  armed = true;
  return { paths, stop: () => w.unwatch() };
}

/** A host with one disk, held by a device in another process of the guest. */
async function heldByAnother(): Promise<{ h: SimHost; disk: SimBlkback; other: SimGuestProcess; theirs: BlockDevice }> {
  host = await createSimHost();
  const disk = await host.addDisk({ size: 1 << 20 });
  const other = host.spawnGuestProcess();
  const theirs = await openBlockDevice({ platform: other.platform, vdev: disk.vdev, timeoutMs: 5000 });
  return { h: host, disk, other, theirs };
}

async function open(h: SimHost, vdev: number, platform = h.guest): Promise<BlockDevice> {
  const d = await openBlockDevice({ platform, vdev, timeoutMs: 5000 });
  opened.push(d);
  return d;
}

describe('vbd ownership', () => {
  it('a vbd the guest kernel has bound is refused with BLKIF_EBUSY, with nothing written or shared', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 1 << 20, vdev: 51728 });
    host.vbdOwners.kernelBind('51728', 'xvdb');
    const before = await snapshot(host.dom0.xenstore, disk.frontendPath);
    const beBefore = await snapshot(host.dom0.xenstore, disk.backendPath);
    const writes = await writesUnder(host.dom0.xenstore, disk.frontendPath);
    const shared = host.guest.grants.stats().sharedPages;

    const err = await openBlockDevice({ platform: host.guest, vdev: 51728, timeoutMs: 2000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlkifError);
    expect(err).toMatchObject({ code: 'BLKIF_EBUSY' });
    const msg = (err as Error).message;
    for (const part of [
      'vbd 51728 (xvdb)',
      "guest's kernel",
      'nothing was written',
      'echo vbd-51728 > /sys/bus/xen/drivers/vbd/unbind',
      'drivers_autoprobe',
      'docs/guest.md',
    ]) {
      expect(msg).toContain(part);
    }
    await new Promise((r) => setTimeout(r, 100));
    await writes.stop();
    expect(writes.paths).toEqual([]);
    expect(await snapshot(host.dom0.xenstore, disk.frontendPath)).toEqual(before);
    expect(await snapshot(host.dom0.xenstore, disk.backendPath)).toEqual(beBefore);
    expect(host.guest.grants.stats().sharedPages).toBe(shared);
    expect(disk.stats().connections).toBe(0);

    const [listed] = await listBlockDevices(host.guest);
    expect(listed).toMatchObject({ vdev: 51728, name: 'xvdb', owner: 'kernel', ownerPid: null });

    // Given back by the kernel (unbound), it is ours to open.
    host.vbdOwners.kernelUnbind('51728');
    const dev = await open(host, 51728);
    await dev.write(0, pattern(0, 4096, 1));
    expectBytes(await dev.read(0, 4096), pattern(0, 4096, 1));
  });

  it('a second opener in this process is refused while the first carries on', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 1 << 20 });
    const first = await open(host, disk.vdev);
    const writing = first.write(0, pattern(0, 65536, 1));
    const writes = await writesUnder(host.dom0.xenstore, disk.frontendPath);

    const err = await openBlockDevice({ platform: host.guest, vdev: disk.vdev, timeoutMs: 2000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BLKIF_EBUSY' });
    expect((err as Error).message).toContain(`is held by this process (pid ${process.pid})`);
    await writing;
    await writes.stop();
    expect(writes.paths).toEqual([]);
    expectBytes(await first.read(0, 65536), pattern(0, 65536, 1));
    expect(first.stats().reconnects).toBe(0);
    expect((await listBlockDevices(host.guest))[0]).toMatchObject({ owner: 'process', ownerPid: process.pid });

    await first.close();
    expect((await listBlockDevices(host.guest))[0]).toMatchObject({ owner: null, ownerPid: null });
    const second = await open(host, disk.vdev);
    expect(second.info.takenOver).toBeNull();
    expectBytes(await second.read(0, 65536), pattern(0, 65536, 1));
  });

  it('another process holding it: refused with its pid; once it is killed, taken over at once', async () => {
    const { h, disk, other, theirs } = await heldByAnother();
    await theirs.write(0, pattern(0, 65536, 7));

    const err = await openBlockDevice({ platform: h.guest, vdev: disk.vdev, timeoutMs: 2000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BLKIF_EBUSY' });
    expect((err as Error).message).toContain(`is held by process ${other.pid}`);
    expect((await listBlockDevices(h.guest))[0]).toMatchObject({ owner: 'process', ownerPid: other.pid });

    // Killed while Connected: its frontend directory stays as it was.
    other.kill();
    expect(await h.dom0.xenstore.read(`${disk.frontendPath}/state`)).toBe('4');
    const mine = await open(h, disk.vdev);
    expect(mine.info.takenOver).toEqual({ state: 'Connected', pid: other.pid });
    expect(disk.stats().connections).toBe(2);
    expectBytes(await mine.read(0, 65536), pattern(0, 65536, 7));
    await mine.write(65536, pattern(65536, 4096, 8));
    expectBytes(await mine.read(65536, 4096), pattern(65536, 4096, 8));
  });

  it('after another process closed it cleanly there is nothing to take over', async () => {
    const { h, disk, other, theirs } = await heldByAnother();
    await theirs.close();
    await other.platform.close();
    const mine = await open(h, disk.vdev);
    expect(mine.info.takenOver).toBeNull();
  });

  it('a failed open releases the claim', async () => {
    host = await createSimHost();
    // A backend that never reaches InitWait: the open fails on its timeout.
    const disk = await host.addDisk({ size: 1 << 20 });
    await host.dom0.xenstore.write(`${disk.backendPath}/state`, '1');
    await expect(openBlockDevice({ platform: host.guest, vdev: disk.vdev, timeoutMs: 300 })).rejects.toMatchObject({
      code: 'BLKIF_ENODEV',
    });
    expect((await listBlockDevices(host.guest))[0]).toMatchObject({ owner: null });
  });
});

describe("the toolstack's trusted key", () => {
  it('trusted = 0: no device buffer is granted, everything is bounced, and info says so', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 1 << 20 });
    await host.dom0.xenstore.write(`${disk.frontendPath}/trusted`, '0');
    const dev = await open(host, disk.vdev);
    expect(dev.info.trusted).toBe(false);
    const shared = host.guest.grants.stats().sharedPages;
    const buf = dev.allocBuffer(65536);
    expect(host.guest.grants.stats().sharedPages).toBe(shared);
    buf.set(pattern(0, 65536, 3));
    await dev.write(0, buf);
    buf.fill(0);
    await dev.readInto(0, buf);
    expectBytes(buf, pattern(0, 65536, 3));
    const s = dev.stats();
    expect(s.zeroCopy).toBe(0);
    expect(s.bufferPages).toBe(0);
    dev.freeBuffer(buf);
    expect(() => dev.freeBuffer(buf)).toThrow(/freeBuffer/);
  });

  it('trusted absent or 1: device buffers are granted in place', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 1 << 20 });
    const dev = await open(host, disk.vdev);
    expect(dev.info.trusted).toBe(true);
    const buf = dev.allocBuffer(65536);
    await dev.readInto(0, buf);
    expect(dev.stats().zeroCopy).toBeGreaterThan(0);
    expect(dev.stats().bufferPages).toBe(16);
  });
});
