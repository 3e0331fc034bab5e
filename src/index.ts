/**
 * xen-blkfront: a Xen block frontend for Node.js.
 *
 * This is the package's public surface; everything not exported here is
 * internal. The simulated Xen host is exported separately as `xen-blkfront/sim`.
 */
export {
  XenError,
  XenstoreError,
  PlatformError,
  GrantError,
  BlkifError,
  PartitionError,
  FsError,
  isXenError,
  XS_ERRNO_NAMES,
} from './errors.js';
export type {
  XenErrorCode,
  XenstoreErrorCode,
  PlatformErrorCode,
  BlkifErrorCode,
  PartitionErrorCode,
  FsErrorCode,
  XsErrno,
} from './errors.js';

export { openBlockDevice, BlockDevice } from './blkfront/device.js';
export type { BlockDeviceEvents, BlockDeviceOptions, BlockDeviceStats } from './blkfront/options.js';
export type { BlockDeviceInfo, NegotiatedFeatures, TakeOver } from './blkfront/types.js';
export { openThreadedDevice, ThreadedDevice } from './blkfront/threaded.js';
export type { ThreadedDeviceOptions, ThreadedDeviceEvents, ThreadedDeviceStats, QueueThreadStats } from './blkfront/threaded.js';
export { QueueThread } from './blkfront/queue_thread.js';
export { listBlockDevices, watchBlockDevices, BlockDeviceWatcher, vdevName } from './blkfront/enumerate.js';
export type { BlockDeviceSummary, BlockDeviceEvent } from './blkfront/enumerate.js';

export type { BlockTarget } from './blkfront/target.js';
export { createReadStream, createWriteStream, readChunks } from './disk/stream.js';
export type { BlockReadStreamOptions, BlockWriteStreamOptions } from './disk/stream.js';
export { readPartitionTable, openPartition, Partition } from './disk/partitions.js';
export type { PartitionTable, PartitionEntry } from './disk/partitions.js';
export { mountExt, ExtFileSystem } from './fs/ext.js';
export type { MountOptions } from './fs/ext.js';
export { probeExt } from './fs/superblock.js';
export type { FsUsage } from './fs/superblock.js';
export type { FileStat, DirEntry } from './fs/types.js';
export type { AdapterOptions, AdapterStats } from './fs/adapter.js';

export { XenstoreClient } from './xenbus/client.js';
export { Transaction } from './xenbus/transaction.js';
export type { XsClientPort } from './xenbus/types.js';
export { Watch, WatchIterator } from './xenbus/watch.js';
export type {
  WatchEvent,
  WatchCallback,
  WatchOptions,
  XenstoreClientOptions,
  XenstoreClientStats,
  TransactionOptions,
} from './xenbus/client.js';
export { XsOps } from './xenbus/ops.js';
export type { RequestOptions } from './xenbus/ops.js';
export { switchState, readState, waitForState } from './xenbus/device.js';
export type { WaitForStateOptions } from './xenbus/device.js';

export type { ByteStream, ByteStreamHandlers } from './transport/byte_stream.js';
export { connectUnixSocket, DEFAULT_XENSTORED_SOCKET } from './transport/socket.js';
export type { SocketByteStream } from './transport/socket.js';
export { openXenbusDevice, DEFAULT_XENBUS_DEVICE, DEFAULT_XENBUS_FILES } from './transport/xenbus_device.js';
export type { XenbusDeviceStream, XenbusDeviceOptions } from './transport/xenbus_device.js';
export type { MessageStream, MessageStreamHandlers, OutgoingMessage } from './transport/message_stream.js';
export type { XsMessage } from './wire/xs_wire.js';

export { XenbusState, xenbusStateName } from './wire/xenbus_state.js';
export type { XsPerm, XsPermLetter } from './wire/xs_perms.js';
export { XsRingStream } from './transport/xs_ring.js';
export type { XsRingSide, XsRingStats } from './transport/xs_ring.js';

export type { XenPlatform, ThreadShare, ThreadPlatformSpec } from './platform/types.js';
export { openXenPlatform } from './platform/xen.js';
export type { XenPlatformOptions } from './platform/xen.js';
export type { EvtchnLib, EvtchnWakeup } from './evtchn/xenevtchn.js';
export type { GntshrLib } from './gnttab/gntshr.js';
export type { VbdOwner, VbdClaim, VbdOwnership } from './platform/ownership.js';
export { HostVbdOwnership, DEFAULT_VBD_LOCK_DIR, DEFAULT_XEN_SYSFS } from './platform/vbd_lock.js';
export type { HostVbdOwnershipOptions } from './platform/vbd_lock.js';
export { PAGE_SIZE } from './wire/page.js';
export type { GrantSharer, SharedPages, GrantSharerStats } from './gnttab/types.js';
export { GrantPool } from './gnttab/pool.js';
export type { GrantPoolOptions, GrantPoolStats, GrantLease } from './gnttab/pool.js';
export type { EventChannel, EventChannels, EventChannelStats } from './evtchn/types.js';
