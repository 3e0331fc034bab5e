import { expect } from 'vitest';
import {
  XenError,
  openBlockDevice,
  type BlockDevice,
  type BlockDeviceOptions,
  type GrantSharer,
  type XenPlatform,
} from '../../src/index.js';
import { createSimHost, type SimBlkback, type SimDiskOptions, type SimHost } from '../../src/sim/index.js';

export interface DiskFixture {
  host: SimHost;
  disk: SimBlkback;
  dev: BlockDevice;
  close(): Promise<void>;
}

/** A simulated host with one disk served by blkback workers, and the frontend open on it. */
export async function diskFixture(
  disk: SimDiskOptions = {},
  dev: Omit<BlockDeviceOptions, 'platform' | 'vdev'> = {},
): Promise<DiskFixture> {
  // the backend's workers run the compiled JS
  const host = await createSimHost();
  const backend = await host.addDisk({ size: 4 << 20, ...disk });
  const device = await openBlockDevice({ platform: host.guest, vdev: backend.vdev, timeoutMs: 5000, ...dev });
  return {
    host,
    disk: backend,
    dev: device,
    close: async () => {
      await device.close();
      await host.close();
    },
  };
}

/** xorshift32: the same pseudo-random sequence for a seed. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Bytes that encode where they belong and which write put them there. */
export function pattern(offset: number, length: number, generation: number): Uint8Array {
  const b = new Uint8Array(length);
  const v = new DataView(b.buffer);
  for (let i = 0; i < length; i += 8) {
    v.setUint32(i, (offset + i) / 8, true);
    v.setUint32(i + 4, ((generation * 2654435761) >>> 0) ^ i, true);
  }
  return b;
}

/** The first offset where `a` and `b` differ (or where the shorter ends), -1 when equal. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.byteLength, b.byteLength);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.byteLength === b.byteLength ? -1 : n;
}

/**
 * Expects `actual` to hold exactly `expected`; a failure names the first
 * differing byte and both values, not just "false".
 */
export function expectBytes(actual: Uint8Array, expected: Uint8Array, what = 'bytes'): void {
  const i = firstDifference(actual, expected);
  const found =
    i < 0
      ? 'identical'
      : i >= Math.min(actual.byteLength, expected.byteLength)
        ? `${what}: ${actual.byteLength} bytes where ${expected.byteLength} were expected`
        : `${what}: first difference at byte ${i} of ${expected.byteLength}: 0x${actual[i]!.toString(16)} instead of 0x${expected[i]!.toString(16)}`;
  expect(found).toBe('identical');
}

/**
 * The guest's platform with a gntalloc-like limit on its sharer (Linux's
 * gntalloc caps what all of a guest's users share at once); `most` is the
 * most pages it ever held.
 */
export function limitedPlatform(guest: XenPlatform, limit: number): { platform: XenPlatform; most: () => number } {
  const inner = guest.grants;
  let most = 0;
  const grants: GrantSharer = {
    share(domid, count, writable) {
      if (inner.stats().sharedPages + count > limit) throw new XenError('XEN_ENOSPC', `over the limit of ${limit} pages`);
      const pages = inner.share(domid, count, writable);
      most = Math.max(most, inner.stats().sharedPages);
      return pages;
    },
    unshare: (pages) => inner.unshare(pages),
    stats: () => inner.stats(),
    close: () => inner.close(),
    limit: () => limit,
  };
  const platform: XenPlatform = {
    get domid() {
      return guest.domid;
    },
    get evtchn() {
      return guest.evtchn;
    },
    get restores() {
      return guest.restores;
    },
    xenstore: guest.xenstore,
    grants,
    vbds: guest.vbds,
    resume: (seen) => guest.resume(seen),
    domidChanged: () => guest.domidChanged(),
    close: () => guest.close(),
  };
  return { platform, most: () => most };
}
