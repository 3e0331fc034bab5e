/**
 * What the caller sees when the backend misbehaves: each fault the simulated
 * blkback can inject, with the verdict the driver gives. Errors fail only
 * their own call; a backend that breaks the protocol fails what is in flight
 * with BLKIF_EPROTO and touches no other request's data; a backend that
 * closes with requests in flight is reconnected to and they are replayed.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BlkifError } from '../../src/index.js';
import { diskFixture, expectBytes, pattern, rng, type DiskFixture } from '../helpers/blk.js';
import { until } from '../helpers/xs.js';

let fx: DiskFixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

describe('injected backend faults', () => {
  it('BLKIF_RSP_ERROR fails that call with BLKIF_EIO and nothing else', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    await fx.dev.write(0, pattern(0, 65536, 1));
    fx.disk.inject({ kind: 'error', ops: ['read'], count: 1 });
    const results = await Promise.allSettled([fx.dev.read(0, 4096), fx.dev.read(4096, 4096), fx.dev.read(8192, 4096)]);
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    const err = (failed[0] as PromiseRejectedResult).reason as BlkifError;
    expect(err).toBeInstanceOf(BlkifError);
    expect(err).toMatchObject({ code: 'BLKIF_EIO', status: -1 });
    for (const r of results) if (r.status === 'fulfilled') expect(r.value.byteLength).toBe(4096);
    // The device carries on.
    expectBytes(await fx.dev.read(0, 65536), pattern(0, 65536, 1));
    expect(fx.dev.stats().errors).toBe(1);
  });

  it('an error in one piece of a large write fails the whole call', async () => {
    fx = await diskFixture({ size: 4 << 20 }, { maxIndirectSegments: 11 });
    fx.disk.inject({ kind: 'error', ops: ['write'], count: 1 });
    await expect(fx.dev.write(0, pattern(0, 1 << 20, 1))).rejects.toMatchObject({ code: 'BLKIF_EIO' });
    await fx.dev.write(0, pattern(0, 1 << 20, 2));
    expectBytes(await fx.dev.read(0, 1 << 20), pattern(0, 1 << 20, 2));
  });

  it('EOPNOTSUPP for flush and discard: BLKIF_EOPNOTSUPP, and the feature is dropped as Linux drops it', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    fx.disk.inject({ kind: 'eopnotsupp', ops: ['flush', 'discard'] });
    await expect(fx.dev.flush()).rejects.toMatchObject({ code: 'BLKIF_EOPNOTSUPP', status: -2 });
    expect(fx.dev.info.features.flush).toBe(false);
    await expect(fx.dev.discard(0, 4096)).rejects.toMatchObject({ code: 'BLKIF_EOPNOTSUPP' });
    expect(fx.dev.info.features.discard).toBeNull();
    const n = fx.disk.stats().requests;
    await expect(fx.dev.discard(0, 4096)).rejects.toMatchObject({ code: 'BLKIF_EOPNOTSUPP' }); // now refused up front
    await fx.dev.flush(); // falls back to a barrier, which the fault does not cover
    expect(fx.disk.stats().requests).toBe(n + 1);
  });

  it('slow responses: everything completes, in any order, with the right data', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    fx.disk.setDelay(1500);
    await Promise.all(Array.from({ length: 40 }, (_, i) => fx!.dev.write(i * 8192, pattern(i * 8192, 8192, i))));
    fx.disk.setDelay(0);
    const all = await fx.dev.read(0, 40 * 8192);
    for (let i = 0; i < 40; i++) expectBytes(all.subarray(i * 8192, (i + 1) * 8192), pattern(i * 8192, 8192, i));
  });

  it.each([
    ['unknown-id', 'not in flight'],
    ['wrong-op', 'says operation'],
    ['rsp-overflow', 'rsp_prod'],
  ] as const)('a hostile backend (%s): BLKIF_EPROTO for what is in flight and after; no other data touched', async (kind, msg) => {
    fx = await diskFixture({ size: 1 << 20 });
    const { dev, disk } = fx;
    await dev.write(0, pattern(0, 65536, 1));
    const broken = new Promise<BlkifError>((r) => dev.once('broken', r));
    disk.inject({ kind, ops: ['read'], count: 1 });
    const errs = await Promise.allSettled([dev.read(0, 4096), dev.read(65536, 4096)]);
    expect(errs.some((r) => r.status === 'rejected')).toBe(true);
    for (const r of errs) {
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(BlkifError);
        expect(r.reason).toMatchObject({ code: 'BLKIF_EPROTO' });
      }
    }
    expect((await broken).message).toContain(msg);
    await expect(dev.read(0, 4096)).rejects.toMatchObject({ code: 'BLKIF_EPROTO' });
    await expect(dev.write(0, new Uint8Array(4096))).rejects.toMatchObject({ code: 'BLKIF_EPROTO' });
    // The disk still holds what was written before.
    expectBytes(disk.memory!.subarray(0, 65536), pattern(0, 65536, 1));
  });

  it('a duplicated response breaks the device; the read it answered never gets wrong data', async () => {
    fx = await diskFixture({ size: 1 << 20 }, { queues: 1 });
    const { dev, disk } = fx;
    await dev.write(0, pattern(0, 4096, 3));
    disk.inject({ kind: 'duplicate-id', ops: ['read'], count: 1 });
    const broken = new Promise<BlkifError>((r) => dev.once('broken', r));
    // Seen one at a time, the first answer completes the read and the second is an id not in flight;
    // seen together, rsp_prod is past what was asked and neither is trusted.
    const first = await dev.read(0, 4096).catch((e: unknown) => e);
    if (first instanceof Uint8Array) expectBytes(first, pattern(0, 4096, 3));
    else expect(first).toMatchObject({ code: 'BLKIF_EPROTO' });
    expect((await broken).code).toBe('BLKIF_EPROTO');
    await expect(dev.read(0, 4096)).rejects.toMatchObject({ code: 'BLKIF_EPROTO' });
  });

  it('a broken device still closes cleanly and ends its grants', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    fx.disk.inject({ kind: 'unknown-id', ops: ['write'] });
    await expect(fx.dev.write(0, new Uint8Array(4096))).rejects.toMatchObject({ code: 'BLKIF_EPROTO' });
    await fx.dev.close();
    await until(() => fx!.host.guest.grants.stats().sharedPages === 0);
  });
});

describe('backend closing and coming back', () => {
  it('Closing with requests in flight: reconnect, replay, nothing lost or done twice from the caller', async () => {
    fx = await diskFixture({ size: 2 << 20 });
    const { dev, disk } = fx;
    disk.stall(true);
    const writes = Array.from({ length: 48 }, (_, i) => dev.write(i * 32768, pattern(i * 32768, 32768, i + 1)));
    await until(() => dev.stats().requests >= 48);
    const reconnected = new Promise<{ replayed: number }>((r) => dev.once('reconnect', r));
    await disk.goClosing();
    // Calls made while it reconnects are held, then go out.
    const late = dev.write(48 * 32768, pattern(48 * 32768, 32768, 99));
    // The late write may have reached a queue before the frontend saw Closing; then it is replayed too.
    expect((await reconnected).replayed).toBeGreaterThanOrEqual(48);
    await Promise.all([...writes, late]);
    const all = await dev.read(0, 49 * 32768);
    for (let i = 0; i < 48; i++) expectBytes(all.subarray(i * 32768, (i + 1) * 32768), pattern(i * 32768, 32768, i + 1));
    expectBytes(all.subarray(48 * 32768), pattern(48 * 32768, 32768, 99));
    const s = dev.stats();
    expect(s).toMatchObject({ reconnects: 1, writes: 49, errors: 0 });
    expect(disk.stats().connections).toBe(2);
  });

  it('a write-verify workload survives repeated backend restarts without losing a write', async () => {
    fx = await diskFixture({ size: 1 << 20 }, { queues: 2 });
    const { dev, disk } = fx;
    const blocks = 64;
    const model: number[] = new Array<number>(blocks).fill(0);
    let stop = false;
    let gen = 0;
    const next = rng(11);
    // Each worker owns its blocks, so writes to one block are never in flight together.
    const workers = Array.from({ length: 8 }, async (_, w) => {
      while (!stop) {
        const b = w + 8 * (next() % (blocks / 8));
        const g = ++gen;
        await dev.write(b * 16384, pattern(b * 16384, 16384, g));
        model[b] = g;
        const back = await dev.read(b * 16384, 16384);
        expectBytes(back, pattern(b * 16384, 16384, g));
      }
    });
    for (let r = 0; r < 3; r++) {
      await until(() => dev.stats().writes > (r + 1) * 150);
      if (r === 1) disk.setDelay(300); // the worker is mid-request when told to stop
      await disk.goClosing();
      await new Promise<void>((res) => dev.once('reconnect', () => res()));
      disk.setDelay(0);
    }
    stop = true;
    await Promise.all(workers);
    for (let b = 0; b < blocks; b++) {
      if (model[b] === 0) continue;
      expectBytes(await dev.read(b * 16384, 16384), pattern(b * 16384, 16384, model[b]!));
    }
    expect(dev.stats()).toMatchObject({ reconnects: 3, errors: 0 });
  });

  it('a reconnect onto a backend with smaller limits splits what it replays', async () => {
    fx = await diskFixture({ size: 4 << 20 });
    const { dev, disk } = fx;
    expect(dev.info.features.indirectSegments).toBe(256);
    disk.stall(true);
    const big = dev.write(0, pattern(0, 1 << 20, 5)); // one indirect request of 256 segments
    await until(() => dev.stats().requests >= 1);
    // The backend restarts without indirect descriptors.
    disk.reconfigure({ maxIndirectSegments: 0 });
    await disk.goClosing();
    await big;
    expect(dev.info.features.indirectSegments).toBe(0);
    expectBytes(await dev.read(0, 1 << 20), pattern(0, 1 << 20, 5));
  });

  it('a later Connected with new sectors is a resize', async () => {
    fx = await diskFixture({ size: 1 << 20, maxSize: 4 << 20 });
    const { dev, disk } = fx;
    const resized = new Promise((r) => dev.once('resize', r));
    await expect(dev.read(2 << 20, 4096)).rejects.toMatchObject({ code: 'BLKIF_ERANGE' });
    await disk.resize(4 << 20);
    await resized;
    expect(dev.info.size).toBe(4 << 20);
    await dev.write(3 << 20, pattern(3 << 20, 4096, 1));
    expectBytes(await dev.read(3 << 20, 4096), pattern(3 << 20, 4096, 1));
  });

  it('a backend that is detached for good: in-flight calls fail with BLKIF_ENODEV, no hang', async () => {
    fx = await diskFixture({ size: 1 << 20 }, { reconnectTimeoutMs: 3000 });
    const { dev, disk } = fx;
    disk.stall(true);
    const pending = dev.read(0, 4096);
    await until(() => dev.stats().requests >= 1);
    const gone = new Promise((r) => dev.once('gone', r));
    await disk.detach();
    await expect(pending).rejects.toMatchObject({ code: 'BLKIF_ENODEV' });
    await gone;
    await expect(dev.read(0, 4096)).rejects.toMatchObject({ code: 'BLKIF_ENODEV' });
    expect(await fx.host.dom0.xenstore.readOptional(`${disk.backendPath}/state`)).toBeUndefined();
  });
});
