/**
 * What a backend with other limits, a hostile backend's keys and careless
 * callers must not break: reconnects that land on smaller limits, failed
 * opens that leave the vbd usable, geometry checked at connect, bad calls
 * refused with typed errors, buffers detached while their call waits, and
 * close() called more than once.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { XenbusState, openBlockDevice, readState, waitForState } from '../../src/index.js';
import { createSimHost, type SimHost } from '../../src/sim/index.js';
import { diskFixture, expectBytes, limitedPlatform, pattern, type DiskFixture } from '../helpers/blk.js';
import { until } from '../helpers/xs.js';

let fx: DiskFixture | undefined;
let host: SimHost | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
  await host?.close();
  host = undefined;
});

describe('reconnect onto a backend with smaller limits (a migration to another host)', () => {
  it('one-page rings and one queue: the old keys go, the new set is published, every write in flight lands', async () => {
    fx = await diskFixture({ size: 4 << 20 }, { queues: 2, ringPages: 4 });
    const { dev, disk, host: h } = fx;
    expect(dev.info.features).toMatchObject({ ringPages: 4, queues: 2 });
    const xs = h.dom0.xenstore;
    expect(await xs.directory(disk.frontendPath)).toEqual(
      expect.arrayContaining(['ring-page-order', 'multi-queue-num-queues', 'queue-0', 'queue-1']),
    );
    disk.stall(true);
    const writes = Array.from({ length: 16 }, (_, i) => dev.write(i * 65536, pattern(i * 65536, 65536, i + 1)));
    await until(() => dev.stats().requests >= 16);
    disk.reconfigure({ maxRingPageOrder: 0, maxQueues: 1 });
    await disk.goClosing();
    await Promise.all(writes);
    expect(dev.info.features).toMatchObject({ ringPages: 1, queues: 1 });
    const keys = await xs.directory(disk.frontendPath);
    expect(keys).toEqual(expect.arrayContaining(['ring-ref', 'event-channel']));
    for (const stale of ['ring-page-order', 'multi-queue-num-queues', 'queue-0', 'queue-1', 'ring-ref0']) expect(keys).not.toContain(stale);
    for (let i = 0; i < 16; i++) expectBytes(await dev.read(i * 65536, 65536), pattern(i * 65536, 65536, i + 1));
    expect(dev.stats()).toMatchObject({ reconnects: 1, errors: 0 });
  });

  it('back to more pages and queues, then fewer pages with the same queues: per-queue ring keys follow', async () => {
    fx = await diskFixture({ size: 4 << 20, maxRingPageOrder: 0, maxQueues: 1 }, { queues: 2, ringPages: 4 });
    const { dev, disk, host: h } = fx;
    const xs = h.dom0.xenstore;
    disk.reconfigure({ maxRingPageOrder: 2, maxQueues: 2 });
    await disk.goClosing();
    await until(() => dev.stats().reconnects === 1);
    expect(dev.info.features).toMatchObject({ ringPages: 4, queues: 2 });
    expect(await xs.directory(`${disk.frontendPath}/queue-1`)).toEqual(expect.arrayContaining(['ring-ref0', 'ring-ref3', 'event-channel']));
    for (const stale of ['ring-ref', 'event-channel']) expect(await xs.directory(disk.frontendPath)).not.toContain(stale);
    disk.reconfigure({ maxRingPageOrder: 1 });
    await disk.goClosing();
    await until(() => dev.stats().reconnects === 2);
    expect(dev.info.features).toMatchObject({ ringPages: 2, queues: 2 });
    const q1 = await xs.directory(`${disk.frontendPath}/queue-1`);
    expect(q1).toContain('ring-ref1');
    expect(q1).not.toContain('ring-ref2');
    await dev.write(0, pattern(0, 1 << 20, 7));
    expectBytes(await dev.read(0, 1 << 20), pattern(0, 1 << 20, 7));
  });

  it('a 16 MiB write in flight, replayed onto a backend without indirect descriptors, is split to fit the ring', async () => {
    fx = await diskFixture({ size: 32 << 20, maxIndirectSegments: 4096 }, { maxIndirectSegments: 4096, poolPages: 4096, queues: 1 });
    const { dev, disk } = fx;
    expect(dev.info.features.indirectSegments).toBe(4096);
    disk.stall(true);
    const big = dev.write(0, pattern(0, 16 << 20, 3));
    await until(() => dev.stats().requests >= 1);
    disk.reconfigure({ maxIndirectSegments: 0 });
    await disk.goClosing();
    await big; // 4096 pages at 11 a request: 373 requests on a 128-slot ring
    expect(dev.info.features.indirectSegments).toBe(0);
    expectBytes(await dev.read(0, 16 << 20), pattern(0, 16 << 20, 3));
    expect(dev.stats().errors).toBe(0);
  });
});

describe('the simulated blkback closing twice in quick succession', () => {
  it.each([0, 20])('two Closings %i ms apart: the next connection serves, writes land', async (gap) => {
    fx = await diskFixture({ size: 1 << 20 });
    const { dev, disk } = fx;
    const writes = Array.from({ length: 8 }, (_, i) => dev.write(i * 4096, pattern(i * 4096, 4096, i + 1)));
    const first = disk.goClosing();
    await new Promise((r) => setTimeout(r, gap));
    await Promise.all([first, disk.goClosing()]);
    await Promise.all(writes);
    await dev.write(65536, pattern(65536, 4096, 9));
    for (let i = 0; i < 8; i++) expectBytes(await dev.read(i * 4096, 4096), pattern(i * 4096, 4096, i + 1));
    expectBytes(await dev.read(65536, 4096), pattern(65536, 4096, 9));
  });
});

describe('a backend that closes again while the reconnect waits for it', () => {
  it("closing again around the frontend's Initialised: the reconnect starts over, every write lands", async () => {
    // A short reconnect timeout: waiting for a Connected that never comes would fail the writes.
    fx = await diskFixture({ size: 1 << 20 }, { reconnectTimeoutMs: 8000 });
    const { dev, disk, host } = fx;
    const writes = Array.from({ length: 8 }, (_, i) => dev.write(i * 4096, pattern(i * 4096, 4096, i + 1)));
    const first = disk.goClosing();
    await waitForState(host.guest.xenstore, disk.frontendPath, XenbusState.Initialised, { timeoutMs: 5000 });
    await Promise.all([first, disk.goClosing()]);
    await Promise.all(writes);
    for (let i = 0; i < 8; i++) expectBytes(await dev.read(i * 4096, 4096), pattern(i * 4096, 4096, i + 1));
    expect(dev.stats().reconnects).toBeGreaterThanOrEqual(1);
    expect(dev.stats().errors).toBe(0);
  });
});

describe('a failed open leaves the vbd ready for the next', () => {
  it('XEN_ENOSPC under a small grant limit, then an open with enough grants works', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 1 << 20 });
    await expect(
      openBlockDevice({ platform: limitedPlatform(host.guest, 30).platform, vdev: disk.vdev, timeoutMs: 3000 }),
    ).rejects.toMatchObject({ code: 'XEN_ENOSPC' });
    expect(await readState(host.guest.xenstore, disk.frontendPath)).toBe(XenbusState.Closed);
    expect(host.guest.grants.stats().sharedPages).toBe(0);
    const dev = await openBlockDevice({ platform: host.guest, vdev: disk.vdev, timeoutMs: 3000 });
    await dev.write(0, pattern(0, 8192, 1));
    expectBytes(await dev.read(0, 8192), pattern(0, 8192, 1));
    await dev.close();
  });
});

describe('geometry and discard keys are checked at connect', () => {
  const bad: Array<[string, Record<string, string>]> = [
    ['sector-size 2^32 + 512 (a 32-bit power-of-two test would pass it)', { 'sector-size': '4294967808' }],
    ['sector-size 3 × 2^32', { 'sector-size': '12884901888' }],
    ['sector-size 1536', { 'sector-size': '1536' }],
    ['physical-sector-size -1', { 'physical-sector-size': '-1' }],
    ['physical-sector-size 0', { 'physical-sector-size': '0' }],
    ['physical-sector-size 3', { 'physical-sector-size': '3' }],
    ['physical-sector-size below the sector size', { 'sector-size': '4096', 'physical-sector-size': '512' }],
    ['discard-granularity -4096', { 'discard-granularity': '-4096' }],
    ['discard-granularity 3', { 'discard-granularity': '3' }],
    ['discard-alignment 3', { 'discard-alignment': '3' }],
    ['discard-alignment not below the granularity', { 'discard-granularity': '4096', 'discard-alignment': '4096' }],
    ['sectors not a number', { sectors: '12x' }],
  ];
  it.each(bad)('%s: BLKIF_EPROTO naming the key, and the vbd opens once the backend is fixed', async (_what, keys) => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 1 << 20, keys, sectorSize: keys['sector-size'] === '4096' ? 4096 : 512 });
    const err = await openBlockDevice({ platform: host.guest, vdev: disk.vdev, timeoutMs: 3000 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'BLKIF_EPROTO' });
    expect((err as Error).message).toContain(Object.keys(keys).at(-1));
    disk.reconfigure({ keys: {} });
    const dev = await openBlockDevice({ platform: host.guest, vdev: disk.vdev, timeoutMs: 3000 });
    await dev.write(0, pattern(0, 4096, 2));
    expectBytes(await dev.read(0, 4096), pattern(0, 4096, 2));
    await dev.close();
  });

  it('granularity 0 means the physical sector size, as Linux reads it', async () => {
    fx = await diskFixture({ size: 1 << 20, keys: { 'discard-granularity': '0', 'physical-sector-size': '4096' } });
    expect(fx.dev.info.features.discard).toMatchObject({ granularity: 4096, alignment: 0 });
    expect(fx.dev.info.physicalSectorSize).toBe(4096);
  });
});

describe('careless callers get typed errors, and nothing else is affected', () => {
  it('bad arguments and options', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    const { dev, host: h, disk } = fx;
    await expect(dev.discard(0, 512, null as never)).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
    expect(() => dev.freeBuffer(null as never)).toThrow(expect.objectContaining({ code: 'BLKIF_EINVAL' }));
    expect(() => dev.freeBuffer(undefined as never)).toThrow(expect.objectContaining({ code: 'BLKIF_EINVAL' }));
    for (const options of [
      { platform: null },
      { platform: {} },
      { platform: h.guest, vdev: null },
      { platform: h.guest, vdev: disk.vdev, queues: Number.NaN },
      { platform: h.guest, vdev: disk.vdev, queues: 1.5 },
      { platform: h.guest, vdev: disk.vdev, queues: 0 },
      { platform: h.guest, vdev: disk.vdev, maxIndirectSegments: Number.NaN },
      { platform: h.guest, vdev: disk.vdev, ringPages: -1 },
      { platform: h.guest, vdev: disk.vdev, persistentGrants: 'yes' },
      { platform: h.guest, vdev: disk.vdev, timeoutMs: Infinity },
      { platform: h.guest, vdev: disk.vdev, poolPages: 1.5 },
    ]) {
      const t0 = Date.now();
      await expect(openBlockDevice(options as never)).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
      expect(Date.now() - t0).toBeLessThan(500); // refused up front, not after a timeout
    }
    await expect(openBlockDevice(null as never)).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
    // The open device is untouched.
    await dev.write(0, pattern(0, 4096, 1));
    expectBytes(await dev.read(0, 4096), pattern(0, 4096, 1));
  });

  it('a write whose buffer is transferred away while it waits fails alone, with BLKIF_EINVAL', async () => {
    fx = await diskFixture({ size: 1 << 20 }, { queues: 1, ringPages: 1 });
    const { dev, disk } = fx;
    disk.stall(true);
    // 32 one-page writes fill the one-page ring; the next ones wait for slots.
    const first = Array.from({ length: 32 }, (_, i) => dev.write(i * 4096, pattern(i * 4096, 4096, 1)));
    await until(() => dev.stats().requests >= 32);
    const doomed = new Uint8Array(pattern(32 * 4096, 4096, 2));
    const lost = dev.write(32 * 4096, doomed);
    const after = dev.write(33 * 4096, pattern(33 * 4096, 4096, 3));
    const target = new Uint8Array(4096);
    const readLost = dev.readInto(0, target);
    structuredClone(doomed.buffer, { transfer: [doomed.buffer] });
    structuredClone(target.buffer, { transfer: [target.buffer] });
    disk.stall(false);
    await expect(lost).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
    await expect(readLost).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
    await Promise.all([...first, after]);
    expectBytes(await dev.read(33 * 4096, 4096), pattern(33 * 4096, 4096, 3));
    expectBytes(await dev.read(32 * 4096, 4096), new Uint8Array(4096)); // never written
    expect(dev.stats()).toMatchObject({ writes: 33, errors: 2, pending: 0 });
  });

  it('three close() calls with 64 writes in flight all resolve when the one close does', async () => {
    fx = await diskFixture({ size: 4 << 20 }, { timeoutMs: 4000 });
    const { dev, disk } = fx;
    disk.setDelay(5000);
    const writes = Array.from({ length: 64 }, (_, i) => dev.write(i * 8192, pattern(i * 8192, 8192, 1)).catch((e: unknown) => e));
    await until(() => dev.stats().requests >= 64);
    disk.setDelay(0);
    const t0 = Date.now();
    const done = await Promise.all([dev.close(), dev.close(), dev.close()].map((p) => p.then(() => Date.now() - t0)));
    expect(Math.max(...done)).toBeLessThan(3000);
    expect(Math.max(...done) - Math.min(...done)).toBeLessThan(50);
    await expect(dev.write(0, new Uint8Array(512))).rejects.toMatchObject({ code: 'BLKIF_CLOSED' });
    expect((await Promise.all(writes)).every((r) => r === undefined)).toBe(true);
  });
});
