/**
 * The one way the commands open a disk: a vbd of the real guest this
 * process runs in, or an image file (or memory) served by the embedded
 * simulated host. Whatever fails part-way closes what was opened.
 */
import { openBlockDevice, openXenPlatform, type BlockDevice, type BlockDeviceOptions, type XenPlatform } from '../../index.js';
import { createSimHost, type SimBlkback, type SimHost } from '../../sim/index.js';
import type { EvtchnWakeup } from '../../evtchn/xenevtchn.js';

export type DiskSpec =
  /** A vbd of this Xen guest (`device/vbd/<vdev>`). */
  | { kind: 'xen'; vdev: number | string; wakeup?: EvtchnWakeup | undefined }
  /** An image file served by a simulated blkback. */
  | { kind: 'image'; path: string; readOnly?: boolean | undefined; vdev?: number | undefined }
  /** A memory disk served by a simulated blkback. */
  | { kind: 'ramdisk'; size: number };

export interface OpenedDisk {
  device: BlockDevice;
  platform: XenPlatform;
  /** The simulated host and its backend, when the disk is simulated. */
  sim: { host: SimHost; disk: SimBlkback } | null;
  /** Closes the device, then the host or platform. */
  close(): Promise<void>;
}

/** Opens the disk `spec` names; `guestName` names the simulated guest. */
export async function openDisk(
  spec: DiskSpec,
  guestName: string,
  options: Omit<BlockDeviceOptions, 'platform' | 'vdev'> = {},
): Promise<OpenedDisk> {
  let host: SimHost | null = null;
  let platform: XenPlatform | null = null;
  try {
    if (spec.kind === 'xen') {
      platform = await openXenPlatform({ evtchnWakeup: spec.wakeup });
      const p = platform;
      const device = await openBlockDevice({ ...options, platform: p, vdev: spec.vdev });
      return { device, platform: p, sim: null, close: () => closeBoth(device, () => p.close()) };
    }
    host = await createSimHost({ guestName });
    const h = host;
    const disk = await h.addDisk(
      spec.kind === 'ramdisk' ? { size: spec.size } : { image: spec.path, readOnly: spec.readOnly, vdev: spec.vdev },
    );
    const device = await openBlockDevice({ ...options, platform: h.guest, vdev: disk.vdev });
    return { device, platform: h.guest, sim: { host: h, disk }, close: () => closeBoth(device, () => h.close()) };
  } catch (err) {
    await host?.close().catch(() => undefined);
    await platform?.close().catch(() => undefined);
    throw err;
  }
}

async function closeBoth(device: BlockDevice, then: () => Promise<void>): Promise<void> {
  try {
    await device.close();
  } finally {
    await then();
  }
}
