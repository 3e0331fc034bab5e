/**
 * The xenstore vocabulary of a virtual block device, for both ends
 * (blkif.h "Feature and Parameter Negotiation", xenbus conventions): where
 * each end's directory is, and the name of every key either end writes.
 * Pure names; no I/O.
 */

/** The frontend's directory: `/local/domain/<frontend>/device/vbd/<vdev>`; without `vdev`, the list of them. */
export function vbdFrontendDir(frontendDomid: number, vdev?: number | string): string {
  const dir = `/local/domain/${frontendDomid}/device/vbd`;
  return vdev === undefined ? dir : `${dir}/${vdev}`;
}

/** The backend's directory: `/local/domain/<backend>/backend/vbd/<frontend>/<vdev>`. */
export function vbdBackendDir(backendDomid: number, frontendDomid: number, vdev: number | string): string {
  return `/local/domain/${backendDomid}/backend/vbd/${frontendDomid}/${vdev}`;
}

/** Keys, as blkif.h and the xenbus conventions name them. */
export const BlkifKey = {
  // Both ends.
  state: 'state',
  // The toolstack, in the frontend's directory.
  backend: 'backend',
  backendId: 'backend-id',
  virtualDevice: 'virtual-device',
  /** 0: the backend's domain is not trusted with the guest's memory (XSA-403). */
  trusted: 'trusted',
  // The frontend.
  ringRef: 'ring-ref',
  ringPageOrder: 'ring-page-order',
  eventChannel: 'event-channel',
  protocol: 'protocol',
  multiQueueNumQueues: 'multi-queue-num-queues',
  featurePersistent: 'feature-persistent',
  // The backend: offers before InitWait.
  maxRingPageOrder: 'max-ring-page-order',
  multiQueueMaxQueues: 'multi-queue-max-queues',
  featureMaxIndirectSegments: 'feature-max-indirect-segments',
  // The backend: the disk, before Connected.
  sectors: 'sectors',
  info: 'info',
  sectorSize: 'sector-size',
  physicalSectorSize: 'physical-sector-size',
  featureFlushCache: 'feature-flush-cache',
  featureBarrier: 'feature-barrier',
  featureDiscard: 'feature-discard',
  discardGranularity: 'discard-granularity',
  discardAlignment: 'discard-alignment',
  discardSecure: 'discard-secure',
  // The toolstack, in the backend's directory.
  frontend: 'frontend',
  frontendId: 'frontend-id',
  mode: 'mode',
  deviceType: 'device-type',
} as const;

/** `ring-ref<i>` of a multi-page ring. */
export const ringRefKey = (i: number): string => `${BlkifKey.ringRef}${i}`;

/** `queue-<q>`, a queue's directory under the frontend's. */
export const queueDir = (q: number): string => `queue-${q}`;
