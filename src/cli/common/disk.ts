/**
 * The one way the commands open a disk: a vbd of the real guest this
 * process runs in, or an image file (or memory) served by the embedded
 * simulated host. Whatever fails part-way closes what was opened.
 */
import { openBlockDevice, openXenPlatform, type BlockDevice, type BlockDeviceOptions, type XenPlatform } from '../../index.js';
import { createSimHost, type SimBlkback, type SimHost } from '../../sim/index.js';
import type { EvtchnWakeup } from '../../evtchn/xenevtchn.js';
import { openThreadedDevice, type ThreadedDevice } from '../../blkfront/threaded.js';
import type { MessagePort } from 'node:worker_threads';

export type DiskSpec =
  /** A vbd of this Xen guest (`device/vbd/<vdev>`). */
  | { kind: 'xen'; vdev: number | string; wakeup?: EvtchnWakeup | undefined }
  /** An image file served by a simulated blkback. */
  | { kind: 'image'; path: string; readOnly?: boolean | undefined; vdev?: number | undefined }
  /** A memory disk served by a simulated blkback. */
  | { kind: 'ramdisk'; size: number };

export interface OpenedDisk<D = BlockDevice> {
  device: D;
  platform: XenPlatform;
  /** The simulated host and its backend, when the disk is simulated. */
  sim: { host: SimHost; disk: SimBlkback } | null;
  /** Closes the device, then the host or platform. */
  close(): Promise<void>;
}

/** Opens the disk `spec` names; `guestName` names the simulated guest. */
export function openDisk(
  spec: DiskSpec,
  guestName: string,
  options: Omit<BlockDeviceOptions, 'platform' | 'vdev'> = {},
): Promise<OpenedDisk> {
  return openOn(spec, guestName, (platform, vdev) => openBlockDevice({ ...options, platform, vdev }));
}

/**
 * Opens the disk `spec` names with its queues run by worker threads, one
 * per port (see openThreadedDevice); the backend must offer that many.
 */
export function openThreadedDisk(
  spec: DiskSpec,
  guestName: string,
  threads: readonly MessagePort[],
  options: Omit<BlockDeviceOptions, 'platform' | 'vdev' | 'queues'> = {},
): Promise<OpenedDisk<ThreadedDevice>> {
  return openOn(spec, guestName, (platform, vdev) => openThreadedDevice({ ...options, platform, vdev, threads }), threads.length);
}

/** The platform (or a simulated host serving the disk, with `queues` queues at least), then `open` on it. */
async function openOn<D extends { close(): Promise<void> }>(
  spec: DiskSpec,
  guestName: string,
  open: (platform: XenPlatform, vdev: number | string) => Promise<D>,
  queues?: number,
): Promise<OpenedDisk<D>> {
  let host: SimHost | null = null;
  let platform: XenPlatform | null = null;
  try {
    if (spec.kind === 'xen') {
      platform = await openXenPlatform({ evtchnWakeup: spec.wakeup });
      const p = platform;
      const device = await open(p, spec.vdev);
      return { device, platform: p, sim: null, close: () => closeBoth(device, () => p.close()) };
    }
    host = await createSimHost({ guestName });
    const h = host;
    const more = queues === undefined || queues <= 4 ? {} : { maxQueues: queues };
    const disk = await h.addDisk(
      spec.kind === 'ramdisk' ? { size: spec.size, ...more } : { image: spec.path, readOnly: spec.readOnly, vdev: spec.vdev, ...more },
    );
    const device = await open(h.guest, disk.vdev);
    return { device, platform: h.guest, sim: { host: h, disk }, close: () => closeBoth(device, () => h.close()) };
  } catch (err) {
    await host?.close().catch(() => undefined);
    await platform?.close().catch(() => undefined);
    throw err;
  }
}

async function closeBoth(device: { close(): Promise<void> }, then: () => Promise<void>): Promise<void> {
  try {
    await device.close();
  } finally {
    await then();
  }
}
