/**
 * What the simulated blkback writes to xenstore, as xen-blkback's xenbus.c
 * does: its offers before InitWait, the disk's geometry and features before
 * Connected, and any keys a test asks for as they are.
 */
import { BlkifKey, queueDir, ringRefKey } from '../../wire/blkif_keys.js';
import { BLKIF_NATIVE_ABI, BLKIF_SECTOR_SIZE, VDISK_READONLY } from '../../wire/blkif.js';
import type { XenstoreClient } from '../../xenbus/client.js';

/** The backend's settings as it writes them. */
export interface BackendSettings {
  readOnly: boolean;
  sectorSize: number;
  persistent: boolean;
  maxIndirectSegments: number;
  maxRingPageOrder: number;
  maxQueues: number;
  flush: boolean;
  barrier: boolean;
  discard: { granularity: number; alignment: number; secure: boolean } | null;
  keys: Readonly<Record<string, string>>;
}

/** The offers a backend writes before InitWait (blkback's xen_blkbk_probe); what it does not offer is removed. */
export async function writeOffers(xs: XenstoreClient, be: string, o: BackendSettings): Promise<void> {
  await xs.transaction(async (tx) => {
    const put = async (key: string, value: number, offered: boolean): Promise<void> => {
      if (offered) await tx.write(`${be}/${key}`, String(value));
      else await tx.rm(`${be}/${key}`).catch(() => undefined);
    };
    await put('feature-max-indirect-segments', o.maxIndirectSegments, o.maxIndirectSegments > 0);
    await put('max-ring-page-order', o.maxRingPageOrder, o.maxRingPageOrder > 0);
    await put('multi-queue-max-queues', o.maxQueues, o.maxQueues > 1);
    await tx.write(`${be}/${BlkifKey.featurePersistent}`, o.persistent ? '1' : '0');
  });
}

/** The geometry and features written before Connected (blkback's connect), then the test's own keys. */
export async function writeDisk(xs: XenstoreClient, be: string, o: BackendSettings, bytes: number, persistent: boolean): Promise<void> {
  await xs.transaction(async (tx) => {
    await tx.write(`${be}/${BlkifKey.sectors}`, String(bytes / BLKIF_SECTOR_SIZE));
    await tx.write(`${be}/${BlkifKey.info}`, String(o.readOnly ? VDISK_READONLY : 0));
    await tx.write(`${be}/${BlkifKey.sectorSize}`, String(o.sectorSize));
    await tx.write(`${be}/${BlkifKey.physicalSectorSize}`, String(o.sectorSize));
    await tx.write(`${be}/${BlkifKey.featureFlushCache}`, o.flush ? '1' : '0');
    await tx.write(`${be}/${BlkifKey.featureBarrier}`, o.barrier ? '1' : '0');
    await tx.write(`${be}/${BlkifKey.featurePersistent}`, persistent ? '1' : '0');
    if (o.maxIndirectSegments > 0) await tx.write(`${be}/${BlkifKey.featureMaxIndirectSegments}`, String(o.maxIndirectSegments));
    else await tx.rm(`${be}/${BlkifKey.featureMaxIndirectSegments}`).catch(() => undefined);
    await tx.write(`${be}/${BlkifKey.featureDiscard}`, o.discard !== null ? '1' : '0');
    if (o.discard !== null) {
      await tx.write(`${be}/${BlkifKey.discardGranularity}`, String(o.discard.granularity));
      await tx.write(`${be}/${BlkifKey.discardAlignment}`, String(o.discard.alignment));
      await tx.write(`${be}/${BlkifKey.discardSecure}`, o.discard.secure ? '1' : '0');
    }
    for (const [key, value] of Object.entries(o.keys)) await tx.write(`${be}/${key}`, value);
  });
}

/** What the frontend published for a connection (blkback's connect_ring), or why it cannot be served. */
export async function readFrontend(
  xs: XenstoreClient,
  fe: string,
  o: Pick<BackendSettings, 'maxRingPageOrder' | 'maxQueues'>,
): Promise<{ queues: Array<{ refs: number[]; port: number }>; protocol: string; persistent: boolean } | string> {
  const order = await xs.readInt(`${fe}/${BlkifKey.ringPageOrder}`, { fallback: 0 });
  const nq = await xs.readInt(`${fe}/${BlkifKey.multiQueueNumQueues}`, { fallback: 1 });
  const protocol = (await xs.readOptional(`${fe}/${BlkifKey.protocol}`)) ?? BLKIF_NATIVE_ABI.protocol;
  const persistent = await xs.readBool(`${fe}/${BlkifKey.featurePersistent}`, { fallback: false });
  if (order > o.maxRingPageOrder) return `ring-page-order ${order} > ${o.maxRingPageOrder}`;
  if (nq < 1 || nq > Math.max(1, o.maxQueues)) return `multi-queue-num-queues ${nq} > ${o.maxQueues}`;
  const queues: Array<{ refs: number[]; port: number }> = [];
  for (let q = 0; q < nq; q++) {
    const dir = nq === 1 ? fe : `${fe}/${queueDir(q)}`;
    const refs: number[] = [];
    if (order === 0) refs.push(await xs.readInt(`${dir}/${BlkifKey.ringRef}`));
    else for (let i = 0; i < 1 << order; i++) refs.push(await xs.readInt(`${dir}/${ringRefKey(i)}`));
    queues.push({ refs, port: await xs.readInt(`${dir}/${BlkifKey.eventChannel}`) });
  }
  return { queues, protocol, persistent };
}
