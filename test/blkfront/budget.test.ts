/**
 * The grant budget: on a real guest, gntalloc caps the pages all users may
 * share at once (1024 by default). The device sizes its pools within three
 * quarters of what is free, caps the segments of one request so that a request always
 * fits its pool, and refuses to open when even the minimum does not fit.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openBlockDevice } from '../../src/index.js';
import { createSimHost, type SimHost } from '../../src/sim/index.js';
import { expectBytes, limitedPlatform, pattern } from '../helpers/blk.js';

let host: SimHost | undefined;
afterEach(async () => {
  await host?.close();
  host = undefined;
});

describe('grant budget', () => {
  it('sizes the pools within three quarters of what is free, caps segments to fit a pool, and stays under the limit', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 8 << 20 });
    const { platform, most } = limitedPlatform(host.guest, 600);
    const dev = await openBlockDevice({ platform, vdev: disk.vdev, queues: 2, ringPages: 4, timeoutMs: 5000 });
    // 600 - 8 ring pages = 592 free; three quarters of it over 2 queues: 222 pages each.
    expect(dev.stats().pool.size).toBe(2 * 222);
    const data = pattern(0, 4 << 20, 3);
    const before = dev.stats().requests;
    await Promise.all([0, 1, 2, 3].map((k) => dev.write(k << 20, data.subarray(k << 20, (k + 1) << 20))));
    // 256 pages per MiB at no more than 221 segments each: 2 requests per MiB.
    expect(dev.stats().requests - before).toBe(8);
    expectBytes(await dev.read(0, 4 << 20), data);
    expectBytes(disk.memory!.subarray(0, 4 << 20), data);
    expect(dev.stats().errors).toBe(0);
    expect(most()).toBeLessThanOrEqual(600);
    await dev.close();
    expect(platform.grants.stats().sharedPages).toBe(0);
  });

  it('refuses to open with XEN_ENOSPC, naming the limit, when a queue cannot have 12 pages; nothing stays shared', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 1 << 20 });
    const { platform } = limitedPlatform(host.guest, 30);
    await expect(openBlockDevice({ platform, vdev: disk.vdev, queues: 2, ringPages: 4, timeoutMs: 5000 })).rejects.toMatchObject({
      code: 'XEN_ENOSPC',
      message: expect.stringContaining('gntalloc'),
    });
    expect(platform.grants.stats().sharedPages).toBe(0);
  });

  it('a device buffer past the limit is refused with XEN_ENOSPC, naming it, before anything is shared', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 8 << 20 });
    const { platform } = limitedPlatform(host.guest, 600);
    const dev = await openBlockDevice({ platform, vdev: disk.vdev, queues: 2, ringPages: 4, timeoutMs: 5000 });
    const share = platform.grants.share.bind(platform.grants);
    let shares = 0;
    platform.grants.share = (domid, count, writable) => {
      shares++;
      return share(domid, count, writable);
    };
    const free = 600 - platform.grants.stats().sharedPages;
    const all = dev.allocBuffer(free * 4096); // exactly what is left
    expect(shares).toBe(1);
    expect(() => dev.allocBuffer(4096)).toThrow(
      expect.objectContaining({ code: 'XEN_ENOSPC', message: expect.stringContaining('gntalloc') }),
    );
    expect(shares).toBe(1);
    dev.freeBuffer(all);
    expect(dev.allocBuffer(free * 4096)).toBeInstanceOf(Uint8Array); // the freed one, again
    expect(shares).toBe(1);
    await dev.close();
    expect(platform.grants.stats().sharedPages).toBe(0);
  });
});
